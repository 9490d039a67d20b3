"""One block of one group: build each member's case, verify it, then time the members
side by side in shuffled rounds; and the one place a result row is assembled.

No member is timed until its gradients agree with the float64 reference
(DESIGN.md, Correctness before speed). Any failure becomes that member's row
with its status and a one-line error; nothing here raises for a bad member.
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from gradsweep import env, measure, stats
from gradsweep.impls.base import Case, SkipCell, forward_for, is_peer, reference_for
from gradsweep.impls.gradcheck import TOLERANCE, max_rel_err
from gradsweep.impls.registry import load
from gradsweep.records import BlockTask, Cell, CellResult, Group, MeasureSettings, skeleton
from gradsweep.units import NS_PER_S


def error_text(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


@dataclass(frozen=True)
class Prepared:
    """A cell ready to time: its backward, case and (prepared) cache.

    ``cache`` is the forward's cache when the backward has a ``prepare`` hook (a peer:
    ``state`` is then what the hook built from it, e.g. torch's tensors and graph),
    kept so that the state can be built again on a moved case (:func:`_relayout`).
    """

    backward: Any
    case: Case
    state: Any
    flops: int
    cache: Any = None

    def call(self) -> Any:
        """One backward call, as timed."""
        return self.backward(self.case, self.state)


def prepare(cell: Cell, plugins: tuple[str, ...] = ()) -> tuple[Prepared, float]:
    """Build the case, run the variant once and check it against the reference.

    Returns the prepared cell and its max_rel_err (DESIGN.md's error measure
    against the float64 reference on the same inputs).
    """
    registry = load(plugins)
    kernel = registry.kernel(cell.kernel)
    backward = registry.backward(cell.variant)
    made = kernel.make_case(cell.dims, cell.dtype, cell.seed, cell.clip_value, cell.clip_norm)
    case = replace(made, threads=cell.threads)
    forward = forward_for(kernel, backward)
    _, cache = forward(case)
    hook = getattr(backward, "prepare", None)
    state = hook(case, cache) if hook else cache
    grads = backward(case, state)
    case64 = case.astype("float64")
    _, cache64 = forward(case64)
    want = reference_for(kernel, cell.variant)(case64, cache64)
    err = max_rel_err(grads, want)
    return Prepared(backward, case, state, kernel.flops(cell.dims),
                    cache=cache if hook else None), err


def correctness_error(err: float, dtype: str) -> str | None:
    """The one tolerance verdict: None when ``err`` is within ``dtype``'s tolerance,
    else the one-line reason the variant is ``incorrect`` (DESIGN.md tolerances)."""
    tolerance = TOLERANCE[dtype]
    if math.isfinite(err) and err <= tolerance:
        return None
    return f"max_rel_err {err:.3g} exceeds the {dtype} tolerance {tolerance:g}"


def ok_result(cell: Cell, err: float, timing: measure.Timing, *, flops: int,
              memory: measure.Memory | None, load: float, peak: float | None = None,
              warnings: tuple[str, ...] = (), **extra: Any) -> CellResult:
    """The one place an ``ok`` row is assembled: summary, warnings, memory, roofline.

    ``warnings`` are added to the timing's own (``measure.timing_warnings``);
    ``peak`` is the node's GEMM GFLOP/s for the cell's dtype.
    """
    gflops = flops / timing.median_ns if timing.median_ns else None
    found = measure.timing_warnings(timing, load_avg=load, cores=env.collect().cores)
    return skeleton(
        cell, "ok", max_rel_err=err, samples_ns=tuple(timing.samples_ns), loops=timing.loops,
        warmups=timing.warmups, first_ns=timing.first_ns, median_ns=timing.median_ns,
        mad_ns=timing.mad_ns, ci_low_ns=timing.ci_low_ns, ci_high_ns=timing.ci_high_ns,
        warnings=(*found, *warnings), load_avg=load,
        peak_bytes=memory.peak_bytes if memory else None,
        retained_bytes=memory.retained_bytes if memory else None,
        alloc_count=memory.alloc_count if memory else None,
        flops=flops, gflops=gflops, peak_fraction=gflops / peak if gflops and peak else None,
        **extra)


def stamped(result: CellResult, started: datetime | None = None, t0: float | None = None,
            tree: str | None = None) -> CellResult:
    """The one environment stamping: ``result`` with the machine, where and when it ran.

    ``tree`` is the source tree whose git state is recorded (default: this
    package's repository); ``started``/``t0`` (a ``perf_counter`` reading) give
    ``started_at`` and ``duration_s`` when known.
    """
    machine = env.collect(tree)
    when = {} if started is None else {"started_at": started}
    if t0 is not None:
        when["duration_s"] = time.perf_counter() - t0
    return replace(
        result, node=env.ray_node_id() or machine.host, host=machine.host, cpu=machine.cpu,
        cores=machine.cores, blas=machine.blas, numpy_version=machine.numpy_version,
        python_version=machine.python_version, openblas_coretype=machine.openblas_coretype,
        git_commit=machine.git_commit, git_dirty=machine.git_dirty,
        load_avg=result.load_avg if result.load_avg is not None else env.load_avg(), **when)


class CellTimeout(BaseException):  # noqa: N818 - not an Exception: a member must not catch it
    """Raised in the member's process by SIGALRM when its ``timeout_s`` has passed."""


@contextmanager
def deadline(seconds: float) -> Iterator[bool]:
    """Raise :class:`CellTimeout` in this thread after ``seconds`` (main thread only).

    Yields whether the deadline is armed: signals reach only the main thread,
    which is where Ray runs a task and where ``--local`` runs blocks.
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return

    def fire(signum, frame):
        raise CellTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class _Member:
    """One member's state inside a block (mutable; never leaves :func:`run_block`)."""

    cell: Cell
    prepared: Prepared | None = None
    err: float | None = None
    loops: int = 1
    first_ns: float = math.nan
    warmups: int = 0
    settled: bool = True
    cpu_ns: list[float] = field(default_factory=list)
    wall_ns: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    failure: CellResult | None = None
    spent_s: float = 0.0


def rounds_per_block(settings: MeasureSettings) -> int:
    """Rounds in each block: ``samples`` spread over ``repeats`` blocks, at least
    ``stats.MIN_ROUNDS`` (a block needs that many pairs for an estimate)."""
    return max(stats.MIN_ROUNDS, math.ceil(settings.samples / max(settings.repeats, 1)))


def _failed(member: _Member, exc: BaseException, settings: MeasureSettings) -> CellResult:
    """The failure row of ``member``: skipped, timeout or error, with what it did."""
    cell = member.cell
    if isinstance(exc, SkipCell):
        return skeleton(cell, "skipped", str(exc))
    if isinstance(exc, CellTimeout):
        return skeleton(cell, "timeout", f"cell exceeded timeout_s {settings.timeout_s:g}")
    if isinstance(exc, MemoryError):
        return skeleton(cell, "error", f"MemoryError: {exc or 'out of memory'}")
    return skeleton(cell, "error", error_text(exc))


def _guarded(member: _Member, settings: MeasureSettings, step, *, interrupts: bool) -> bool:
    """Run ``step()`` for ``member`` within what is left of its ``timeout_s``.

    Any failure becomes the member's row (it fails alone) and False. With
    ``interrupts``, a KeyboardInterrupt or SystemExit raised by the member's
    code is its error too (in a worker process no user presses Ctrl-C).
    """
    if member.failure is not None:
        return False
    caught = (Exception, CellTimeout, KeyboardInterrupt, SystemExit) if interrupts else (
        Exception, CellTimeout, SystemExit)
    t0 = time.perf_counter()
    try:
        with deadline(settings.timeout_s - member.spent_s):
            step()
        return True
    except caught as exc:
        member.failure = _failed(member, exc, settings)
        return False
    finally:
        member.spent_s += time.perf_counter() - t0


def _prepare(member: _Member, plugins: tuple[str, ...]) -> None:
    prepared, err = prepare(member.cell, plugins)
    member.err = err
    wrong = correctness_error(err, member.cell.dtype)
    if wrong:
        member.failure = skeleton(member.cell, "incorrect", wrong, max_rel_err=err)
    else:
        member.prepared = prepared


#: Warmup samples each member takes in a block, after loop calibration (which has already
#: run it for about twice ``min_time_s``). In shuffled rounds the other members evict a
#: member's caches between its samples, so a long per-member warmup to a steady state buys
#: nothing there; what warmup must cover (first-call paths, page faults, the allocator's
#: arenas) is done in a few calls. Blocks therefore take a fixed short warmup.
BLOCK_WARMUPS = 2
#: Warmup samples of a member whose loop count an earlier block calibrated (so this
#: process has run it only once, untimed, before): one, as pyperf's workers take one
#: warmup at the loop count its first process calibrated; its samples are primed too.
CALIBRATED_WARMUPS = 1
#: The stream of a block's seed that orders its members' preparation and calibration, so
#: that no member is always allocated first or calibrated last (the rounds' own order is
#: the seed's main stream). With a fixed order, ten identical tiny members timed over
#: 100k cells came out in that order, first +0.52% to last -0.44% (tests/benchmarks/scale.py).
ORDER_STREAM = 1
#: Rounds between two re-materialisations of every member's case and cache, the first
#: before round 0 (so even a block of 3 rounds times its members at random offsets).
#: Measured (docs/noise.md): copying every round bought nothing over every 4 rounds, at up
#: to 6% of a 10 ms sample per copy.
RELAYOUT_EVERY_ROUNDS = 4


def _calibrate(member: _Member, settings: MeasureSettings, clock: measure.Clock,
               loops: int | None = None, carried: int | None = None) -> None:
    """First call, loop count (``loops`` when an earlier block calibrated it, else
    ``carried`` from an earlier sweep while it still holds, else calibrated), warmup."""
    call = member.prepared.call
    member.first_ns = float(measure.run_sample(call, 1, clock))
    min_time_ns = settings.min_time_s * NS_PER_S
    if loops is None:
        held = carried is not None and measure.loops_hold(call, carried, min_time_ns, clock)
        member.loops = carried if held else measure.calibrate_loops(call, min_time_ns, clock)
        member.warmups = min(BLOCK_WARMUPS, settings.max_warmups)
    else:
        member.loops = loops
        member.warmups = min(CALIBRATED_WARMUPS, settings.max_warmups)
    for _ in range(member.warmups):
        measure.run_sample(call, member.loops, clock)


def _moved(prepared: Prepared, rng: np.random.Generator) -> Prepared:
    """``prepared`` with its case and cache copied to fresh buffers at random offsets; a
    member with a ``prepare`` hook (a peer) gets its state built again from the moved
    copies, since the copy cannot move what the hook made (torch's tensors and graph)."""
    hook = getattr(prepared.backward, "prepare", None)
    if hook is None:
        case, state = measure.rematerialise((prepared.case, prepared.state), rng)
        return replace(prepared, case=case, state=state)
    case, cache = measure.rematerialise((prepared.case, prepared.cache), rng)
    return replace(prepared, case=case, cache=cache, state=hook(case, cache))


def _relayout(members: list[_Member], settings: MeasureSettings, rng: np.random.Generator,
              interrupts: bool) -> None:
    """Every member's case and cache copied to fresh buffers at random offsets, outside
    the clock (Stabilizer, Curtsinger & Berger 2013; docs/noise.md); a member whose
    state fails to build again fails alone."""
    for m in members:
        if m.prepared is not None and m.failure is None:
            def move(m=m) -> None:
                m.prepared = _moved(m.prepared, rng)

            _guarded(m, settings, move, interrupts=interrupts)


def _timed_rounds(live: list[_Member], task: BlockTask, settings: MeasureSettings,
                  interrupts: bool) -> None:
    """Calibrate and warm every member, then the shuffled rounds (GC paused)."""
    threads = task.group.members[0].threads
    clock = measure.ranking_clock(settings.clock, threads)
    cpu = measure.cpu_clock(threads)
    rng = np.random.default_rng(task.seed)

    def take(i: int, r: int) -> bool:
        m = live[i]

        def sample() -> None:
            cpu_ns, wall_ns = measure.timed_sample(m.prepared.call, m.loops, cpu, primed=True)
            m.cpu_ns.append(cpu_ns)
            m.wall_ns.append(wall_ns)
            m.rounds.append(r)

        return _guarded(m, settings, sample, interrupts=interrupts)

    given, carried = dict(task.loops), dict(task.carried)
    with measure.gc_paused():
        for m in live:
            _guarded(m, settings,
                     lambda m=m: _calibrate(m, settings, clock, given.get(m.cell.cell_id),
                                            carried.get(m.cell.cell_id)),
                     interrupts=interrupts)
        alive = [m for m in live if m.failure is None]
        live[:] = alive
        measure.interleaved_rounds(
            len(live), rounds_per_block(settings), rng, take,
            before_round=lambda r: r % RELAYOUT_EVERY_ROUNDS == 0 and _relayout(
                live, settings, rng, interrupts))


def _block_row(member: _Member, task: BlockTask, settings: MeasureSettings,
               peaks: dict[str, float] | None, load: float) -> CellResult:
    """The member's row for this block (samples of this block only)."""
    if member.failure is not None:
        return member.failure
    samples = member.cpu_ns if settings.clock == "cpu" else member.wall_ns
    timing = measure.summarise(samples, loops=member.loops, warmups=member.warmups,
                               first_ns=member.first_ns, warmup_settled=member.settled)
    # tracemalloc sees numpy's buffers, not torch's: no peer memory; once per member (block 0)
    wanted = settings.memory and task.block == 0 and not is_peer(member.cell.variant)
    memory = measure.memory_pass(member.prepared.call) if wanted else None
    return ok_result(member.cell, member.err, timing, flops=member.prepared.flops,
                     memory=memory, load=load, peak=(peaks or {}).get(member.cell.dtype),
                     clock=settings.clock, cpu_ns=tuple(member.cpu_ns),
                     wall_ns=tuple(member.wall_ns), sample_block=(task.block,) * len(samples),
                     sample_round=tuple(member.rounds), blocks=1, pids=(os.getpid(),),
                     descheduled=measure.descheduled(member.cpu_ns, member.wall_ns))


def run_block(task: BlockTask, settings: MeasureSettings, plugins: tuple[str, ...] = (),
              peaks: dict[str, float] | None = None, *,
              interrupts: bool = False) -> tuple[CellResult, ...]:
    """One block of a group in this process: a row per member, never a raise.

    Verify every member against the reference, calibrate and warm each up
    (in an order shuffled per block), then ``rounds_per_block`` rounds of
    shuffled samples with layout randomisation between rounds, then each
    member's untimed memory pass.
    A member that raises, is incorrect or exceeds its ``timeout_s`` fails
    alone; the others go on.

    Parameters
    ----------
    peaks : dict[str, float], optional
        This node's GEMM peak in GFLOP/s per dtype, for ``peak_fraction``.
    interrupts : bool
        Count a member's KeyboardInterrupt as its error (worker processes).
    """
    started, t0 = datetime.now(UTC), time.perf_counter()
    members = [_Member(cell) for cell in task.group.members]
    load_before = env.load_avg()
    order = np.random.default_rng([task.seed, ORDER_STREAM]).permutation(len(members))
    with measure.set_threads(task.group.members[0].threads):
        for m in (members[i] for i in order):  # allocation and calibration in a random order
            _guarded(m, settings, lambda m=m: _prepare(m, plugins), interrupts=interrupts)
        live = [members[i] for i in order if members[i].failure is None]
        _timed_rounds(live, task, settings, interrupts)
        load = max(load_before, env.load_avg())
        rows = [_block_row(m, task, settings, peaks, load) for m in members]
    return tuple(stamped(r, started, t0) for r in rows)


#: A member's status over its blocks: the first of these that any block had.
STATUS_ORDER = ("crashed", "incorrect", "error", "timeout", "skipped", "ok")


def block_matrix(samples: Sequence[float], blocks: Sequence[int],
                 rounds: Sequence[int]) -> np.ndarray:
    """Samples as an array (blocks, rounds) with NaN where none was taken.

    Blocks and rounds are renumbered densely in sorted order, so two members of
    one group share rows and columns when they share block and round numbers.
    """
    block_ids = sorted(set(blocks))
    n_rounds = max(rounds, default=-1) + 1
    out = np.full((len(block_ids), n_rounds), np.nan)
    row = {b: i for i, b in enumerate(block_ids)}
    for t, b, r in zip(samples, blocks, rounds):
        out[row[b], r] = t
    return out


def _cell_of(row: CellResult) -> Cell:
    return Cell(row.kernel, row.variant, tuple(row.dims.items()), row.dtype, row.threads,
                row.seed, row.clip_value, row.clip_norm)


def _merged_warnings(ok: Sequence[CellResult], cpu: Sequence[float],
                     wall: Sequence[float]) -> tuple[str, ...]:
    found = []
    late = measure.descheduled(cpu, wall)
    if late:
        found.append(f"descheduled: {late} of {len(cpu)} samples took more than "
                     f"{measure.DESCHEDULED_RATIO:g}x their CPU time on the wall clock")
    pids = {p for r in ok for p in r.pids}
    if len(ok) > 1 and len(pids) < len(ok):
        found.append(f"shared-process: {len(ok)} blocks ran in {len(pids)} process(es); "
                     "the between-process variance is not fully sampled")
    return tuple(found)


def merge_blocks(rows: Sequence[CellResult], peak: float | None = None) -> CellResult:
    """One member's row from its rows of each block of the group.

    A failure in any block is the member's status (the worst, :data:`STATUS_ORDER`).
    Otherwise the samples of all blocks, both clocks, their blocks and rounds;
    ``median_ns`` the geometric mean of the block medians and its interval the
    random-effects one (:func:`gradsweep.stats.time_estimate`).
    """
    worst = min(rows, key=lambda r: STATUS_ORDER.index(r.status))
    if worst.status != "ok":
        return replace(worst, blocks=len(rows))
    ok = sorted(rows, key=lambda r: r.sample_block[:1])
    samples = [t for r in ok for t in r.samples_ns]
    blocks = [b for r in ok for b in r.sample_block]
    rounds = [k for r in ok for k in r.sample_round]
    cpu, wall = [t for r in ok for t in r.cpu_ns], [t for r in ok for t in r.wall_ns]
    timing = measure.summarise(samples, loops=max(r.loops or 1 for r in ok),
                               warmups=sum(r.warmups or 0 for r in ok), first_ns=ok[0].first_ns,
                               warmup_settled=all(not any(w.startswith("warmup-unsettled")
                                                          for w in r.warnings) for r in ok))
    est = stats.time_estimate(block_matrix(samples, blocks, rounds))
    if est is not None:
        timing = replace(timing, median_ns=est.ratio, ci_low_ns=est.low, ci_high_ns=est.high)
    first = ok[0]
    measured = next((r for r in ok if r.peak_bytes is not None), None)
    memory = (measure.Memory(measured.peak_bytes, measured.retained_bytes, measured.alloc_count)
              if measured else None)
    merged = ok_result(
        _cell_of(first), max(r.max_rel_err or 0.0 for r in ok), timing, flops=first.flops,
        memory=memory, load=max(r.load_avg for r in ok), peak=peak,
        warnings=_merged_warnings(ok, cpu, wall), clock=first.clock, cpu_ns=tuple(cpu),
        wall_ns=tuple(wall), sample_block=tuple(blocks), sample_round=tuple(rounds),
        blocks=len(ok), pids=tuple(dict.fromkeys(p for r in ok for p in r.pids)),
        descheduled=measure.descheduled(cpu, wall))
    return replace(merged, node=first.node, host=first.host, cpu=first.cpu, cores=first.cores,
                   blas=first.blas, numpy_version=first.numpy_version,
                   python_version=first.python_version,
                   openblas_coretype=first.openblas_coretype, git_commit=first.git_commit,
                   git_dirty=first.git_dirty, started_at=first.started_at,
                   duration_s=sum(r.duration_s or 0.0 for r in rows),
                   attempts=max(r.attempts for r in rows))


def _derived_seed(text: str) -> int:
    """A 64-bit seed from ``text`` (its sha256): stable across runs and platforms."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def block_seed(settings: MeasureSettings, group: Group, block: int) -> int:
    """A block's seed: from the spec's seed, the group and the block number."""
    return _derived_seed(f"{settings.seed}:{group.group_id}:{block}")


def pass_order(groups: Sequence[Group], settings: MeasureSettings, block: int) -> list[Group]:
    """The groups of one pass in an order shuffled per pass (reproducibly, from the
    spec's seed and the pass): what runs beside a pass's first or last blocks (the
    next pass's processes starting, the driver storing rows) and what ran before a
    block in its process then falls on different groups in different passes, as
    noise the intervals see, instead of on the same groups in every pass."""
    rng = np.random.default_rng(_derived_seed(f"{settings.seed}:pass:{block}"))
    return [groups[i] for i in rng.permutation(len(groups))]


def block_tasks(groups: Sequence[Group], settings: MeasureSettings, *,
                block_major: bool = True) -> list[BlockTask]:
    """Every block of every group.

    ``block_major``: all first blocks, then all second blocks, ..., each pass's
    groups in their own shuffled order (:func:`pass_order`): executors that give
    each pass fresh processes then run a group's blocks in different processes.
    Otherwise group by group, so groups finish (and are stored) one after another
    (one process for everything: ``--local``).
    """
    if block_major:
        return [BlockTask(g, b, block_seed(settings, g, b))
                for b in range(settings.repeats) for g in pass_order(groups, settings, b)]
    return [BlockTask(g, b, block_seed(settings, g, b))
            for g in groups for b in range(settings.repeats)]


class LoopCounts:
    """The loop count each member's first measured block calibrated, handed on to the
    group's later blocks (:attr:`BlockTask.loops`): every executor keeps one, so only a
    group's first block pays for calibration (about as long as two samples per member).
    A group is forgotten once its last block (``repeats - 1``) is done, so what is kept
    stays bounded by the groups in flight, not the sweep.
    """

    def __init__(self, repeats: int) -> None:
        self._last = repeats - 1
        self._known: dict[str, dict[str, int]] = {}

    def learn(self, task: BlockTask, rows: Sequence[CellResult]) -> None:
        """Remember the loop counts of ``rows`` (a block of ``task``'s group) not yet known."""
        if task.block >= self._last:
            self._known.pop(task.group.group_id, None)
            return
        known = self._known.setdefault(task.group.group_id, {})
        for row in rows:
            if row.status == "ok" and row.loops and row.cell_id not in known:
                known[row.cell_id] = int(row.loops)

    def given(self, task: BlockTask) -> BlockTask:
        """``task`` with the loop counts known for its members."""
        known = self._known.get(task.group.group_id)
        loops = tuple((c.cell_id, known[c.cell_id]) for c in task.group.members
                      if c.cell_id in known) if known else ()
        return replace(task, loops=loops) if loops else task


def run_group_here(group: Group, settings: MeasureSettings, plugins: tuple[str, ...] = (),
                   peaks: dict[str, float] | None = None) -> tuple[CellResult, ...]:
    """Every block of ``group`` in this process, one after another, merged per member."""
    counts, blocks = LoopCounts(settings.repeats), []
    for b in range(settings.repeats):
        task = counts.given(BlockTask(group, b, block_seed(settings, group, b)))
        blocks.append(run_block(task, settings, plugins, peaks))
        counts.learn(task, blocks[-1])
    peak = (peaks or {}).get(group.members[0].dtype)
    return tuple(merge_blocks([rows[i] for rows in blocks], peak)
                 for i in range(len(group.members)))


def run_cell(cell: Cell, settings: MeasureSettings, plugins: tuple[str, ...] = (),
             peaks: dict[str, float] | None = None) -> CellResult:
    """Verify, time and measure one cell (a group of one) in this process; every failure
    is a row, never a raise.

    Parameters
    ----------
    peaks : dict[str, float], optional
        This node's GEMM peak in GFLOP/s per dtype, for ``peak_fraction``.
    """
    return run_group_here(Group((cell,)), settings, plugins, peaks)[0]
