"""Run a sweep's cells on Ray (embedded or a cluster) or in-process.

The flow: expand the spec, write a ``started`` event, hand the cells to an
executor that yields results in completion order, store them in batches, write
the final event. A killed driver leaves every stored cell; ``resume`` reruns the
cells of a sweep that are not ``ok``.
"""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bench import env
from bench.errors import BadInput
from bench.spec import Cell, Expansion, MeasureSettings, SweepSpec, expand
from bench.worker import CellResult, run_cell, skeleton
from impls.registry import load

if TYPE_CHECKING:  # pandas and pyarrow stay out of the workers, whose gc.collect they slow
    from bench import store

#: Rows buffered before a file is written, and the longest wait between files.
BATCH_ROWS = 200
BATCH_SECONDS = 5.0
#: Statuses that count as a failed cell (exit code 1).
FAILED = ("incorrect", "error", "crashed", "timeout")
BYTES_PER_MB = 1024 * 1024


def new_sweep_id(now: datetime | None = None) -> str:
    """UTC time plus a random suffix, e.g. ``20261122T210500Z-3f9a``."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


@dataclass
class BatchWriter:
    """Buffers results and writes them as whole files every few seconds or rows."""

    dataset: store.Dataset
    sweep_id: str
    max_rows: int = BATCH_ROWS
    max_seconds: float = BATCH_SECONDS
    _rows: list[dict] = field(default_factory=list)
    _last: float = field(default_factory=time.monotonic)

    def add(self, result: CellResult) -> None:
        """Buffer one result; write a file when the batch is full or old."""
        self._rows.append(result.row())
        if len(self._rows) >= self.max_rows or time.monotonic() - self._last > self.max_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one file (nothing when empty)."""
        if self._rows:
            from bench import store

            store.write(self.dataset, "cells", self.sweep_id, self._rows)
        self._rows, self._last = [], time.monotonic()


@dataclass(frozen=True)
class SweepOutcome:
    """What a finished (or interrupted) sweep did."""

    sweep_id: str
    status: str
    counts: dict[str, int]
    dropped: int = 0
    wall_s: float = 0.0
    task_s: float = 0.0
    workers: int = 1
    profile_errors: tuple[str, ...] = ()

    @property
    def failed(self) -> int:
        """Cells whose status counts as a failure."""
        return sum(self.counts.get(s, 0) for s in FAILED)

    @property
    def cells(self) -> int:
        """Results stored by this run (skipped cells included)."""
        return sum(self.counts.values())

    def overhead_s_per_cell(self) -> float | None:
        """Harness time per cell: worker-seconds of wall time not spent inside a cell.

        ``(wall_s * workers - task_s) / cells``: scheduling, transfer and
        storing, spread over the cells (idle workers at the tail count too).
        """
        return (self.wall_s * self.workers - self.task_s) / self.cells if self.cells else None


def over_budget(cells: Iterable[Cell], settings: MeasureSettings, plugins: tuple[str, ...]):
    """Split cells into those within ``memory_budget_mb`` and skipped results."""
    registry = load(plugins)
    budget = settings.memory_budget_mb * BYTES_PER_MB
    keep, skipped = [], []
    for cell in cells:
        need = registry.kernel(cell.kernel).memory_estimate(cell.dims, cell.dtype)
        if need > budget:
            skipped.append(skeleton(cell, "skipped", f"estimated {need / BYTES_PER_MB:.0f} MB "
                                    f"exceeds memory_budget_mb {settings.memory_budget_mb:g}"))
        else:
            keep.append(cell)
    return keep, skipped


def sweep_event(dataset: store.Dataset, spec: SweepSpec, sweep_id: str, event: str,
                status: str, cells_total: int, role: str = "plain",
                ci_run: str | None = None) -> None:
    """Append one event row to ``sweeps`` (the latest row per sweep wins)."""
    from bench import store

    machine = env.collect()
    store.write(dataset, "sweeps", sweep_id, [{
        "name": spec.name, "event": event, "status": status, "at": datetime.now(UTC),
        "role": role, "ci_run": ci_run, "spec": spec.text, "spec_hash": spec.spec_hash,
        "spec_path": spec.path, "cells_total": cells_total, "git_commit": machine.git_commit,
        "git_dirty": machine.git_dirty, "host": machine.host}])


