"""The Ray executor: one task per cell on an embedded Ray or a cluster."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator

from gradsweep import env
from gradsweep.executors import sessions
from gradsweep.executors.auth import enable_token_auth, in_ray_job
from gradsweep.executors.node import probe_node, run_on_node, warm_worker
from gradsweep.records import Cell, CellResult, MeasureSettings, NodeProbe, skeleton

#: Retries of a cell whose worker process died, before it is recorded ``crashed``.
CRASH_RETRIES = 2
#: Out-of-memory retries Ray may make (its default is unbounded).
OOM_RETRIES = "1"
#: Seconds between checks for timed-out cells while waiting on Ray.
WAIT_POLL_S = 1.0
#: Seconds past ``timeout_s`` before the driver kills a task whose own alarm did not fire
#: (a hang inside C code, or a slow worker start).
HANG_GRACE_S = 30.0
LOOPBACK = "127.0.0.1"
#: Ray settings of the embedded node: no metrics export (its Prometheus endpoint
#: answers without the token, and the sampling costs CPU beside the measurements).
EMBEDDED_SYSTEM_CONFIG = {"enable_metrics_collection": False}


def _plugin_paths(plugins: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(sys.path roots, top-level package dirs or single module files) of plugins."""
    import importlib

    roots, shipped = [], []
    for name in plugins:
        top = importlib.import_module(name.split(".")[0])
        path = getattr(top, "__path__", [None])[0] or top.__file__
        roots.append(os.path.dirname(os.path.abspath(path)))
        shipped.append(os.path.abspath(path))
    return roots, list(dict.fromkeys(shipped))


def package_dir() -> str:
    """A directory named ``gradsweep`` holding the whole package, for ``py_modules``.

    An installed wheel already is one. A checkout maps ``gradsweep``,
    ``gradsweep.impls`` and ``gradsweep.dashboards`` onto three folders
    (``bench/``, ``impls/``, ``dashboards/``), so they are copied once per
    process into a temporary ``gradsweep/`` (removed at exit).
    """
    import gradsweep
    import gradsweep.dashboards
    import gradsweep.impls

    root = os.path.dirname(os.path.abspath(gradsweep.__file__))
    parts = {"impls": gradsweep.impls, "dashboards": gradsweep.dashboards}
    nested = all(os.path.dirname(os.path.abspath(m.__file__)) == os.path.join(root, name)
                 for name, m in parts.items())
    if nested and os.path.basename(root) == "gradsweep":
        return root
    if not _STAGED:
        staged = os.path.join(tempfile.mkdtemp(prefix="gradsweep-ship-"), "gradsweep")
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "site")
        shutil.copytree(root, staged, ignore=ignore)
        for name, module in parts.items():
            shutil.copytree(os.path.dirname(os.path.abspath(module.__file__)),
                            os.path.join(staged, name), ignore=ignore)
        atexit.register(shutil.rmtree, os.path.dirname(staged), True)
        _STAGED.append(staged)
    return _STAGED[0]


_STAGED: list[str] = []


def shipped_modules(plugins: tuple[str, ...]) -> list[str]:
    """Local paths for ``py_modules``: the ``gradsweep`` package and each plugin's top
    module (Ray ships a directory, a package, or a single ``.py`` file alike)."""
    return list(dict.fromkeys([package_dir(), *_plugin_paths(plugins)[1]]))



