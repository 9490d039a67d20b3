"""``gradsweep run``: a spec to a stored, ranked sweep (or a dry run)."""

from __future__ import annotations

import heapq
import os
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from gradsweep import api, checks, env, measure, rank, runner, store
from gradsweep.cli import views
from gradsweep.cli.views import text
from gradsweep.errors import printable
from gradsweep.executors.auth import in_ray_job
from gradsweep.impls.registry import load
from gradsweep.records import (
    FAILED,
    BlockProgress,
    Cell,
    Expansion,
    MeasureSettings,
    SweepOutcome,
    SweepSpec,
)
from gradsweep.spec import expand, load_spec

#: Assumed sustained speed of an unmeasured cell, for dry-run estimates (GFLOP/s).
ESTIMATE_GFLOPS = 5.0
#: Floor on an unmeasured backward call, and numpy's overhead per time step (BPTT
#: variants run a Python loop over T; measured ~90 us per LSTM step on these machines).
ESTIMATE_CALL_FLOOR_S = 2e-4
ESTIMATE_STEP_S = 6e-5
#: Loops double until a sample lasts min_time_s, so a sample overshoots it by half on average.
SAMPLE_OVERSHOOT = 1.5
#: Calls outside the timed samples: the variant once, forward twice, the float64 reference.
VERIFY_CALLS = 4
#: Memory pass cost, in calls (tracemalloc slows numpy's allocations a little).
MEMORY_PASS_CALLS = 1.5
#: Per-cell scheduling, transfer and storing on Ray (measured: ~5 ms; see README).
RAY_CELL_OVERHEAD_S = 0.01
#: Starting Ray and probing each node's GEMM peak (two dtypes) before the first cell.
RAY_START_S = 8.0
PROBE_S = 2 * env.GEMM_SECONDS
BYTES_PER_MIB = 2**20
#: Exit code of a sweep stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report).
INTERRUPTED = 130
#: Off a terminal, a progress line at each 1/PROGRESS_LINES of a sweep's blocks.
PROGRESS_LINES = 10


@dataclass(frozen=True)
class Estimate:
    """A dry run's forecast: per-cell seconds and bytes, and the sweep's wall time."""

    seconds: tuple[float, ...]
    measured: int
    nbytes: tuple[int, ...]
    wall_s: float
    concurrent_bytes: int
    over_budget: int


def model_seconds(cell: Cell, m: MeasureSettings, flops: int) -> float:
    """Modelled seconds of one cell on one worker, from its FLOPs and the settings.

    Calibration doubles loops until a sample lasts min_time_s (about 2 x
    min_time_s in all), then at least ``2 * WARMUP_WINDOW`` warmups (at most
    max_warmups) and ``samples`` samples of at least min_time_s each.
    """
    steps = cell.dims.get("T", 0) * ESTIMATE_STEP_S
    call = max(flops / (ESTIMATE_GFLOPS * 1e9) + steps, ESTIMATE_CALL_FLOOR_S)
    sample = max(SAMPLE_OVERSHOOT * m.min_time_s, call)
    warmups = min(m.max_warmups, 2 * measure.WARMUP_WINDOW)
    extra = VERIFY_CALLS + (MEMORY_PASS_CALLS if m.memory else 0)
    return 2 * sample + (warmups + m.samples) * sample + extra * call


def measured_seconds(dataset: store.Dataset | None) -> dict[str, float]:
    """``cell_id`` -> the median ``duration_s`` of its ``ok`` rows in ``dataset``."""
    if dataset is None:
        return {}
    try:
        cells = store.read(dataset, "cells", columns=["cell_id", "status", "duration_s"])
    except Exception:  # an unreadable history only costs the better estimate
        return {}
    ok = cells[(cells["status"] == "ok") & cells["duration_s"].notna()]
    return ok.groupby("cell_id")["duration_s"].median().to_dict()


def makespan(seconds: Sequence[float], workers: int) -> float:
    """Wall time when cells start in order on the first free of ``workers``."""
    free = [0.0] * max(1, workers)
    for s in seconds:
        heapq.heappush(free, heapq.heappop(free) + s)
    return max(free)


