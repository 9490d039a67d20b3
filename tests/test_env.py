"""Tests for bench.env: fields filled and typed, git state, load, Ray lookup, GEMM probe."""

import math
import shutil
import subprocess
import sys
import time

import pytest

from gradsweep import env
from gradsweep.env import Environment


def test_collect_fields_filled_and_typed():
    e = env.collect()
    assert isinstance(e, Environment)
    for name in ("host", "cpu", "blas", "numpy_version", "python_version"):
        value = getattr(e, name)
        assert isinstance(value, str) and value, name
    assert isinstance(e.cores, int) and e.cores >= 1
    assert isinstance(e.logical_cores, int) and e.logical_cores >= 1
    assert e.python_version.count(".") == 2
    assert e.openblas_coretype is None or isinstance(e.openblas_coretype, str)
    assert e.openblas_l2_size is None or isinstance(e.openblas_l2_size, str)


def test_collect_is_cached():
    assert env.collect() is env.collect()


def test_blas_names_openblas_when_numpy_uses_it():
    e = env.collect()
    import numpy as np

    if "openblas" in str(np.show_config(mode="dicts")).lower():
        assert e.blas.startswith("openblas ")


def test_openblas_env_vars_read(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "1048576")
    e = env.collect(tmp_path)  # a new path: not served from the cache
    assert e.openblas_coretype == "Haswell"
    assert e.openblas_l2_size == "1048576"


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@needs_git
def test_git_state_on_temp_repo(tmp_path):
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.com")
    git(tmp_path, "config", "user.name", "t")
    git(tmp_path, "config", "commit.gpgsign", "false")
    (tmp_path / "a.txt").write_text("one\n")
    git(tmp_path, "add", "a.txt")
    git(tmp_path, "commit", "-q", "-m", "first")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert env.git_state(tmp_path) == (head, False)
    (tmp_path / "untracked.txt").write_text("x\n")
    assert env.git_state(tmp_path) == (head, False)  # untracked files do not count
    (tmp_path / "a.txt").write_text("two\n")
    assert env.git_state(tmp_path) == (head, True)
    sub = tmp_path / "sub"
    sub.mkdir()
    e = env.collect(sub)  # any directory inside the repository
    assert (e.git_commit, e.git_dirty) == (head, True)


@needs_git
def test_git_state_empty_repo_and_outside(tmp_path):
    assert env.git_state(tmp_path / "nowhere") == (None, None)
    git(tmp_path, "init", "-q")
    assert env.git_state(tmp_path) == (None, None)  # no commit yet


def test_cpuinfo_parsing(tmp_path):
    info = tmp_path / "cpuinfo"
    blocks = []
    for cpu, core in [(0, 0), (1, 0), (2, 1), (3, 1)]:
        blocks.append(f"processor\t: {cpu}\nmodel name\t: Test CPU 9000\n"
                      f"physical id\t: 0\ncore id\t\t: {core}\n")
    info.write_text("\n".join(blocks))
    assert env.cpu_model(info) == "Test CPU 9000"
    assert env._cores_from_cpuinfo(info) == 2
    assert env._cores_from_cpuinfo(tmp_path / "missing") is None
    assert isinstance(env.cpu_model(tmp_path / "missing"), str)


def test_load_avg_is_float():
    value = env.load_avg()
    assert isinstance(value, float)
    assert math.isnan(value) or value >= 0


def test_ray_node_id_without_ray(monkeypatch):
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    assert env.ray_node_id() is None
    assert "ray" not in sys.modules


def test_ray_node_id_uses_initialised_ray(monkeypatch):
    class Context:
        def get_node_id(self):
            return "abc123"

    class FakeRay:
        initialised = True

        def is_initialized(self):
            return self.initialised

        def get_runtime_context(self):
            return Context()

    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    assert env.ray_node_id() == "abc123"
    fake.initialised = False
    assert env.ray_node_id() is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gemm_probe_positive_and_quick(dtype):
    start = time.perf_counter()
    gflops = env.gemm_peak_gflops(dtype, seconds=0.05, size=32)
    assert gflops > 0 and math.isfinite(gflops)
    assert time.perf_counter() - start < 5.0  # generous: only catches a runaway loop


def test_gemm_probe_rejects_bad_input():
    with pytest.raises(ValueError, match="floating"):
        env.gemm_peak_gflops("int64", seconds=0.0, size=4)
    with pytest.raises(ValueError, match="size"):
        env.gemm_peak_gflops("float64", seconds=0.0, size=0)
