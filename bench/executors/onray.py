"""The Ray executor: one task per cell on an embedded Ray or a cluster."""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from gradsweep import env
from gradsweep.executors import sessions
from gradsweep.executors.auth import enable_token_auth, in_ray_job, quiet_token_notice
from gradsweep.executors.node import (
    BlockProcessDied,
    BlockProcessHung,
    block_processes,
    peer_modules,
    probe_node,
    run_block_in_process,
)
from gradsweep.records import (
    BlockOutcome,
    BlockTask,
    Cell,
    CellResult,
    Group,
    MeasureSettings,
    NodeProbe,
    skeleton,
)
from gradsweep.worker import LoopCounts

#: Retries of a cell whose worker process died, before it is recorded ``crashed``.
CRASH_RETRIES = 2
#: Out-of-memory retries Ray may make (its default is unbounded).
OOM_RETRIES = "1"
#: Seconds between checks for timed-out cells while waiting on Ray.
WAIT_POLL_S = 1.0
#: CPUs an embedded Ray has beyond its workers: where the node probe runs while the
#: sweep's actors start (Python, Ray, and their fork servers importing torch: 2-3 s
#: here), and where the driver merges and stores. No block ever runs there: blocks run
#: on at most ``workers`` actors at once.
SPARE_CPUS = 1
#: Seconds past every member's ``timeout_s`` before a block's process is killed (its own
#: alarm did not fire: a hang inside C code), and again before the driver kills an actor
#: that did not answer at all.
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
    import importlib.util

    import gradsweep

    root = os.path.dirname(os.path.abspath(gradsweep.__file__))
    parts = {name: importlib.util.find_spec(f"gradsweep.{name}").submodule_search_locations[0]
             for name in ("impls", "dashboards")}  # found, not imported: no layer crossed
    nested = all(os.path.abspath(where) == os.path.join(root, name)
                 for name, where in parts.items())
    if nested and os.path.basename(root) == "gradsweep":
        return root
    if not _STAGED:
        staged = os.path.join(tempfile.mkdtemp(prefix="gradsweep-ship-"), "gradsweep")
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "site")
        shutil.copytree(root, staged, ignore=ignore)
        for name, where in parts.items():
            shutil.copytree(where, os.path.join(staged, name), ignore=ignore)
        atexit.register(shutil.rmtree, os.path.dirname(staged), True)
        _STAGED.append(staged)
    return _STAGED[0]


_STAGED: list[str] = []


def shipped_modules(plugins: tuple[str, ...]) -> list[str]:
    """Local paths for ``py_modules``: the ``gradsweep`` package and each plugin's top
    module (Ray ships a directory, a package, or a single ``.py`` file alike)."""
    return list(dict.fromkeys([package_dir(), *_plugin_paths(plugins)[1]]))