#: Retries of a cell whose worker process died, before it is recorded ``crashed``.
CRASH_RETRIES = 2
#: Out-of-memory retries Ray may make (its default is unbounded).
OOM_RETRIES = "1"
#: Seconds between checks for timed-out cells while waiting on Ray.
WAIT_POLL_S = 1.0
#: Seconds past ``timeout_s`` before the driver kills a task whose own alarm did not fire
#: (a hang inside C code, or a slow worker start).
HANG_GRACE_S = 30.0
#: Address space a cell may take above its process's baseline, beyond memory_budget_mb
#: (shared libraries a cell loads, allocator arenas, thread stacks).
GUARD_MARGIN_MB = 1024
#: Seconds each warm-up task holds its worker, so the warm-ups land on distinct workers.
WARM_HOLD_S = 0.3
LOOPBACK = "127.0.0.1"
#: Set by the Ray Jobs supervisor in a job's driver process.
JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
#: Ray's token sources, in Ray's order: the token itself, a file, the default file.
TOKEN_ENV, TOKEN_PATH_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
DEFAULT_TOKEN_PATH = Path("~/.ray/auth_token")
AUTH_MODE_ENV = "RAY_AUTH_MODE"


def probe_node() -> dict:
    """This node's record for the ``nodes`` table, GEMM peaks at 1 BLAS thread."""
    from bench import measure

    machine = env.collect()
    with measure.set_threads(1):
        peaks = {d: env.gemm_peak_gflops(d) for d in ("float32", "float64")}
    return {"node": env.ray_node_id() or machine.host, "host": machine.host,
            "cpu": machine.cpu, "cores": machine.cores, "blas": machine.blas,
            "gemm_gflops_float32": peaks["float32"], "gemm_gflops_float64": peaks["float64"]}


def peaks_of(nodes: list[dict]) -> dict[str, dict[str, float]]:
    """``{node: {dtype: GFLOP/s}}`` from node records."""
    return {n["node"]: {d: n[f"gemm_gflops_{d}"] for d in ("float32", "float64")}
            for n in nodes}


class CellTimeout(BaseException):  # noqa: N818 - not an Exception: run_cell must not catch it
    """Raised in the cell's process by SIGALRM when ``timeout_s`` has passed."""


@contextmanager
def deadline(seconds: float) -> Iterator[bool]:
    """Raise :class:`CellTimeout` in this thread after ``seconds`` (main thread only).

    Yields whether the deadline is armed: signals reach only the main thread,
    which is where Ray runs a task and where ``--local`` runs cells.
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return

    def fire(signum, frame):
        raise CellTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _vm_bytes() -> int | None:
    """This process's virtual size (``VmSize``), None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@contextmanager
def memory_guard(budget_mb: float) -> Iterator[int | None]:
    """Cap this process's address space at its size now + budget + margin.

    An allocation past the cap raises ``MemoryError`` (a catchable ``error``
    row) instead of waking the kernel's or Ray's OOM killer, whose kills Ray
    retries. Yields the limit in bytes (None when no limit could be set).
    """
    import resource

    base = _vm_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if base is None:
        yield None
        return
    limit = base + int((budget_mb + GUARD_MARGIN_MB) * BYTES_PER_MB)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY and soft <= limit:
        yield soft
        return
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _placed(result: CellResult, started: datetime, t0: float) -> CellResult:
    """``result`` with where and when it ran (for rows made outside ``run_cell``)."""
    machine = env.collect()
    return replace(result, node=env.ray_node_id() or machine.host, host=machine.host,
                   cpu=machine.cpu, cores=machine.cores, started_at=started,
                   duration_s=time.perf_counter() - t0)


_FROZEN = []


def freeze_imports() -> None:
    """Once per process: move every object alive now out of the collector's reach.

    Each cell starts with ``gc.collect()``; in a Ray worker that walks Ray's,
    numpy's and the plugins' ~100k long-lived objects (tens of ms per cell).
    ``gc.freeze`` leaves them out; whatever a cell creates is still collected.
    """
    if not _FROZEN:
        import gc

        gc.collect()
        gc.freeze()
        _FROZEN.append(True)


def warm_worker(plugins: tuple[str, ...], hold_s: float = WARM_HOLD_S) -> None:
    """A Ray worker's start: import the plugins, freeze, hold the worker ``hold_s``."""
    try:
        load(plugins)
    except Exception:  # noqa: BLE001 - the cells report it
        pass
    freeze_imports()
    time.sleep(hold_s)


