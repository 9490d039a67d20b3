"""Run a sweep: its groups' blocks on Ray (embedded or a cluster) or in-process.

The flow: expand the spec, write a ``started`` event, group the cells, hand
every group's blocks to an executor that yields them in completion order, merge
each group's blocks into one row per member as its last block arrives, store
those rows (durably, before they are reported), write the final event. A
killed driver leaves every reported cell; ``resume`` reruns the groups with a
cell that is not ``ok``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from gradsweep import env
from gradsweep.errors import BadInput, StoreError
from gradsweep.impls.registry import load
from gradsweep.records import (
    BlockOutcome,
    BlockProgress,
    BlockTask,
    Cell,
    CellResult,
    Expansion,
    Group,
    MeasureSettings,
    SweepEvent,
    SweepOutcome,
    SweepSpec,
    groups_of,
    new_sweep_id,
    peaks_of,
    skeleton,
)
from gradsweep.spec import expand
from gradsweep.units import BYTES_PER_MB
from gradsweep.worker import block_tasks, merge_blocks

if TYPE_CHECKING:  # pandas and pyarrow stay out of the workers, whose gc.collect they slow
    from gradsweep import store

#: Cells per window of a process-per-pass executor (Ray): every block of a window's groups
#: runs (in ``repeats`` passes) and is stored before the next window starts, so the driver
#: holds the rows of at most this many members' first ``repeats - 1`` blocks, whatever the
#: sweep's size. Each pass starts its worker processes afresh (about a second), so a
#: window is big enough to make that small against its blocks.
WINDOW_CELLS = 5000
#: A window has at least this many groups per worker, so every worker has blocks to run.
WINDOW_GROUPS_PER_WORKER = 4
#: Rows of finished groups are written together as one durable file, then reported: at
#: most this many at once, and none waits longer than FLUSH_SECONDS, stretched as the
#: sweep goes on: by its seconds so far over FLUSH_STRETCH_S, at most FLUSH_MAX_STRETCH
#: times (checked as blocks arrive and at every poll of the Ray executor). So a sweep of
#: tiny groups writes a file a second in its first minute and one every 5 s after 4
#: minutes, instead of one per group: the end-of-sweep compaction opens each file
#: (~1.5 ms), and a 100k-cell sweep of 29 minutes wrote 1,700 files at one a second.
FLUSH_ROWS = 2000
FLUSH_SECONDS = 1.0
FLUSH_STRETCH_S = 50.0
FLUSH_MAX_STRETCH = 5.0
#: Rows buffered before a file is written, and the longest wait between files.
BATCH_ROWS = 200
BATCH_SECONDS = 5.0


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
            from gradsweep import store

            store.write(self.dataset, "cells", self.sweep_id, self._rows)
        self._rows, self._last = [], time.monotonic()



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


def sweep_event(spec: SweepSpec, event: str, status: str, cells_total: int,
                role: str = "plain", ci_run: str | None = None,
                tree: str | None = None) -> SweepEvent:
    """One row of ``sweeps`` for ``spec`` (the latest row per sweep wins).

    ``tree`` is the source tree whose git state is recorded (the gate's base
    worktree); default this package's repository.
    """
    machine = env.collect(tree)
    return SweepEvent(name=spec.name, event=event, status=status, spec=spec.text,
                      spec_hash=spec.spec_hash, spec_path=spec.path, cells_total=cells_total,
                      git_commit=machine.git_commit, git_dirty=machine.git_dirty,
                      host=machine.host, role=role, ci_run=ci_run)


def write_event(dataset: store.Dataset, sweep_id: str, event: SweepEvent) -> None:
    """Append ``event`` to the ``sweeps`` table."""
    from gradsweep import store

    store.write(dataset, "sweeps", sweep_id, [event])


def resume_plan(dataset: store.Dataset, spec: SweepSpec, sweep: str,
                cells: tuple[Cell, ...]) -> tuple[str, list[Cell]]:
    """The sweep to resume and its cells that are not ``ok``.

    Raises
    ------
    BadInput
        When the sweep is unknown or was run from a different spec.
    """
    from gradsweep import store

    sweep_id = store.resolve_sweep(dataset, sweep)
    row = store.sweeps(dataset).set_index(store.PARTITION).loc[sweep_id]
    if row["spec_hash"] != spec.spec_hash:
        raise BadInput(f"sweep {sweep_id} was run from a different spec "
                       f"(hash {str(row['spec_hash'])[:12]} != {spec.spec_hash[:12]}); "
                       "resume needs the same spec", where=spec.path)
    stored = store.read(dataset, "cells", [sweep_id], columns=["cell_id", "status"])
    ok = set(stored.loc[stored["status"] == "ok", "cell_id"])
    redo = {c.group_id for c in cells if c.cell_id not in ok}  # whole groups: members pair
    return sweep_id, [c for c in cells if c.group_id in redo]


def windows(groups: Iterable[Group], workers: int = 1,
            cells: int = WINDOW_CELLS) -> Iterator[list[Group]]:
    """``groups`` in consecutive windows of at most ``cells`` members (one group at
    least), each with at least ``WINDOW_GROUPS_PER_WORKER * workers`` groups."""
    window: list[Group] = []
    members = 0
    for group in groups:
        full = window and members + len(group.members) > cells
        if full and len(window) >= WINDOW_GROUPS_PER_WORKER * workers:
            yield window
            window, members = [], 0
        window.append(group)
        members += len(group.members)
    if window:
        yield window


def sweep_tasks(groups: Sequence[Group], settings: MeasureSettings, *, block_major: bool,
                workers: int = 1, cells: int = WINDOW_CELLS) -> Iterator[BlockTask]:
    """Every block of every group, made as they are consumed.

    ``block_major`` (fresh processes per pass): window by window (:func:`windows`),
    each window's first blocks, then its second blocks, ...; so each group's blocks
    run in different processes and a group is stored once its window's last pass
    reaches it. Otherwise group by group (:func:`gradsweep.worker.block_tasks`).
    """
    if not block_major:
        yield from block_tasks(groups, settings, block_major=False)
        return
    for window in windows(groups, workers, cells):
        yield from block_tasks(window, settings, block_major=True)


def carried_loops(dataset: store.Dataset, cells: Sequence[Cell],
                  settings: MeasureSettings) -> dict[str, int]:
    """``cell_id -> loops`` of the newest ``ok`` row the store holds for each of ``cells``
    (any earlier sweep): the counts a rerun starts from (``[measure] carry_loops``;
    :attr:`BlockTask.carried`). Empty when carrying is off or nothing was measured."""
    from pyarrow import dataset as pads

    from gradsweep import store

    if not settings.carry_loops or not cells:
        return {}
    ids = sorted({c.cell_id for c in cells})
    rows = store.read(dataset, "cells", columns=["loops"],
                      filter=(pads.field("status") == "ok") & pads.field("cell_id").isin(ids)
                      & pads.field("loops").is_valid())
    newest = rows.sort_values("recorded_at", kind="stable").drop_duplicates("cell_id",
                                                                             keep="last")
    return dict(zip(newest["cell_id"], newest["loops"].astype(int)))


def with_carried(tasks: Iterable[BlockTask], loops: dict[str, int]) -> Iterator[BlockTask]:
    """``tasks`` with the carried loop counts (:func:`carried_loops`) of their members."""
    for task in tasks:
        known = tuple((c.cell_id, loops[c.cell_id]) for c in task.group.members
                      if c.cell_id in loops)
        yield replace(task, carried=known) if known else task


def profile_phase(executor, cells: list[Cell], spec: SweepSpec, dataset: store.Dataset,
                  sweep_id: str) -> list[str]:
    """Line-profile the ok cells the spec asks for; store rows, return errors.

    Runs after the timing loop has drained: profiling never changes a timing.
    """
    from gradsweep import profile, store

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


@dataclass
class GroupCollector:
    """Blocks of each group as they arrive; a group's merged rows once all are in.

    Keeps only unfinished groups: a finished group's rows go to the store and
    leave memory.
    """

    repeats: int
    peaks: dict[str, dict[str, float]]
    _blocks: dict[str, dict[int, tuple[CellResult, ...]]] = field(default_factory=dict)

    def add(self, outcome: BlockOutcome) -> tuple[CellResult, ...]:
        """Record one block; the group's rows (one per member) when it was the last."""
        group = outcome.task.group
        blocks = self._blocks.setdefault(group.group_id, {})
        blocks[outcome.task.block] = outcome.rows
        if len(blocks) < self.repeats:
            return ()
        del self._blocks[group.group_id]
        ordered = [blocks[b] for b in sorted(blocks)]
        first = ordered[0][0]
        peak = self.peaks.get(first.node or "", {}).get(first.dtype)
        return tuple(merge_blocks([rows[i] for rows in ordered], peak)
                     for i in range(len(group.members)))