def estimate(spec: SweepSpec, expansion: Expansion, workers: int, *, ray: bool = True,
             dataset: store.Dataset | None = None) -> Estimate:
    """Forecast time (measured durations where the dataset has them) and memory."""
    registry = load(spec.plugins)
    known = measured_seconds(dataset)
    budget = spec.measure.memory_budget_mb * BYTES_PER_MIB
    secs, sizes = [], []
    for c in expansion.cells:
        kernel = registry.kernel(c.kernel)
        sizes.append(int(kernel.memory_estimate(c.dims, c.dtype)))
        run = sizes[-1] <= budget
        own = known.get(c.cell_id, model_seconds(c, spec.measure, kernel.flops(c.dims)))
        secs.append((own + (RAY_CELL_OVERHEAD_S if ray else 0.0)) if run else 0.0)
    fixed = (RAY_START_S if ray else 0.0) + PROBE_S
    biggest = sorted((s for s in sizes if s <= budget), reverse=True)[:workers]
    return Estimate(tuple(secs), sum(c.cell_id in known for c in expansion.cells),
                    tuple(sizes), fixed + makespan(secs, workers), sum(biggest),
                    sum(s > budget for s in sizes))


def print_dropped(console: Console, expansion: Expansion) -> None:
    """One line per grid point the expansion dropped, and why."""
    for d in expansion.dropped:
        console.print(printable(f"dropped: grid[{d.grid}] {d.kernel} {d.shape}: {d.reason}"),
                      markup=False, highlight=False)


def print_dry_run(console: Console, spec: SweepSpec, expansion: Expansion, workers: int, *,
                  ray: bool = True, dataset: store.Dataset | None = None,
                  errors: Console | None = None) -> None:
    """The cells with their estimated time and memory and the sweep's totals (on
    ``console``); what was dropped (on ``errors``, default ``console``)."""
    est = estimate(spec, expansion, workers, ray=ray, dataset=dataset)
    table = Table(title=text(f"{spec.name}: cells"))
    for col in ("cell_id", "variant", "shape", "dtype", "est. s", "est. MiB"):
        table.add_column(col, overflow="fold")
    for c, s, b in zip(expansion.cells, est.seconds, est.nbytes):
        table.add_row(c.cell_id, text(c.variant), text(c.shape_text), text(c.dtype),
                      f"{s:.2g}" if s else "skip", f"{b / BYTES_PER_MIB:.3g}")
    console.print(table)
    print_dropped(errors or console, expansion)
    mib = [b / BYTES_PER_MIB for b in est.nbytes] or [0.0]
    console.print(printable(
        f"{len(expansion.cells)} cells, {len(expansion.dropped)} dropped, {est.over_budget} "
        f"over memory_budget_mb {spec.measure.memory_budget_mb:g} (skipped); estimated "
        f"{est.wall_s:.0f} s on {workers} worker(s) ({est.measured} cells timed from earlier "
        f"runs); peak {max(mib):.3g} MiB per cell, {est.concurrent_bytes / BYTES_PER_MIB:.3g} "
        f"MiB for {workers} cells at once"), markup=False, highlight=False)


class _Progress:
    """What the progress display shows: cells stored and failed, and the blocks' pace.

    The ETA comes from blocks (:class:`gradsweep.records.BlockProgress`), not cells:
    a group's cells are stored together once its last block is in, near the end of
    their window, so a pace counted in cells is meaningless until the sweep is
    almost over.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.done = self.failed = self.total = 0
        self.blocks: BlockProgress | None = None
        self._shown_tenths = 0
        self._bar = _bar(console) if console.is_terminal else None
        self._task = self._bar.add_task("blocks", total=None, cells="0/?", failed=0) \
            if self._bar else None

    def eta_s(self) -> float | None:
        """Seconds left at the blocks' pace so far (None before the first block)."""
        return self.blocks.eta_s if self.blocks else None

    def _eta_text(self) -> str:
        eta = self.eta_s()
        return "?" if eta is None else f"{eta:.0f}s"

    def _say(self, line: str) -> None:
        self.console.print(printable(line), markup=False, highlight=False)

    def on_start(self, sweep_id: str, n: int) -> None:
        self.total = n
        if self._bar:
            self._bar.update(self._task, cells=f"0/{n}")

    def on_block(self, progress: BlockProgress) -> None:
        """A block finished: the bar moves; a plain line at each tenth of the blocks."""
        self.blocks = progress
        if self._bar:
            self._bar.update(self._task, total=progress.total, completed=progress.done)
            return
        tenths = progress.done * PROGRESS_LINES // max(1, progress.total)
        if tenths > self._shown_tenths:
            self._shown_tenths = tenths
            self._say(f"blocks {progress.done}/{progress.total} in {progress.elapsed_s:.0f}s, "
                      f"eta {self._eta_text()}")

    def on_result(self, result) -> None:
        """A cell's row is stored: count it; a plain line per cell off a terminal."""
        self.done += 1
        self.failed += result.status in FAILED
        if self._bar:
            self._bar.update(self._task, cells=f"{self.done}/{self.total}", failed=self.failed)
            return
        self._say(f"[{self.done}/{self.total}] {result.status:9} {result.variant} "
                  f"{result.shape} {result.dtype}  failed {self.failed} "
                  f"remaining {max(0, self.total - self.done)} eta {self._eta_text()}")


