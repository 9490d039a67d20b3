"""The bad-input corpus (tests/fixtures/bad_inputs): exit 2, one line, nothing written.

``specs/*.toml`` are malformed specs, each opening with ``# expect: TEXT`` (a piece of
its one-line error); they run through the CLI's entry point in this process (a
subprocess per case would cost ~1 s of imports each), and a handful also through
the real command in a subprocess. ``args.toml`` holds bad command-line arguments:
each names the check that catches it, called directly here; its command line runs
through the CLI once the case is marked ``wired``.
"""

import importlib
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gradsweep import spec as spec_mod
from gradsweep.errors import BadInput

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).parent / "fixtures" / "bad_inputs"
SPECS = sorted((CORPUS / "specs").glob("*.toml"))
ARGS = tomllib.loads((CORPUS / "args.toml").read_text())["case"]
EXPECT = b"# expect: "
#: The CLI's package: ``python -m CLI_MODULE`` is the command, ``CLI_MODULE.cli.main``
#: its in-process entry point (the lead renames it to gradsweep).
CLI_MODULE = "gradsweep"
#: Spec cases also run through the real command, in a subprocess (the issue's own cases).
SUBPROCESS_CASES = ("dim_huge_int", "nesting_array_5000", "timeout_inf", "min_time_nan",
                    "not_utf8", "grid_kernel_with_escape")
#: Cases of issue 16 that must stay in the corpus.
ISSUE_SPECS = ("dim_huge_int", "nesting_array_5000", "timeout_inf", "timeout_nan",
               "memory_budget_inf", "min_time_nan")
ISSUE_ARGS = ("dashboard-output-is-etc-passwd", "run-results-is-a-file",
              "results-show-parquet-output-in-proc", "results-list-results-is-a-file",
              "run-address-nonsense", "run-address-nothing-listens")
GOOD_SPEC = '[[grid]]\nkernel = "rnn"\nshape = { N = 2, T = 2, D = 2, H = 2 }\n'


def cli_command(*args: str) -> list[str]:
    """The real command line (the one place that names how the CLI is started)."""
    return [sys.executable, "-m", CLI_MODULE, *args]


def run_in_process(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and everything printed (stdout then stderr) of the CLI's entry point."""
    main = importlib.import_module(f"{CLI_MODULE}.cli.app").main
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def expected(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0]
    assert first.startswith(EXPECT), f"{path.name} must open with '# expect: ...'"
    return first[len(EXPECT):].decode()


def snapshot(directory: Path) -> list[tuple[str, int, int]]:
    """Every entry under ``directory`` with its size and modification time."""
    return sorted((str(p.relative_to(directory)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in [directory, *directory.rglob("*")])


def assert_one_line_error(code: int, output: str, *names: str) -> None:
    """Exit 2, exactly one line, no traceback, no raw escape, naming every one of ``names``."""
    assert code == 2, output
    lines = output.splitlines()
    assert len(lines) == 1, output
    assert "Traceback" not in output and "\x1b" not in output
    for name in names:
        assert name in lines[0], (name, lines[0])


@pytest.fixture
def results_dir(tmp_path) -> Path:
    """A results dataset that must stay untouched: one table directory and one file."""
    path = tmp_path / "results"
    (path / "sweeps").mkdir(parents=True)
    (path / "sweeps" / "keep.txt").write_text("untouched")
    return path


def test_the_corpus_is_complete():
    names = {p.stem for p in SPECS}
    assert len(SPECS) >= 60 and set(ISSUE_SPECS) <= names
    assert set(ISSUE_ARGS) <= {c["id"] for c in ARGS}
    assert len({c["id"] for c in ARGS}) == len(ARGS)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_case(path, results_dir, capsys):
    before = snapshot(results_dir)
    code, output = run_in_process(["run", str(path), "--dry-run", "--results", str(results_dir)],
                                  capsys)
    assert_one_line_error(code, output, str(path), expected(path))
    assert snapshot(results_dir) == before


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_spec_case_through_the_real_command(name, results_dir):
    path = CORPUS / "specs" / f"{name}.toml"
    before = snapshot(results_dir)
    proc = subprocess.run(cli_command("run", str(path), "--dry-run", "--results",
                                      str(results_dir)),
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert_one_line_error(proc.returncode, proc.stdout + proc.stderr, str(path), expected(path))
    assert snapshot(results_dir) == before


# --- argument cases ----------------------------------------------------------------------------

@pytest.fixture
def places(tmp_path) -> dict[str, str]:
    """The placeholders of args.toml, made fresh in ``tmp_path``."""
    (tmp_path / "a-file.txt").write_text("not a directory")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("someone's files")
    (tmp_path / "results" / "sweeps").mkdir(parents=True)
    (tmp_path / "spec.toml").write_text(GOOD_SPEC)
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "big.toml").write_text("# filler\n" * (spec_mod.MAX_SPEC_BYTES // 9 + 1))
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return {"tmp": str(tmp_path), "file": str(tmp_path / "a-file.txt"),
            "dir": str(tmp_path / "other"), "results": str(tmp_path / "results"),
            "spec": str(tmp_path / "spec.toml"), "fifo": str(tmp_path / "pipe"),
            "big": str(tmp_path / "big.toml"), "closed": f"127.0.0.1:{port}"}


def fill(value, places: dict[str, str]):
    """``value`` with every ``{placeholder}`` of its strings filled, lists as tuples."""
    if isinstance(value, str):
        for name, text in places.items():
            value = value.replace(f"{{{name}}}", text)
        return value
    if isinstance(value, list):
        return tuple(fill(v, places) for v in value)
    if isinstance(value, dict):
        return {k: fill(v, places) for k, v in value.items()}
    return value


def check_function(dotted: str):
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(f"gradsweep.{module}"), name)


def case_names(case, places) -> str:
    return fill(case.get("names", case["args"][0]), places)


@pytest.mark.parametrize("case", ARGS, ids=lambda c: c["id"])
def test_check_catches_argument_case(case, places):
    check = check_function(case["check"])
    with pytest.raises(BadInput) as exc:
        check(*fill(case["args"], places), **fill(case.get("kwargs", {}), places))
    line = str(exc.value)
    assert "\n" not in line and "\x1b" not in line
    assert case["expect"] in line and case_names(case, places) in line, line


@pytest.mark.parametrize("case", ARGS, ids=lambda c: c["id"])
def test_cli_rejects_argument_case(case, places, capsys):
    if not case["wired"]:
        pytest.skip(f"needs CLI wiring: {case['check']} in `{' '.join(case['argv'][:2])}`")
    results = Path(places["results"])
    before = snapshot(results)
    code, output = run_in_process(list(fill(case["argv"], places)), capsys)
    assert_one_line_error(code, output, case_names(case, places), case["expect"])
    assert snapshot(results) == before