def ray_init_kwargs(address: str | None, plugins: tuple[str, ...], workers: int | None) -> dict:
    """``ray.init`` arguments: inside a job, a cluster with our code shipped, or embedded.

    The embedded Ray starts a fresh local node (``address="local"``: never a
    cluster found through ``ray_current_cluster``) with its session under
    gradsweep's own :func:`.sessions.temp_dir`, where :func:`.sessions.reap_orphans`
    finds what a crashed driver left. Call ``ray.init`` inside
    :func:`.sessions.embedded`, which keeps every listening socket on loopback.
    """
    from gradsweep.measure import MALLOC_ENV

    # workers start with fixed malloc thresholds: no per-process allocation history bias
    env_vars = {"RAY_USAGE_STATS_ENABLED": "0", **MALLOC_ENV}
    quiet = {"logging_level": "WARNING", "log_to_driver": True}
    if in_ray_job():  # the job's runtime env already carries the tree and the plugins
        return quiet
    if address:
        return {"address": address, **quiet, "runtime_env": {
            "py_modules": shipped_modules(plugins), "env_vars": env_vars,
            "excludes": ["__pycache__", "*.pyc"]}}
    roots, _ = _plugin_paths(plugins)
    env_vars["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*roots, *sys.path[1:]]))
    return {"address": "local", "_node_ip_address": LOOPBACK, "include_dashboard": False,
            "_temp_dir": str(sessions.temp_dir()), "_system_config": EMBEDDED_SYSTEM_CONFIG,
            "num_cpus": workers or env.collect().cores, **quiet,
            "runtime_env": {"env_vars": env_vars}}


def _failure_result(cell: Cell, exc: BaseException) -> CellResult:
    import ray.exceptions as rex

    if isinstance(exc, rex.WorkerCrashedError | rex.NodeDiedError | rex.OutOfMemoryError):
        text = f"worker died {CRASH_RETRIES + 1} times: {type(exc).__name__}: {exc}"
        return skeleton(cell, "crashed", text, attempts=CRASH_RETRIES + 1)
    if isinstance(exc, rex.TaskCancelledError):
        return skeleton(cell, "timeout", f"cancelled: {exc}")
    return skeleton(cell, "error", f"{type(exc).__name__}: {exc}")


class RayExecutor:
    """One Ray task per cell (num_cpus=1), at most ``workers`` running at once.

    Cells spread over the nodes (Ray's SPREAD), not packed onto the driver's.
    Embedded, Ray has ``workers`` CPUs and ``workers`` more cells wait queued
    in Ray (no driver round trip between cells); on a cluster exactly
    ``workers`` are in flight, whatever its size.

    Parameters
    ----------
    address : str, optional
        A cluster to join (what ``ray.init`` takes), with bench, impls and the
        plugins shipped as ``py_modules``. Default: $RAY_ADDRESS; inside a Ray
        job, that job's cluster; else an embedded Ray bound to 127.0.0.1.
    workers : int, optional
        Cells run at once; default the physical cores (embedded) or the
        cluster's CPUs.
    """

    def __init__(self, address: str | None = None, workers: int | None = None,
                 plugins: tuple[str, ...] = ()):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_task_oom_retries", OOM_RETRIES)
        address = None if in_ray_job() else address or os.environ.get("RAY_ADDRESS") or None
        if address or in_ray_job():
            enable_token_auth()
        import ray

        self._owns = not ray.is_initialized()
        if self._owns:
            ray.init(**ray_init_kwargs(address, plugins, workers))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        joined = bool(address) or in_ray_job()
        self.workers = max(1, workers or (cpus if joined else min(env.collect().cores, cpus)))
        # An embedded Ray has exactly ``workers`` CPUs, so Ray itself caps the cells
        # running at once and a queued cell starts with no round trip to this driver.
        self._queued = self.workers if self._owns and not joined else 0
        self._task = ray.remote(num_cpus=1, max_retries=CRASH_RETRIES, retry_exceptions=False,
                                scheduling_strategy="SPREAD")(run_on_node)
        self._plugins = plugins

    def nodes(self) -> list[NodeProbe]:
        """Probe every alive node once, each on its own node; then start the workers."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = ray.remote(num_cpus=1)(probe_node)
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            node_id=n["NodeID"], soft=False)).remote() for n in ray.nodes() if n["Alive"]]
        found = ray.get(refs)
        self._warm()
        return found

    def _warm(self) -> None:
        """Start ``workers`` worker processes with our modules imported, before any cell.

        Each warm-up task holds its worker a moment so that they land on
        distinct processes; a cell then pays no process start or import.
        """
        import ray

        warm = ray.remote(num_cpus=1)(warm_worker)
        ray.get([warm.remote(self._plugins) for _ in range(self.workers)])

    def run(self, cells: list[Cell], settings: MeasureSettings, plugins: tuple[str, ...],
            peaks: dict[str, dict[str, float]]) -> Iterator[CellResult]:
        """Yield results in completion order; timeouts and crashes become rows."""
        import ray

        pending = list(reversed(cells))
        running: dict = {}
        try:
            while pending or running:
                while pending and len(running) < self.workers + self._queued:
                    cell = pending.pop()
                    running[self._task.remote(cell, settings, plugins, peaks)] = (
                        cell, time.monotonic())
                done, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_POLL_S)
                for ref in done:
                    yield self._result(ref, running.pop(ref)[0])
                queued_s = settings.timeout_s if self._queued else 0.0
                yield from self._expire(running, settings.timeout_s + queued_s + HANG_GRACE_S)
        finally:
            for ref in running:  # interrupted: stop what is still running
                ray.cancel(ref, force=True)

    @staticmethod
    def _result(ref, cell: Cell) -> CellResult:
        import ray

        try:
            return ray.get(ref)
        except Exception as exc:  # the task's failure is the cell's row
            return _failure_result(cell, exc)

    def _expire(self, running: dict, limit_s: float) -> Iterator[CellResult]:
        import ray

        now = time.monotonic()
        for ref, (cell, since) in list(running.items()):
            if now - since > limit_s:
                ray.cancel(ref, force=True)
                del running[ref]
                yield skeleton(cell, "timeout", f"cell did not return within {limit_s:g} s; "
                               "its worker was killed")

    def profile(self, cells: list[Cell], settings: MeasureSettings,
                plugins: tuple[str, ...]) -> Iterator:
        """Yield ``(cell, SweepProfile)`` as profiles finish, ``workers`` at a time.

        Scalene runs as a subprocess of each task (PLATFORM.md), after every
        timing of the sweep is done, so it never disturbs a measurement.
        """
        import ray

        from gradsweep.profile import profile_for_sweep

        task = ray.remote(num_cpus=1)(profile_for_sweep)
        pending, running = list(reversed(cells)), {}
        while pending or running:
            while pending and len(running) < self.workers:
                cell = pending.pop()
                running[task.remote(cell, settings, plugins)] = cell
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                yield running.pop(ref), ray.get(ref)

    def close(self) -> None:
        """Shut down the embedded Ray (a joined cluster keeps running)."""
        import ray

        if self._owns and ray.is_initialized():
            ray.shutdown()