def _bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("cells {task.fields[cells]} failed {task.fields[failed]}"),
                    TimeRemainingColumn(), console=console, transient=True)


@contextmanager
def progress_reporter(console: Console) -> Iterator[_Progress]:
    """The sweep's progress: a rich bar of blocks on a terminal; elsewhere a plain line
    per stored cell and one at each tenth of the blocks, each with the ETA."""
    progress = _Progress(console)
    with progress._bar if progress._bar else _nothing():
        yield progress


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (``ray job stop``, ``kill``) like Ctrl-C, so the batch is stored."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)



def default_workers(local: bool, workers: int | None) -> int:
    """Blocks at once: ``--workers``, else 1 in-process, else an embedded Ray's default."""
    from gradsweep.executors.onray import embedded_workers

    return workers or (1 if local else embedded_workers())


def harness_line(outcome: SweepOutcome) -> str:
    """Throughput and the harness's own time per cell, for the run's last lines."""
    per = outcome.overhead_s_per_cell()
    rate = outcome.cells / outcome.wall_s if outcome.wall_s else 0.0
    carried = (f"; loop counts of {outcome.loops_kept} of {outcome.cells} cells carried from "
               "earlier sweeps" if outcome.loops_carried else "")
    return (f"{outcome.cells} cells in {outcome.wall_s:.1f} s on {outcome.workers} worker(s): "
            f"{rate:.2f} cells/s; in-cell {outcome.task_s:.1f} s; harness "
            f"{'?' if per is None else f'{per * 1e3:.1f}'} ms per cell{carried}")


def check_arguments(results: str | None, dashboard: str | None, address: str | None,
                    local: bool) -> str:
    """Every path and address of ``run``, before anything starts; the results location.

    Raises
    ------
    BadInput
        Naming the option (or RAY_ADDRESS) and what was expected.
    """
    results = checks.check_results_dir(results, must_exist=False)
    if dashboard:
        checks.check_output_dir(dashboard, key="--dashboard")
    if not local:
        api.check_ray_address(address)
        given = address or ("" if in_ray_job() else os.environ.get("RAY_ADDRESS", ""))
        if given:
            checks.check_address(given, accept=checks.RAY_INIT_SCHEMES,
                                 key="--address" if address else "RAY_ADDRESS")
    return results


#: Columns the end of a run reads of every cell: enough to choose the groups shown, for
#: the overall ranking and for the cells not ranked.
LIGHT_COLUMNS = ["kernel", "shape", "dtype", "variant", "status", "median_ns", "error"]


def shown_groups(light: pd.DataFrame, rows: int) -> pd.DataFrame:
    """The ok cells of the first (kernel, shape, dtype) groups, in ranking order, that fit
    in ``rows`` together (the first group whatever its size)."""
    keys = list(rank.GROUP_KEYS)
    ok = light[(light["status"] == "ok") & light["median_ns"].notna()]
    sizes = ok.groupby(keys).size().cumsum()  # groups in key order
    keep = sizes[(sizes <= rows) | (sizes.index == sizes.index[0])] if len(sizes) else sizes
    shown = ok[pd.MultiIndex.from_frame(ok[keys]).isin(keep.index)]
    return shown.sort_values(keys, kind="stable")


@dataclass(frozen=True)
class EndOfRun:
    """What the end of a run prints besides the ranked groups, from the light columns.

    ``shown`` are the ``cell_id`` of the groups ranked in full (None: every ok cell);
    ``overall`` the per-kernel ranking when some groups are not shown.
    """

    shown: tuple[str, ...] | None
    hidden_groups: int
    hidden_cells: int
    overall: pd.DataFrame | None
    failed: pd.DataFrame
    failed_total: int


def end_of_run(light: pd.DataFrame, rows: int) -> EndOfRun:
    """The groups a run's end ranks in full (those fitting in ``rows``), the overall
    ranking when that leaves some out, and the first ``rows`` cells not ok."""
    keys = list(rank.GROUP_KEYS)
    shown = shown_groups(light, rows)
    ok = light[light["status"] == "ok"]
    rankable = int(ok["median_ns"].notna().sum())
    failed = light[light["status"] != "ok"]
    first_failed = failed.head(rows).copy()  # no view that would keep ``light`` alive
    if len(shown) == rankable:
        return EndOfRun(None, 0, 0, None, first_failed, len(failed))
    return EndOfRun(tuple(shown["cell_id"]),
                    ok.groupby(keys).ngroups - shown.groupby(keys).ngroups,
                    rankable - len(shown), rank.overall(ok), first_failed, len(failed))