def is_loopback(address: str | None) -> bool:
    """Whether a Ray address (``HOST:PORT``, ``ray://HOST:PORT``) names this machine's
    loopback interface."""
    import ipaddress

    host = (address or "").split("://")[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def embedded_workers() -> int:
    """Workers of an embedded Ray: the cores minus one for the driver and Ray's own
    processes (oversubscription costs whole time slices: PLATFORM.md), at least 1."""
    return max(1, env.collect().cores - 1)


def _worker_env_vars() -> dict[str, str]:
    """What every worker's environment holds: fixed malloc thresholds (no per-process
    allocation history bias: :data:`gradsweep.measure.MALLOC_ENV`), no usage stats."""
    from gradsweep.measure import MALLOC_ENV

    return {"RAY_USAGE_STATS_ENABLED": "0", **MALLOC_ENV}


def embedded_env(plugins: tuple[str, ...]) -> dict[str, str]:
    """The environment of an embedded Ray's processes, and so of its workers.

    :func:`_worker_env_vars` and a ``PYTHONPATH`` of the driver's ``sys.path`` with the
    plugins' roots. Set around ``ray.init`` by
    ``sessions.embedded(env=...)`` rather than given as a ``runtime_env``: workers
    of a runtime env cannot be the ones Ray prestarts, and each would wait for a
    fresh one (a task 0.9 s instead of 0.3 s, an actor 0.8 s instead of 0.1 s).
    """
    roots, _ = _plugin_paths(plugins)
    return {**_worker_env_vars(),
            "PYTHONPATH": os.pathsep.join(dict.fromkeys([*roots, *sys.path[1:]]))}


def ray_init_kwargs(address: str | None, plugins: tuple[str, ...], workers: int | None) -> dict:
    """``ray.init`` arguments: inside a job, a cluster with our code shipped, or embedded.

    The embedded Ray starts a fresh local node (``address="local"``: never a
    cluster found through ``ray_current_cluster``) with its session under
    gradsweep's own :func:`.sessions.temp_dir`, where :func:`.sessions.reap_orphans`
    finds what a crashed driver left. Call ``ray.init`` inside
    ``sessions.embedded(env=embedded_env(plugins))``, which keeps every listening
    socket on loopback and gives Ray's processes their environment.
    """
    quiet = {"logging_level": "WARNING", "log_to_driver": True}
    if in_ray_job():  # the job's runtime env already carries the tree and the plugins
        return quiet
    if address:
        return {"address": address, **quiet, "runtime_env": {
            "py_modules": shipped_modules(plugins), "env_vars": _worker_env_vars(),
            "excludes": ["__pycache__", "*.pyc"]}}
    return {"address": "local", "_node_ip_address": LOOPBACK, "include_dashboard": False,
            "_temp_dir": str(sessions.temp_dir()), "_system_config": EMBEDDED_SYSTEM_CONFIG,
            "num_cpus": (workers or embedded_workers()) + SPARE_CPUS, **quiet}


def _failure_rows(task: BlockTask, exc: BaseException, attempts: int) -> BlockOutcome:
    """Every member's row when the block's process failed in a way no member reported."""
    import ray.exceptions as rex

    if isinstance(exc, BlockProcessDied | rex.RayActorError | rex.WorkerCrashedError
                  | rex.NodeDiedError | rex.OutOfMemoryError):
        status, text = "crashed", f"worker died {attempts} times: {type(exc).__name__}: {exc}"
    else:
        status, text = "error", f"{type(exc).__name__}: {exc}"
    return BlockOutcome(task, tuple(skeleton(c, status, text, attempts=attempts)
                                    for c in task.group.members))


class BlockWorker:
    """A Ray actor: one worker for a whole sweep. Each block runs in a fresh process of
    its own, forked from the fork server this actor starts (:func:`block_processes`)."""

    def __init__(self, plugins: tuple[str, ...], preload: tuple[str, ...] = ()):
        self._node = env.ray_node_id() or env.collect().host
        self._processes = block_processes(plugins, preload)

    def run(self, task: BlockTask, settings: MeasureSettings, plugins: tuple[str, ...],
            peaks: dict[str, dict[str, float]], limit_s: float) -> BlockOutcome:
        """One block in a process of its own (:func:`run_block_in_process`)."""
        return run_block_in_process(self._processes, task, settings, plugins, peaks,
                                    node=self._node, limit_s=limit_s)


def block_limit_s(task: BlockTask, settings: MeasureSettings) -> float:
    """Seconds a block's process may run: every member's ``timeout_s`` plus a grace."""
    return settings.timeout_s * len(task.group.members) + HANG_GRACE_S


@dataclass
class _Pass:
    """The state of one pass: blocks waiting, running (ref -> task, actor, start), idle
    actors, crash counts."""

    pending: deque
    running: dict = field(default_factory=dict)
    idle: list = field(default_factory=list)
    crashes: Counter = field(default_factory=Counter)


class RayExecutor:
    """Blocks as Ray actor calls, each block in a fresh process, in passes.

    A sweep's blocks come block-major window by window (every group of a window's
    first block, then its second blocks, ...; then the next window: see
    :func:`gradsweep.runner.windows`); ``workers`` actors (one per CPU used, spread
    over the nodes) serve the whole sweep, and each block runs in a process of its
    own forked from its actor's fork server, so the blocks of one group run in
    different processes (DESIGN.md, Measurement) at the cost of a fork, not of a new
    interpreter. A freed actor gets its next block before the finished block's rows
    are handed on, so the driver's merging and storing overlaps the workers'
    measuring. A block whose process dies is retried; its last of ``1 +
    CRASH_RETRIES`` attempts runs the members one by one, each in a process of its
    own, so a member that keeps killing its process is ``crashed`` alone and the
    others are measured.

    Parameters
    ----------
    address : str, optional
        A cluster to join (what ``ray.init`` takes), with the gradsweep package and
        the plugins shipped as ``py_modules``. Default: $RAY_ADDRESS; inside a Ray
        job, that job's cluster; else an embedded Ray bound to 127.0.0.1.
    workers : int, optional
        Blocks run at once; default the cores minus one (embedded: one core is
        left to the driver and Ray, at least 1) or the cluster's CPUs.
    """

    processes = True

    def __init__(self, address: str | None = None, workers: int | None = None,
                 plugins: tuple[str, ...] = ()):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_task_oom_retries", OOM_RETRIES)
        address = None if in_ray_job() else address or os.environ.get("RAY_ADDRESS") or None
        if address or in_ray_job():
            enable_token_auth()
        import ray

        self._owns = not ray.is_initialized()
        joined = bool(address) or in_ray_job()
        #: Started here with ``SPARE_CPUS`` beyond the workers (see :meth:`nodes`).
        self._embedded = self._owns and not joined
        workers = workers or (None if joined else embedded_workers())
        if self._owns:
            quiet_token_notice()
            with (sessions.embedded(env=embedded_env(plugins)) if self._embedded
                  else sessions.loopback_only()
                  if is_loopback(address) else contextlib.nullcontext()):
                ray.init(**ray_init_kwargs(address, plugins, workers))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, min(workers or cpus, cpus))
        self._actor = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0,
                                 scheduling_strategy="SPREAD")(BlockWorker)
        self._plugins = plugins
        #: Per group, members that killed their process alone: later blocks run without
        #: them (their ``crashed`` row stands for every block).
        self._killers: dict[str, dict[str, CellResult]] = {}
        #: The sweep's actors, started by :meth:`nodes` (with the peers' libraries to
        #: preload) or by the first pass; ended with the sweep.
        self._actors: list = []
        #: Loop counts of each group's first blocks, handed to its later ones: made
        #: again by each :meth:`run_blocks` with the sweep's ``repeats``.
        self._loops = LoopCounts(1)

    def nodes(self, cells: Sequence[Cell] = ()) -> list[NodeProbe]:
        """Probe every alive node once, each on its own node.

        An embedded Ray starts the sweep's actors meanwhile (their fork servers
        importing the libraries of the peers among ``cells``): it has a CPU for the probe
        beside its workers' (:data:`SPARE_CPUS`), so their start (2-3 s with torch)
        overlaps the probe's GEMMs instead of following them.
        """
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if self._embedded and not self._actors:
            preload = peer_modules(cells)
            self._actors = [self._actor.remote(self._plugins, preload)
                            for _ in range(self.workers)]
        probe = ray.remote(num_cpus=1)(probe_node)
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            node_id=n["NodeID"], soft=False)).remote() for n in ray.nodes() if n["Alive"]]
        return ray.get(refs)

    def run_blocks(self, tasks: Iterable[BlockTask], settings: MeasureSettings,
                   plugins: tuple[str, ...],
                   peaks: dict[str, dict[str, float]]) -> Iterator[BlockOutcome | None]:
        """Yield each block's rows in completion order, pass by pass (a pass: a run of
        consecutive tasks with the same block number, so a group's first block has
        finished before its second starts); and None after a poll of ``WAIT_POLL_S``
        that finished nothing, so the caller may store what waits."""
        self._loops = LoopCounts(settings.repeats)
        try:
            for _, one_pass in itertools.groupby(tasks, key=lambda t: t.block):
                yield from self._run_pass(list(one_pass), settings, plugins, peaks)
        finally:  # the sweep's actors (and their fork servers) end with it
            self._end_actors()

    def _end_actors(self) -> None:
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors = []

    def _ensure_actors(self, tasks: list[BlockTask], plugins: tuple[str, ...]) -> None:
        """Enough actors for ``tasks`` (up to ``workers``), each preloading its peers'
        libraries in its fork server."""
        preload = peer_modules(c for t in tasks for c in t.group.members)
        wanted = min(self.workers, len(tasks)) - len(self._actors)
        self._actors += [self._actor.remote(plugins, preload) for _ in range(max(0, wanted))]

    def _replace(self, actor, plugins: tuple[str, ...], preload: tuple[str, ...]):
        """A new actor in the place of ``actor`` (which died or was killed)."""
        fresh = self._actor.remote(plugins, preload)
        self._actors = [fresh if a is actor else a for a in self._actors]
        return fresh

    def _run_pass(self, tasks: list[BlockTask], settings: MeasureSettings,
                  plugins: tuple[str, ...], peaks) -> Iterator[BlockOutcome | None]:
        """One pass on the sweep's actors."""
        import ray

        self._ensure_actors(tasks, plugins)
        state = _Pass(deque(tasks), idle=list(self._actors))
        while state.pending or state.running:
            ready = self._submit(state, settings, plugins, peaks)
            done, _ = ray.wait(list(state.running), num_returns=1, timeout=WAIT_POLL_S)
            for ref in done:
                ready.extend(self._finished(ref, state, settings, plugins, peaks))
            ready.extend(self._expire(state, settings, plugins))
            # the freed actors get their next block before the caller merges and
            # stores these: its work overlaps theirs instead of leaving them idle
            ready.extend(self._submit(state, settings, plugins, peaks))
            yield from ready or [None]

    def _submit(self, state: _Pass, settings, plugins, peaks) -> list[BlockOutcome]:
        """Start a pending block on each idle actor; the outcomes of blocks left with no
        member to run (each kills its process)."""
        ready = []
        while state.pending and state.idle:
            task = state.pending.popleft()
            run = self._loops.given(self._without_killers(task))
            if not run.group.members:
                ready.append(self._complete(task, ()))
                continue
            actor = state.idle.pop()
            ref = actor.run.remote(run, settings, plugins, peaks, block_limit_s(run, settings))
            state.running[ref] = (task, actor, time.monotonic())
        return ready

    def _finished(self, ref, state: _Pass, settings, plugins, peaks) -> Iterator[BlockOutcome]:
        import ray
        import ray.exceptions as rex

        task, actor, _ = state.running.pop(ref)
        try:
            outcome = ray.get(ref)
        except (BlockProcessDied, rex.RayActorError, rex.WorkerCrashedError,
                rex.OutOfMemoryError) as exc:
            state.crashes[task] += 1
            alive = isinstance(exc, BlockProcessDied)  # else the actor itself died
            state.idle.append(actor if alive else self._replace(
                actor, plugins, peer_modules(task.group.members)))
            if state.crashes[task] < CRASH_RETRIES:  # the last attempt runs members alone
                state.pending.appendleft(task)
            else:
                yield self._isolated(task, exc, settings, plugins, peaks)
            return
        except BlockProcessHung as exc:
            state.idle.append(actor)
            yield self._complete(task, tuple(skeleton(c, "timeout", str(exc)) for c in
                                             self._without_killers(task).group.members))
            return
        except Exception as exc:  # noqa: BLE001 - the block's failure is its members' rows
            state.idle.append(actor)
            yield self._complete(task, _failure_rows(self._without_killers(task), exc, 1).rows)
            return
        state.idle.append(actor)
        attempts = state.crashes[task] + 1
        yield self._complete(task, tuple(replace(r, attempts=attempts) for r in outcome.rows))

    def _without_killers(self, task: BlockTask) -> BlockTask:
        """``task`` without the members known to kill their process (in an earlier block)."""
        if not self._killers:  # the usual case: no hashing of ids per block
            return task
        known = self._killers.get(task.group.group_id, {})
        keep = tuple(c for c in task.group.members if c.cell_id not in known)
        return task if len(keep) == len(task.group.members) else replace(
            task, group=Group(keep))

    def _complete(self, task: BlockTask, rows: tuple) -> BlockOutcome:
        """``rows`` of the members that ran, plus the known killers' ``crashed`` rows, in
        the group's member order; their loop counts are kept for the group's next blocks."""
        self._loops.learn(task, rows)
        if not self._killers and len(rows) == len(task.group.members):  # already in order
            return BlockOutcome(task, tuple(rows))
        by_id = {**self._killers.get(task.group.group_id, {}), **{r.cell_id: r for r in rows}}
        return BlockOutcome(task, tuple(by_id[c.cell_id] for c in task.group.members))

    def _isolated(self, task: BlockTask, exc: BaseException, settings, plugins,
                  peaks) -> BlockOutcome:
        """After repeated crashes: each member alone in a process of its own (on a fresh
        actor), so only a member that kills its process is ``crashed``."""
        import ray

        rows = []
        for cell in self._without_killers(task).group.members:
            alone = self._loops.given(BlockTask(Group((cell,)), task.block, task.seed))
            actor = self._actor.remote(plugins, peer_modules(alone.group.members))
            try:
                rows.extend(ray.get(actor.run.remote(alone, settings, plugins, peaks,
                                                     block_limit_s(alone, settings))).rows)
            except Exception:  # noqa: BLE001 - this member kills its process
                (crashed,) = _failure_rows(alone, exc, CRASH_RETRIES + 1).rows
                self._killers.setdefault(task.group.group_id, {})[cell.cell_id] = crashed
            finally:
                ray.kill(actor)
        return self._complete(task, tuple(rows))

    def _expire(self, state: _Pass, settings: MeasureSettings, plugins) -> Iterator[BlockOutcome]:
        """Blocks whose actor did not answer within their limit plus a grace (the actor
        itself hung: its block's process has its own limit): kill it, rows ``timeout``."""
        import ray

        now = time.monotonic()
        for ref, (task, actor, since) in list(state.running.items()):
            limit = block_limit_s(task, settings) + HANG_GRACE_S
            if now - since > limit:
                ray.kill(actor)
                del state.running[ref]
                state.idle.append(self._replace(actor, plugins, peer_modules(task.group.members)))
                text = f"block did not return within {limit:g} s; its worker was killed"
                yield BlockOutcome(task, tuple(skeleton(c, "timeout", text)
                                               for c in task.group.members))

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
            if self._embedded:
                sessions.shutdown()
            else:
                ray.shutdown()

