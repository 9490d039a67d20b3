"""A command line that starts at once: help and version load no numeric or Ray library.

``python -X importtime`` lists every module a process imports (one line each, on
stderr), so these tests read what a real ``python -m gradsweep`` loaded rather
than timing it: timings on a shared machine are noise, imports are not.
"""

import os
import re
import subprocess
import sys

import pytest

#: Libraries that cost tenths of a second to import and are needed only by some commands.
HEAVY = ("pandas", "pyarrow", "ray", "numpy", "scipy", "duckdb", "plotly", "torch")
#: What a help page does not need either: rich (typer's boxes) and pydantic (typer's
#: coercion of values, built only when a value is given).
NOT_FOR_HELP = (*HEAVY, "rich", "pydantic")
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", re.MULTILINE)


def imported(*argv: str) -> set[str]:
    """Top-level packages a ``python -m gradsweep ARGV`` process imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "gradsweep", *argv],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {name.split(".")[0] for name in IMPORTED.findall(proc.stderr)}


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["--version"], ["run", "--help"],
                                  ["results", "show", "--help"]], ids=" ".join)
def test_help_and_version_import_nothing_heavy(argv):
    loaded = imported(*argv)
    assert "typer" in loaded  # the probe works
    assert not loaded & set(NOT_FOR_HELP), loaded & set(NOT_FOR_HELP)


def test_list_reads_the_kernels_without_numpy_or_a_table_library():
    loaded = imported("list")
    assert "rich" in loaded and "gradsweep" in loaded  # the probe works: list printed a table
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert "pydantic" not in loaded


def test_a_kernel_module_imports_numpy_when_it_first_computes():
    code = ("import sys\n"
            "from gradsweep.impls import registry\n"
            "kernel = registry.load().kernel('rnn')\n"
            "assert 'numpy._core' not in sys.modules  # numpy bound lazily, not loaded\n"
            "case = kernel.make_case(kernel.full_shape({}), 'float64', 0, 1.0, 5.0)\n"
            "import numpy\n"
            "from gradsweep.impls import base, rnn\n"
            "assert base.np is numpy and rnn.np is numpy, (base.np, rnn.np)\n"
            "assert isinstance(case.X, numpy.ndarray)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_command_line_gives_arrow_the_system_allocator_unless_told(monkeypatch):
    """mimalloc keeps what a burst of Arrow work freed; a value the user set wins."""
    from gradsweep.cli import app

    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "")  # the test's end restores the real one
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL")
    assert app.main(["--version"]) == 0
    assert os.environ["ARROW_DEFAULT_MEMORY_POOL"] == app.ARROW_POOL == "system"
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    assert app.main(["--version"]) == 0
    assert os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "jemalloc"
    code = ("from gradsweep.cli.app import main; main(['--version']); import pyarrow as pa; "
            "print(pa.default_memory_pool().backend_name)")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.stdout.split()[-1] == "system", proc.stderr[-1000:]
