"""What runs on a node: its probe for the ``nodes`` table and one block under its guards,
in a fresh process of its own (:func:`run_block_in_process`)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import multiprocessing
import os
import signal
import sys
import types
from collections.abc import Iterable, Iterator
from dataclasses import replace

from gradsweep import env, measure
from gradsweep.executors.guards import freeze_imports, memory_guard
from gradsweep.impls.base import PEER_AXIS, parse_variant
from gradsweep.impls.registry import load
from gradsweep.records import BlockOutcome, BlockTask, Cell, MeasureSettings, NodeProbe


def probe_node() -> NodeProbe:
    """This node's row of the ``nodes`` table: GEMM peaks at 1 BLAS thread."""
    machine = env.collect()
    with measure.set_threads(1):
        peaks = {d: env.gemm_peak_gflops(d) for d in ("float32", "float64")}
    return NodeProbe(node=env.ray_node_id() or machine.host, host=machine.host,
                     cpu=machine.cpu, cores=machine.cores, blas=machine.blas,
                     gemm_gflops_float32=peaks["float32"], gemm_gflops_float64=peaks["float64"])


def ready(plugins: tuple[str, ...], preload: tuple[str, ...] = ()) -> None:
    """A worker's start: import the plugins (their failure is each member's row) and
    the ``preload`` modules that are installed, then freeze what lives."""
    try:
        load(plugins)
    except Exception:  # noqa: BLE001 - the members report it
        pass
    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError:  # the peer's members are skipped, and say so
            pass
    freeze_imports()


def peer_modules(cells: Iterable[Cell]) -> tuple[str, ...]:
    """The libraries the peers among ``cells`` use: a peer is named after its library
    (``peer=torch``), which a worker's fork server imports before any block."""
    names = {parse_variant(c.variant)[1].get(PEER_AXIS) for c in cells}
    return tuple(sorted(n for n in names if n))


def run_block_on_node(task: BlockTask, settings: MeasureSettings, plugins: tuple[str, ...],
                      peaks: dict[str, dict[str, float]], *, in_worker: bool = True,
                      node: str | None = None) -> BlockOutcome:
    """Run a block wherever it landed, with that node's GEMM peaks, under its guards.

    Each member's ``timeout_s`` is an alarm in this process (``worker.run_block``)
    and the block's address space is capped at ``memory_budget_mb`` per member
    (:func:`memory_guard`): both end as rows, never as a raise. ``in_worker``:
    a member's KeyboardInterrupt is its error (no user presses Ctrl-C in a worker).
    ``node``: the node's id, when this process cannot ask Ray (a block's own process).
    """
    from gradsweep.worker import run_block

    ready(plugins)
    node = node or env.ray_node_id() or env.collect().host
    budget = settings.memory_budget_mb * len(task.group.members)
    with memory_guard(budget):
        rows = run_block(task, settings, plugins, peaks.get(node), interrupts=in_worker)
    return BlockOutcome(task, tuple(replace(r, node=node) for r in rows))  # no Ray in a fork




# --------------------------------------------------------------------------- fresh processes

#: How a block gets its own process: a fork of a server process (multiprocessing's
#: ``forkserver``) that imported numpy, gradsweep and the peers' libraries once. A fork
#: takes milliseconds where a new interpreter with torch took 2-3 s per block and pass;
#: the server has no threads and no Ray, so forking it is safe (forking a Ray worker is not).
START_METHOD = "forkserver"
#: Modules every block's process needs, imported by the fork server before any fork
#: (what a block imported on its own cost a fresh child 0.3-0.6 s; numpy imports
#: ``numpy.ma`` at the first ``np.median``, 45 ms, and ``numpy.random`` lazily).
FORK_SERVER_MODULES = ("numpy", "numpy.ma", "numpy.random", "threadpoolctl", "psutil",
                       "resource", "gradsweep.worker", "gradsweep.executors.node",
                       "gradsweep.executors.warm")
