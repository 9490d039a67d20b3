"""The environment recorded with every cell (DESIGN.md, Measurement), and the GEMM peak probe.

``collect`` gathers what does not change within a process (host, CPU, cores,
BLAS, versions, git state) once and caches it; ``load_avg`` and
``ray_node_id`` are read fresh for each cell. Ray is never imported here: if a
process has not imported it, Ray cannot be initialised in it.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradsweep.measure import blas_libraries, describe_blas, numpy_blas

#: Seconds the GEMM probe keeps timing (best of however many runs fit).
GEMM_SECONDS = 0.2
#: Side of the square matrices of the GEMM probe: large enough to reach peak
#: with one thread (~7 ms per float64 run at 40 GFLOP/s), small enough for cache-free repeats.
GEMM_SIZE = 512
#: The probe times at least this many runs, whatever ``seconds`` says.
GEMM_MIN_REPEATS = 3
#: Timeout for each git subprocess.
GIT_TIMEOUT_S = 10.0
#: Repository whose git state is recorded by default: the tree this module runs from.
DEFAULT_REPO = Path(__file__).resolve().parent.parent
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Environment:
    """Where and with what a cell ran.

    Attributes
    ----------
    host : str
    cpu : str
        CPU model name.
    cores : int
        Physical cores (logical count when that cannot be told).
    logical_cores : int
        Logical CPUs this process may run on (its affinity mask).
    blas : str
        numpy's BLAS, e.g. ``"openblas 0.3.31 Haswell"``; ``"none"`` when none is loaded.
    numpy_version, python_version : str
    git_commit : str or None
        HEAD of the repository; None outside git.
    git_dirty : bool or None
        Tracked files modified (untracked files do not count); None outside git.
    openblas_coretype, openblas_l2_size : str or None
        The OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE environment variables.
    """

    host: str
    cpu: str
    cores: int
    logical_cores: int
    blas: str
    numpy_version: str
    python_version: str
    git_commit: str | None
    git_dirty: bool | None
    openblas_coretype: str | None
    openblas_l2_size: str | None


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """CPU model from ``/proc/cpuinfo`` ("model name"), else ``platform.processor()``."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def logical_cores() -> int:
    """Logical CPUs usable by this process: ``os.sched_getaffinity``, else ``os.cpu_count()``."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _cores_from_cpuinfo(cpuinfo: Path) -> int | None:
    """Distinct (physical id, core id) pairs in ``/proc/cpuinfo``, or None."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    pairs = set()
    for block in text.split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "core id" in fields:
            pairs.add((fields.get("physical id", "0"), fields["core id"]))
    return len(pairs) or None


def physical_cores(cpuinfo: Path = CPUINFO) -> int:
    """Physical cores: psutil if installed, else ``/proc/cpuinfo``, else ``os.cpu_count()``."""
    try:
        import psutil

        count = psutil.cpu_count(logical=False)
        if count:
            return int(count)
    except ImportError:
        pass
    return _cores_from_cpuinfo(cpuinfo) or os.cpu_count() or 1


def _git(repo: Path, *args: str) -> str | None:
    """stdout of ``git -C repo args``, or None when git fails or is missing."""
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(repo_dir: str | os.PathLike) -> tuple[str | None, bool | None]:
    """(HEAD commit, dirty) of the git repository containing ``repo_dir``; (None, None) outside.

    Dirty means a tracked file differs from HEAD (``git status --porcelain
    --untracked-files=no`` prints something), the convention of ``git describe --dirty``.
    """
    repo = Path(repo_dir)
    head = _git(repo, "rev-parse", "--verify", "HEAD")
    if head is None:
        return None, None
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return head.strip(), (None if status is None else bool(status.strip()))


def current_blas() -> str:
    """numpy's BLAS library in this process, e.g. ``"openblas 0.3.31 Haswell"``."""
    return describe_blas(numpy_blas(blas_libraries()))


@functools.cache
def _collect(repo: str) -> Environment:
    commit, dirty = git_state(repo)
    return Environment(
        host=socket.gethostname(),
        cpu=cpu_model(),
        cores=physical_cores(),
        logical_cores=logical_cores(),
        blas=current_blas(),
        numpy_version=np.__version__,
        python_version=platform.python_version(),
        git_commit=commit,
        git_dirty=dirty,
        openblas_coretype=os.environ.get("OPENBLAS_CORETYPE"),
        openblas_l2_size=os.environ.get("OPENBLAS_L2_SIZE"),
    )


def collect(repo_dir: str | os.PathLike | None = None) -> Environment:
    """The process's :class:`Environment`, computed once per repository path and cached.

    Parameters
    ----------
    repo_dir : path or None
        Directory whose git state is recorded; defaults to :data:`DEFAULT_REPO`,
        the tree this module was imported from.

    Returns
    -------
    Environment
    """
    repo = DEFAULT_REPO if repo_dir is None else Path(repo_dir)
    return _collect(str(repo.resolve()))


def load_avg() -> float:
    """The machine's 1-minute load average (``os.getloadavg()[0]``); NaN where unavailable."""
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return float("nan")


def ray_node_id() -> str | None:
    """The Ray node id of this process when Ray is initialised in it, else None.

    Looks Ray up in ``sys.modules`` instead of importing it: a process that has
    not imported Ray has not initialised it, and importing it costs seconds.
    """
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return str(ray.get_runtime_context().get_node_id())


def _gemm_operands(dtype: str, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two random (size, size) matrices of ``dtype`` and an output buffer."""
    kind = np.dtype(dtype)
    if kind.kind not in "fc":
        raise ValueError(f"GEMM probe needs a floating dtype, got {dtype!r}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(kind)
    b = rng.standard_normal((size, size)).astype(kind)
    return a, b, np.empty((size, size), dtype=kind)


def gemm_peak_gflops(dtype: str, *, seconds: float = GEMM_SECONDS, size: int = GEMM_SIZE) -> float:
    """Peak GEMM throughput in GFLOP/s: best time of repeated square ``matmul``.

    A (size, size) @ (size, size) product costs 2 size**3 FLOPs (real dtypes);
    runs repeat for ``seconds`` (at least :data:`GEMM_MIN_REPEATS` runs) and the
    fastest one counts, the usual roofline-peak convention (Williams et al.
    2009). Callers run it under ``set_threads(1)`` to match the cells.

    Parameters
    ----------
    dtype : str
        ``"float32"`` or ``"float64"``.
    seconds : float
    size : int

    Returns
    -------
    float
        GFLOP/s, > 0.
    """
    a, b, out = _gemm_operands(dtype, size)
    np.matmul(a, b, out=out)  # first touch of out and BLAS buffers, untimed
    best = None
    deadline = time.perf_counter() + seconds
    runs = 0
    while runs < GEMM_MIN_REPEATS or time.perf_counter() < deadline:
        start = time.perf_counter_ns()
        np.matmul(a, b, out=out)
        elapsed = max(time.perf_counter_ns() - start, 1)
        best = elapsed if best is None else min(best, elapsed)
        runs += 1
    return 2.0 * size**3 / best