@dataclass
class _Tally:
    """What a sweep did so far: counts per status, in-block seconds, and the ok cells'
    ids when ``keep_ok`` (the profile phase needs them)."""

    counts: dict[str, int] = field(default_factory=dict)
    task_s: float = 0.0
    keep_ok: bool = True
    ok: set[str] = field(default_factory=set)

    def add(self, rows: Sequence[CellResult]) -> None:
        """Count one group's rows (or skipped rows); its blocks' seconds count once."""
        for r in rows:
            self.counts[r.status] = self.counts.get(r.status, 0) + 1
            if r.status == "ok" and self.keep_ok:
                self.ok.add(r.cell_id)
        self.task_s += max((r.duration_s or 0.0 for r in rows), default=0.0)


def _store_rows(dataset: store.Dataset, sweep_id: str,
                groups: Sequence[Sequence[CellResult]], tally: _Tally,
                on_result: Callable[[CellResult], None]) -> None:
    """Write the rows of ``groups`` durably (one file), then count each group and report
    its rows: a cell reported done is stored."""
    from gradsweep import store

    rows = [r for group in groups for r in group]
    if rows:
        store.write(dataset, "cells", sweep_id, [r.row() for r in rows])
        for group in groups:
            tally.add(group)
        for r in rows:
            on_result(r)


