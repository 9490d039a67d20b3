"""What runs on a node: its probe for the ``nodes`` table and one cell under its guards."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from gradsweep import env, measure
from gradsweep.executors.guards import CellTimeout, deadline, freeze_imports, memory_guard
from gradsweep.impls.registry import load
from gradsweep.records import Cell, CellResult, MeasureSettings, NodeProbe, skeleton
from gradsweep.worker import run_cell, stamped

#: Seconds each warm-up task holds its worker, so the warm-ups land on distinct workers.
WARM_HOLD_S = 0.3


def probe_node() -> NodeProbe:
    """This node's row of the ``nodes`` table: GEMM peaks at 1 BLAS thread."""
    machine = env.collect()
    with measure.set_threads(1):
        peaks = {d: env.gemm_peak_gflops(d) for d in ("float32", "float64")}
    return NodeProbe(node=env.ray_node_id() or machine.host, host=machine.host,
                     cpu=machine.cpu, cores=machine.cores, blas=machine.blas,
                     gemm_gflops_float32=peaks["float32"], gemm_gflops_float64=peaks["float64"])


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
        return stamped(skeleton(cell, "timeout", text), started, t0)

