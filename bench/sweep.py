"""``gradsweep run``: a spec to a stored, ranked sweep (or a dry run)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from bench import rank, runner, store, views
from bench.spec import Expansion, SweepSpec, expand, load_spec
from impls.registry import load

#: Assumed sustained speed of an unmeasured cell, for dry-run estimates (GFLOP/s).
ESTIMATE_GFLOPS = 5.0
#: Calibration samples (doubling) assumed in a dry-run estimate.
ESTIMATE_CALIBRATION = 4
BYTES_PER_MIB = 2**20


def estimate_seconds(spec: SweepSpec, expansion: Expansion) -> float:
    """Rough wall time of the cells on one worker: each sample lasts at least min_time_s."""
    registry = load(spec.plugins)
    m = spec.measure
    per_sample = m.samples + m.max_warmups + ESTIMATE_CALIBRATION
    total = 0.0
    for cell in expansion.cells:
        call = registry.kernel(cell.kernel).flops(cell.dims) / (ESTIMATE_GFLOPS * 1e9)
        total += per_sample * max(m.min_time_s, call) + 4 * call
    return total


def print_dry_run(console: Console, spec: SweepSpec, expansion: Expansion, workers: int) -> None:
    """The cells, their count, estimated time and peak memory; what was dropped."""
    registry = load(spec.plugins)
    table = Table(title=f"{spec.name}: cells")
    for col in ("cell_id", "variant", "shape", "dtype", "est. MiB"):
        table.add_column(col, overflow="fold")
    peak = 0
    for c in expansion.cells:
        need = registry.kernel(c.kernel).memory_estimate(c.dims, c.dtype)
        peak = max(peak, need)
        table.add_row(c.cell_id, c.variant, c.shape_text, c.dtype, f"{need / BYTES_PER_MIB:.3g}")
    console.print(table)
    for d in expansion.dropped:
        console.print(f"dropped: grid[{d.grid}] {d.kernel} {d.shape}: {d.reason}", markup=False)
    seconds = estimate_seconds(spec, expansion) / max(1, workers)
    console.print(f"{len(expansion.cells)} cells, {len(expansion.dropped)} dropped; "
                  f"estimated {seconds:.0f} s on {workers} worker(s), "
                  f"peak {peak / BYTES_PER_MIB:.3g} MiB per cell", markup=False)


@contextmanager
def progress_reporter(console: Console) -> Iterator:
    """``(on_start, on_result)`` callbacks: a rich bar on a terminal, plain lines elsewhere."""
    state = {"done": 0, "failed": 0, "total": 0}
    if console.is_terminal:
        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("failed {task.fields[failed]}"), TimeRemainingColumn(),
                       console=console, transient=True)
        task = bar.add_task("cells", total=None, failed=0)
    with (bar if console.is_terminal else _nothing()):
        def on_start(sweep_id: str, n: int) -> None:
            console.print(sweep_id, markup=False, highlight=False)
            state["total"] = n
            if console.is_terminal:
                bar.update(task, total=n)

        def on_result(result) -> None:
            state["done"] += 1
            state["failed"] += result.status in runner.FAILED
            if console.is_terminal:
                bar.update(task, advance=1, failed=state["failed"])
            else:
                console.print(f"[{state['done']}/{state['total']}] {result.status:9} "
                              f"{result.variant} {result.shape} {result.dtype}",
                              markup=False, highlight=False)
        yield on_start, on_result


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def make_executor(address: str | None, local: bool, workers: int | None,
                  plugins: tuple[str, ...]):
    """The in-process executor with ``local``, else Ray (embedded or ``address``)."""
    if local:
        return runner.LocalExecutor()
    return runner.RayExecutor(address=address, workers=workers, plugins=plugins)


def run_command(spec_path: str, *, address: str | None = None, local: bool = False,
                workers: int | None = None, dry_run: bool = False, resume: str | None = None,
                results: str | None = None, console: Console) -> int:
    """Everything ``gradsweep run`` does; returns the exit code (0 ok, 1 a cell failed)."""
    spec = load_spec(spec_path)
    expansion = expand(spec)
    if dry_run:
        print_dry_run(console, spec, expansion, workers or (1 if local else 2))
        return 0
    dataset = store.resolve(results)
    if resume:
        runner.resume_plan(dataset, spec, resume, expansion.cells)  # bad input before Ray
    for d in expansion.dropped:
        console.print(f"dropped: grid[{d.grid}] {d.kernel} {d.shape}: {d.reason}", markup=False)
    executor = make_executor(address, local, workers, spec.plugins)
    try:
        with progress_reporter(console) as (on_start, on_result):
            outcome = runner.run_sweep(spec, dataset, executor, resume=resume,
                                       on_start=on_start, on_result=on_result,
                                       expansion=expansion)
    finally:
        executor.close()
    cells = store.read(dataset, "cells", [outcome.sweep_id])
    views.print_ranking(console, rank.rank(cells, load(spec.plugins)),
                        title=f"{spec.name} ({outcome.sweep_id})")
    views.print_failures(console, cells)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(outcome.counts.items()))
    console.print(f"sweep {outcome.sweep_id}: {counts}; results in {dataset.uri}",
                  markup=False, highlight=False)
    return 1 if outcome.failed else 0