@dataclass
class _Finished:
    """Rows of finished groups waiting to be stored (then reported) together."""

    dataset: store.Dataset
    sweep_id: str
    tally: _Tally
    on_result: Callable[[CellResult], None]
    groups: list[Sequence[CellResult]] = field(default_factory=list)
    rows: int = 0
    since: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def longest_wait_s(self, now: float) -> float:
        """Seconds a held row may wait: :data:`FLUSH_SECONDS`, stretched as the sweep
        goes on (by its seconds so far over :data:`FLUSH_STRETCH_S`, 1 to
        :data:`FLUSH_MAX_STRETCH` times)."""
        stretch = min(FLUSH_MAX_STRETCH, max(1.0, (now - self.started) / FLUSH_STRETCH_S))
        return FLUSH_SECONDS * stretch

    def add(self, rows: Sequence[CellResult]) -> None:
        """Hold one group's ``rows`` (none: only check the time); store and report what
        is held once it is big or old enough."""
        now = time.monotonic()
        if rows:
            if not self.groups:
                self.since = now
            self.groups.append(rows)
            self.rows += len(rows)
        if self.rows >= FLUSH_ROWS or (
                self.groups and now - self.since >= self.longest_wait_s(now)):
            self.flush()

    def flush(self) -> None:
        """Store every held row (one file), then report them."""
        groups, self.groups, self.rows = self.groups, [], 0
        _store_rows(self.dataset, self.sweep_id, groups, self.tally, self.on_result)


