"""The installed package: one import name, `python -m gradsweep`, no shadowing by a user's
own `bench/` folder, and only `gradsweep` in a wheel."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import gradsweep

ROOT = Path(__file__).resolve().parents[1]


def test_python_m_gradsweep_help():
    done = subprocess.run([sys.executable, "-m", "gradsweep", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "Usage" in done.stdout and "run" in done.stdout


def test_a_users_own_bench_folder_does_not_change_what_run_imports(tmp_path):
    """A folder named bench/ (and impls/) in the working directory is not imported."""
    for name in ("bench", "impls", "dashboards"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            "raise SystemExit('the user\\'s own package was imported')\n")
    spec = tmp_path / "s.toml"
    spec.write_text('[[grid]]\nkernel = "rnn"\nvariants = { buffers = ["list"], '
                    'wgrad = ["step"], clip = ["none"] }\nshape = { N = [2], T = [2], '
                    'D = [2], H = [2] }\n')
    done = subprocess.run([sys.executable, "-m", "gradsweep", "run", str(spec), "--dry-run"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "own package" not in done.stdout + done.stderr
    probe = subprocess.run([sys.executable, "-c", "import gradsweep.impls.base as b, "
                            "gradsweep.spec as s; print(b.__file__); print(s.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert str(tmp_path) not in probe.stdout


@pytest.mark.slow
def test_a_wheel_installs_only_gradsweep(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("gradsweep-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"gradsweep", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"gradsweep/impls/base.py", "gradsweep/dashboards/templates/index.html",
            "gradsweep/gate/side.py", "gradsweep/records.py"} <= names


def test_the_public_api_is_listed():
    for name in gradsweep.__all__:
        assert getattr(gradsweep, name) is not None