#: Modules a peer's library imports only on its first backward (torch: sympy, through
#: its symbolic shapes), imported by the fork server beside the library itself.
PEER_FIRST_USE_MODULES = {"torch": ("torch.fx.experimental.symbolic_shapes",)}
#: Environment variable naming (comma-separated) the plugins and peer libraries the fork
#: server imports through :mod:`gradsweep.executors.warm`, which survives their failing:
#: a module multiprocessing preloads itself may raise only ImportError, or the server dies.
PRELOAD_ENV = "GRADSWEEP_FORK_PRELOAD"
#: ``prctl`` option: the signal a process gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1
#: Seconds a block's process may take to exit after sending its rows before it is killed.
EXIT_GRACE_S = 5.0


class BlockProcessDied(RuntimeError):
    """A block's process ended without handing back its rows (a crash, a kill, memory)."""


class BlockProcessHung(RuntimeError):
    """A block's process outlived its limit and was killed."""


def block_processes(plugins: tuple[str, ...], preload: tuple[str, ...] = ()):
    """Start the fork server this process's blocks will be forked from, and return its
    multiprocessing context. It imports :data:`FORK_SERVER_MODULES`, the plugins and
    ``preload`` (the peers' libraries) now, so that no block pays for them; a plugin or
    library that fails to import is left to each block to report."""
    from multiprocessing import forkserver

    context = multiprocessing.get_context(START_METHOD)
    first_use = [m for name in preload for m in PEER_FIRST_USE_MODULES.get(name, ())]
    os.environ[PRELOAD_ENV] = ",".join([*plugins, *preload, *first_use])
    context.set_forkserver_preload(list(FORK_SERVER_MODULES))
    with _main_left_behind():
        forkserver.ensure_running()
    return context


@contextlib.contextmanager
def _main_left_behind() -> Iterator[None]:
    """Hide this process's ``__main__`` while a block's process starts.

    multiprocessing makes every new process run the parent's main script again (as
    ``__mp_main__``) unless it was started by module name; a Ray worker's main is
    Ray's ``default_worker.py``, whose imports cost a block about a second. Blocks
    need nothing from it (their code is imported by name), so the parent shows an
    empty module for the moment the child's start-up data is taken.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent (the fork server) ends, so a
    block never outlives its worker; a no-op elsewhere."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        except (OSError, AttributeError):
            pass


def _block_child(conn, task: BlockTask, settings: MeasureSettings, plugins: tuple[str, ...],
                 peaks: dict[str, dict[str, float]], node: str | None) -> None:
    """A block's process: run the block and send its outcome (or what it raised) back."""
    _die_with_parent()
    gc.freeze()  # what the fork server imported: never walked by this block's collections
    try:
        conn.send(run_block_on_node(task, settings, plugins, peaks, node=node))
    except BaseException as exc:  # noqa: BLE001 - handed to the worker, which raises it
        conn.send(RuntimeError(f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_block_in_process(context, task: BlockTask, settings: MeasureSettings,
                         plugins: tuple[str, ...], peaks: dict[str, dict[str, float]], *,
                         node: str | None, limit_s: float) -> BlockOutcome:
    """Run one block in a fresh process forked from ``context``'s fork server.

    Each block gets its own process, so a group's blocks sample the process effect
    (DESIGN.md, Measurement) and a member that kills its process takes only its
    block with it.

    Raises
    ------
    BlockProcessDied
        The process ended without sending its rows (a segfault, ``os._exit``, a kill).
    BlockProcessHung
        No rows within ``limit_s`` seconds; the process was killed.
    """
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_block_child, daemon=True,
                            args=(send, task, settings, plugins, peaks, node))
    with _main_left_behind():
        child.start()
    send.close()
    try:
        if not receive.poll(limit_s):
            child.kill()
            raise BlockProcessHung(f"block did not return within {limit_s:g} s; "
                                   "its process was killed")
        try:
            got = receive.recv()
        except EOFError:
            child.join()
            raise BlockProcessDied(f"the block's process died (exit code {child.exitcode})"
                                   ) from None
    finally:
        receive.close()
        child.join(EXIT_GRACE_S)
        if child.is_alive():  # hung, or stuck on its way out
            child.kill()
            child.join()
    if isinstance(got, BaseException):
        raise got
    return got