def _measure_groups(spec: SweepSpec, dataset: store.Dataset, executor, sweep_id: str,
                    cells: list[Cell], tally: _Tally,
                    on_result: Callable[[CellResult], None],
                    on_block: Callable[[BlockProgress], None],
                    carried: dict[str, int]) -> float:
    """Skip what exceeds the memory budget, probe the nodes, run every block (members
    starting from the ``carried`` loop counts); the seconds the blocks took on the wall
    clock."""
    from gradsweep import store

    runnable, skipped = over_budget(cells, spec.measure, spec.plugins)
    _store_rows(dataset, sweep_id, [skipped], tally, on_result)
    nodes = executor.nodes(runnable)
    store.write(dataset, "nodes", sweep_id, nodes)
    peaks = peaks_of(nodes)
    collector = GroupCollector(spec.measure.repeats, peaks)
    groups = groups_of(runnable)
    total, done, t0 = len(groups) * spec.measure.repeats, 0, time.perf_counter()
    tasks = with_carried(sweep_tasks(groups, spec.measure,
                                     block_major=getattr(executor, "processes", False),
                                     workers=getattr(executor, "workers", 1),
                                     cells=WINDOW_CELLS),
                         carried)
    finished = _Finished(dataset, sweep_id, tally, on_result)
    try:
        for outcome in executor.run_blocks(tasks, spec.measure, spec.plugins, peaks):
            if outcome is None:  # a poll that finished no block: the chance to store what waits
                finished.add(())
                continue
            finished.add(collector.add(outcome))
            done += 1
            on_block(BlockProgress(done, total, time.perf_counter() - t0))
    except KeyboardInterrupt:  # finished groups are stored and reported, then the sweep stops
        finished.flush()
        raise
    finished.flush()
    return time.perf_counter() - t0


def run_sweep(spec: SweepSpec, dataset: store.Dataset, executor, *, resume: str | None = None,
              on_start: Callable[[str, int], None] = lambda sweep_id, n: None,
              on_result: Callable[[CellResult], None] = lambda result: None,
              on_block: Callable[[BlockProgress], None] = lambda progress: None,
              expansion: Expansion | None = None) -> SweepOutcome:
    """Run (or resume) a sweep of ``spec`` into ``dataset`` with ``executor``.

    The sweep's work is its groups, each in ``repeats`` blocks (DESIGN.md,
    Measurement). ``on_start(sweep_id, cells)`` is called before any cell runs,
    ``on_result`` for every cell once its row is stored, and ``on_block`` with
    the blocks' progress as each block finishes (cells finish in bursts, when
    their group's last block is in; blocks at a steady pace). A resumed sweep
    reruns every group with a cell that is not ``ok``.
    """
    from gradsweep import store

    expansion = expansion or expand(spec)
    if resume:
        sweep_id, cells = resume_plan(dataset, spec, resume, expansion.cells)
    else:
        sweep_id, cells = new_sweep_id(), list(expansion.cells)
    total = len(expansion.cells)
    write_event(dataset, sweep_id, sweep_event(
        spec, "resumed" if resume else "started", "running", total))
    on_start(sweep_id, len(cells))
    tally, status, wall_s = _Tally(keep_ok=spec.measure.profile), "failed", 0.0
    carried, kept = carried_loops(dataset, cells, spec.measure), []

    def stored(result: CellResult) -> None:  # counts the ok cells that ran at a carried count
        if result.status == "ok" and carried.get(result.cell_id) == result.loops:
            kept.append(result.cell_id)
        on_result(result)

    try:
        wall_s = _measure_groups(spec, dataset, executor, sweep_id, cells, tally, stored,
                                 on_block, carried)
        ok = [c for c in cells if c.cell_id in tally.ok] if spec.measure.profile else []
        profile_errors = profile_phase(executor, ok, spec, dataset, sweep_id)
        status = "finished"
    except KeyboardInterrupt:
        status = "cancelled"
        raise
    finally:
        with contextlib.suppress(StoreError) if status == "failed" else contextlib.nullcontext():
            write_event(dataset, sweep_id, sweep_event(spec, status, status, total))
    store.compact(dataset, sweep_id)  # a finished sweep reads as one file per table
    return SweepOutcome(sweep_id, status, tally.counts, len(expansion.dropped),
                        wall_s=wall_s, task_s=tally.task_s,
                        workers=getattr(executor, "workers", 1),
                        profile_errors=tuple(profile_errors), loops_carried=len(carried),
                        loops_kept=len(kept))
