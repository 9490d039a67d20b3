"""What runs on a node: its probe for the ``nodes`` table and one block under its guards."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from gradsweep import env, measure
from gradsweep.executors.guards import freeze_imports, freeze_survivors, memory_guard
from gradsweep.impls.base import PEER_AXIS, parse_variant
from gradsweep.impls.registry import load
from gradsweep.records import BlockOutcome, BlockTask, MeasureSettings, NodeProbe


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


def peer_modules(tasks: Iterable[BlockTask]) -> tuple[str, ...]:
    """The libraries the peers of ``tasks`` use: a peer is named after its library
    (``peer=torch``), which a worker started ahead of its blocks imports at once."""
    names = {parse_variant(c.variant)[1].get(PEER_AXIS) for t in tasks for c in t.group.members}
    return tuple(sorted(n for n in names if n))


def run_block_on_node(task: BlockTask, settings: MeasureSettings, plugins: tuple[str, ...],
                      peaks: dict[str, dict[str, float]], *,
                      in_worker: bool = True) -> BlockOutcome:
    """Run a block wherever it landed, with that node's GEMM peaks, under its guards.

    Each member's ``timeout_s`` is an alarm in this process (``worker.run_block``)
    and the block's address space is capped at ``memory_budget_mb`` per member
    (:func:`memory_guard`): both end as rows, never as a raise. ``in_worker``:
    a member's KeyboardInterrupt is its error (no user presses Ctrl-C in a worker).
    """
    from gradsweep.worker import run_block

    ready(plugins)
    node = env.ray_node_id() or env.collect().host
    budget = settings.memory_budget_mb * len(task.group.members)
    with memory_guard(budget):
        rows = run_block(task, settings, plugins, peaks.get(node), interrupts=in_worker)
    if in_worker:
        freeze_survivors()  # what the block imported (torch) is not walked by the next one
    return BlockOutcome(task, rows)