def run_on_node(cell: Cell, settings: MeasureSettings, plugins: tuple[str, ...],
                peaks: dict[str, dict[str, float]]) -> CellResult:
    """Run a cell wherever it landed, with that node's GEMM peaks, under its guards.

    The cell's ``timeout_s`` is an alarm in its own process and its memory is
    capped (:func:`memory_guard`); both end as rows, never as a raise.
    """
    try:
        load(plugins)  # import the plugins before freezing
    except Exception:  # noqa: BLE001 - run_cell reports it as the cell's error
        pass
    freeze_imports()
    node = env.ray_node_id() or env.collect().host
    started, t0 = datetime.now(UTC), time.perf_counter()
    try:
        with memory_guard(settings.memory_budget_mb), deadline(settings.timeout_s):
            return run_cell(cell, settings, plugins, peaks.get(node))
    except CellTimeout:
        text = f"cell exceeded timeout_s {settings.timeout_s:g}"
        return _placed(skeleton(cell, "timeout", text), started, t0)


class LocalExecutor:
    """Runs every cell in this process, one after another (``--local``).

    ``timeout_s`` is enforced by an alarm between Python bytecodes: a cell
    stuck inside one C call (a huge GEMM) is only stopped when the call returns.
    """

    workers = 1

    def nodes(self) -> list[dict]:
        """One record: this process's machine."""
        return [probe_node()]

    def run(self, cells: list[Cell], settings: MeasureSettings, plugins: tuple[str, ...],
            peaks: dict[str, dict[str, float]]) -> Iterator[CellResult]:
        """Yield each cell's result as it finishes."""
        for cell in cells:
            yield run_on_node(cell, settings, plugins, peaks)

    def profile(self, cells: list[Cell], settings: MeasureSettings,
                plugins: tuple[str, ...]) -> Iterator:
        """Yield ``(cell, SweepProfile)`` for each cell, one after another."""
        from bench.profile import profile_for_sweep

        for cell in cells:
            yield cell, profile_for_sweep(cell, settings, plugins)

    def close(self) -> None:
        """Nothing to release."""


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


def shipped_modules(plugins: tuple[str, ...]) -> list[str]:
    """Local paths for ``py_modules``: bench, impls and each plugin's top module.

    Ray ships a directory (a package) or a single ``.py`` file alike.
    """
    import bench
    import impls

    own = [os.path.dirname(bench.__file__), os.path.dirname(impls.__file__)]
    return list(dict.fromkeys([*own, *_plugin_paths(plugins)[1]]))


def in_ray_job() -> bool:
    """Whether this process is a Ray job's driver (``gradsweep submit``)."""
    return JOB_ENV in os.environ