def print_results(console: Console, dataset: store.Dataset, sweep_id: str,
                  spec: SweepSpec) -> None:
    """The ranking of a finished sweep, read from the store, bounded like ``report``'s.

    A sweep whose ok cells fit in :data:`.views.REPORT_MAX_ROWS` rows gets every group's
    ranking; a bigger one the first groups that fit, the overall ranking per kernel and
    dtype and a note naming ``gradsweep report``; so the work after the last cell does
    not grow with the sweep beyond one read of a few columns. That read is summarised
    and dropped before the ranked groups' rows are read, which reuse its memory.
    """
    light = store.read(dataset, "cells", [sweep_id], columns=LIGHT_COLUMNS)
    end = end_of_run(light, views.REPORT_MAX_ROWS)
    del light
    import pyarrow.dataset as pads

    wanted = None if end.shown is None else pads.field("cell_id").isin(list(end.shown))
    cells = store.read(dataset, "cells", [sweep_id], columns=rank.READ_COLUMNS, filter=wanted)
    views.print_ranking(console, rank.rank(cells, load(spec.plugins)),
                        title=f"{spec.name} ({sweep_id})")
    if end.overall is not None:
        views.print_frame(console, end.overall.assign(
            geomean=end.overall["geomean"].map(views.fmt_num)),
            title="overall (geometric mean of time / fastest over shapes)")
        console.print(printable(
            f"note: {end.hidden_groups} more groups ({end.hidden_cells} cells) not shown; "
            f"gradsweep report {sweep_id} (--format md or csv) ranks every group"),
            markup=False, highlight=False)
    views.print_failures(console, end.failed)
    if end.failed_total > len(end.failed):
        console.print(printable(f"note: {end.failed_total - len(end.failed)} more cells not "
                                f"ranked not shown; gradsweep results show {sweep_id}"),
                      markup=False, highlight=False)


def run_command(spec_path: str, *, address: str | None = None, local: bool = False,
                workers: int | None = None, dry_run: bool = False, resume: str | None = None,
                results: str | None = None, dashboard: str | None = None,
                console: Console, errors: Console | None = None) -> int:
    """Everything ``gradsweep run`` does; returns the exit code (0 ok, 1 a cell failed).

    Results (the dry run's cells, the ranking, the last line) go to ``console``;
    progress, dropped cells and notes to ``errors`` (default: ``console``). With
    ``dashboard``, also writes the static dashboard of the sweep there and prints
    the path of its ``index.html``.
    """
    errors = errors or console
    spec = load_spec(spec_path)
    expansion = expand(spec)
    dataset = store.resolve(check_arguments(results, dashboard, address, local))
    if dry_run:
        print_dry_run(console, spec, expansion, default_workers(local, workers),
                      ray=not local, dataset=dataset, errors=errors)
        return 0
    if resume:
        runner.resume_plan(dataset, spec, resume, expansion.cells)  # bad input before Ray
    print_dropped(errors, expansion)
    executor = api.make_executor(address, local, workers, spec.plugins)
    if not local and not workers and not address and not in_ray_job():
        errors.print(f"embedded Ray: {executor.workers} worker(s), the cores minus one left to "
                     "the driver and Ray; each block in a fresh process (--workers N to change)",
                     markup=False, highlight=False)
    started: list[str] = []
    try:
        with sigterm_as_interrupt(), progress_reporter(errors) as progress:
            def begin(sweep_id: str, n: int) -> None:  # the id: the first line of results
                started.append(sweep_id)
                console.print(printable(sweep_id), markup=False, highlight=False)
                progress.on_start(sweep_id, n)

            outcome = runner.run_sweep(spec, dataset, executor, resume=resume,
                                       on_result=progress.on_result, on_start=begin,
                                       on_block=progress.on_block, expansion=expansion)
    except KeyboardInterrupt:
        sweep_id = started[0] if started else "SWEEP_ID"
        errors.print(printable(f"interrupted: finished cells are stored in {dataset.uri}; "
                               f"finish with gradsweep run {spec_path} --resume {sweep_id}"),
                     markup=False, highlight=False)
        return INTERRUPTED
    finally:
        executor.close()
    print_results(console, dataset, outcome.sweep_id, spec)
    for line in outcome.profile_errors:
        errors.print(printable(f"not profiled: {line}"), markup=False, highlight=False)
    if dashboard:
        from gradsweep.dashboards.render import write_site

        index = write_site(dataset, [outcome.sweep_id], dashboard)
        console.print(printable(f"dashboard: {index}"), markup=False, highlight=False)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(outcome.counts.items()))
    errors.print(harness_line(outcome), markup=False, highlight=False)
    console.print(printable(f"sweep {outcome.sweep_id}: {counts}; results in {dataset.uri}"),
                  markup=False, highlight=False)
    return 1 if outcome.failed else 0
