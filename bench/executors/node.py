"""What runs on a node: its probe for the ``nodes`` table and one block under its guards."""

from __future__ import annotations

from gradsweep import env, measure
from gradsweep.executors.guards import freeze_imports, memory_guard
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


def ready(plugins: tuple[str, ...]) -> None:
    """A worker's start: import the plugins (their failure is each member's row), freeze."""
    try:
        load(plugins)
    except Exception:  # noqa: BLE001 - the members report it
        pass
    freeze_imports()


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
    return BlockOutcome(task, rows)