def auth_token() -> str | None:
    """The Ray token this client would send: $RAY_AUTH_TOKEN, its path, ~/.ray/auth_token."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    path = Path(os.environ.get(TOKEN_PATH_ENV) or DEFAULT_TOKEN_PATH).expanduser()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def enable_token_auth() -> bool:
    """Turn on Ray token authentication for this process when a token exists.

    Ray 2.60 enables it on its own only for a cluster it finds locally; an
    explicit address needs ``RAY_AUTH_MODE=token`` before ``ray.init``. An
    explicit ``RAY_AUTH_MODE`` is left alone. Returns whether it is on.
    """
    mode = os.environ.get(AUTH_MODE_ENV)
    if mode is not None:
        return mode.lower() == "token"
    if auth_token() is None:
        return False
    os.environ[AUTH_MODE_ENV] = "token"
    ray = sys.modules.get("ray")
    if ray is not None and not ray.is_initialized():
        from ray._raylet import Config  # refresh Ray's cached mode, as Ray itself does

        Config.initialize("")
    return True


def ray_init_kwargs(address: str | None, plugins: tuple[str, ...], workers: int | None) -> dict:
    """``ray.init`` arguments: inside a job, a cluster with our code shipped, or embedded."""
    from bench.measure import MALLOC_ENV

    # workers start with fixed malloc thresholds: no per-process allocation history bias
    env_vars = {"RAY_USAGE_STATS_ENABLED": "0", **MALLOC_ENV}
    quiet = {"logging_level": "WARNING", "log_to_driver": True}
    if in_ray_job():  # the job's runtime env already carries the tree and the plugins
        return quiet
    if address:
        return {"address": address, **quiet, "runtime_env": {
            "py_modules": shipped_modules(plugins), "env_vars": env_vars,
            "excludes": ["__pycache__", "*.pyc"]}}
    import bench

    roots, _ = _plugin_paths(plugins)
    here = os.path.dirname(os.path.dirname(os.path.abspath(bench.__file__)))
    env_vars["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([here, *roots, *sys.path[1:]]))
    return {"address": "local", "_node_ip_address": LOOPBACK, "include_dashboard": False,
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

    def nodes(self) -> list[dict]:
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

        from bench.profile import profile_for_sweep

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


def resume_plan(dataset: store.Dataset, spec: SweepSpec, sweep: str,
                cells: tuple[Cell, ...]) -> tuple[str, list[Cell]]:
    """The sweep to resume and its cells that are not ``ok``.

    Raises
    ------
    BadInput
        When the sweep is unknown or was run from a different spec.
    """
    from bench import store

    sweep_id = store.resolve_sweep(dataset, sweep)
    row = store.sweeps(dataset).set_index(store.PARTITION).loc[sweep_id]
    if row["spec_hash"] != spec.spec_hash:
        raise BadInput(f"sweep {sweep_id} was run from a different spec "
                       f"(hash {str(row['spec_hash'])[:12]} != {spec.spec_hash[:12]}); "
                       "resume needs the same spec", where=spec.path)
    stored = store.read(dataset, "cells", [sweep_id], columns=["cell_id", "status"])
    ok = set(stored.loc[stored["status"] == "ok", "cell_id"])
    return sweep_id, [c for c in cells if c.cell_id not in ok]


def profile_phase(executor, cells: list[Cell], spec: SweepSpec, dataset: store.Dataset,
                  sweep_id: str) -> list[str]:
    """Line-profile the ok cells the spec asks for; store rows, return errors.

    Runs after the timing loop has drained: profiling never changes a timing.
    """
    from bench import profile, store

    todo = [c for c in cells if profile.wants_profile(c, spec.measure)]
    if not todo:
        return []
    errors = []
    for cell, result in executor.profile(todo, spec.measure, spec.plugins):
        if result.rows:
            store.write(dataset, "profiles", sweep_id, list(result.rows))
        if result.error:
            errors.append(f"{cell.variant} {cell.shape_text} {cell.dtype}: {result.error}")
    return errors


def run_sweep(spec: SweepSpec, dataset: store.Dataset, executor, *, resume: str | None = None,
              on_start: Callable[[str, int], None] = lambda sweep_id, n: None,
              on_result: Callable[[CellResult], None] = lambda result: None,
              expansion: Expansion | None = None) -> SweepOutcome:
    """Run (or resume) a sweep of ``spec`` into ``dataset`` with ``executor``.

    ``on_start(sweep_id, cells)`` is called before any cell runs, and
    ``on_result`` for every result as it is stored in a batch.
    """
    from bench import store

    expansion = expansion or expand(spec)
    if resume:
        sweep_id, cells = resume_plan(dataset, spec, resume, expansion.cells)
    else:
        sweep_id, cells = new_sweep_id(), list(expansion.cells)
    total = len(expansion.cells)
    sweep_event(dataset, spec, sweep_id, "resumed" if resume else "started", "running", total)
    on_start(sweep_id, len(cells))
    writer = BatchWriter(dataset, sweep_id)
    counts: dict[str, int] = {}
    status, t0, task_s = "failed", time.perf_counter(), 0.0
    try:
        runnable, skipped = over_budget(cells, spec.measure, spec.plugins)
        nodes = executor.nodes()
        store.write(dataset, "nodes", sweep_id, nodes)
        t0 = time.perf_counter()
        results = executor.run(runnable, spec.measure, spec.plugins, peaks_of(nodes))
        ok: list[Cell] = []
        by_id = {c.cell_id: c for c in runnable}
        for result in itertools.chain(skipped, results):
            writer.add(result)
            counts[result.status] = counts.get(result.status, 0) + 1
            task_s += result.duration_s or 0.0
            if result.status == "ok" and result.cell_id in by_id:
                ok.append(by_id[result.cell_id])
            on_result(result)
        writer.flush()
        wall_s = time.perf_counter() - t0
        profile_errors = profile_phase(executor, ok, spec, dataset, sweep_id)
        status = "finished"
    except KeyboardInterrupt:
        status = "cancelled"
        raise
    finally:
        writer.flush()
        sweep_event(dataset, spec, sweep_id, status, status, total)
    store.compact(dataset, sweep_id)  # a finished sweep reads as one file per table
    return SweepOutcome(sweep_id, status, counts, len(expansion.dropped),
                        wall_s=wall_s, task_s=task_s,
                        workers=getattr(executor, "workers", 1),
                        profile_errors=tuple(profile_errors))
