"""The paired A/B gate behind ``gradsweep ci``: process pairs, A B B A, sequential.

``gradsweep ci`` measures two revisions of the kernels against each other: the
base revision and the working tree (:mod:`.trees` checks both out side by
side). Two worker processes (:mod:`.side`), one per side, both pinned to the
same core, form a **process pair**; they take turns one sample at a time (the
driver sends one request and waits for the answer before the next), so they
never run at once and drift hits both alike. In pair ``p`` every cell still
undecided is prepared and verified on both sides, calibrated (the larger loop
count is used by both) and warmed up, then timed in rounds: in each round each
side takes one sample, the side that goes first alternating from round to
round (A B, B A, ...: A B B A turns) and the side that starts the pair (is
started, prepares, samples first) alternating from pair to pair. Between rounds
each side copies its case and cache to fresh buffers at random offsets (as
``worker.run_block`` does), so the layout one process happened to get is noise.

A process has its own speed and each pair its own small bias of one side
against the other (PLATFORM.md, "Where timing noise comes from"), which no
number of rounds inside the pair averages out. So pair ``p`` is block ``p`` of
both sides' rows (``sample_block = p``, ``sample_round`` the round), and the
candidate/base ratio is the random-effects combination over pairs
(``stats.paired_estimate``): a pair's bias is between-pair variance, part of
the interval, not a verdict. :mod:`.sequential` decides which cells get another
pair, up to a time budget. Both sweeps are stored with roles
``base``/``candidate`` and one ``ci_run``, and ``regress`` compares them the
same way.

The clock: by default CPU time of the timing thread (``measure.cpu_clock``),
not wall time: on a 2-core machine shared with other work a 1 ms LSTM sample's
wall time doubled and spread (MAD/median 17%) while its CPU time stayed put
(3.5%). Both clocks are stored with every sample; ``--clock wall`` ranks on
wall time. Each sample is preceded by one untimed call, so the side whose turn
it is starts with its caches warm after the other ran.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gradsweep import regress, runner, store, worker
from gradsweep.defaults import CI_SPEC
from gradsweep.errors import BadInput
from gradsweep.gate.sequential import MAX_PAIRS, Rule, run_sequential
from gradsweep.gate.trees import Trees, map_pythonpath
from gradsweep.measure import MALLOC_ENV
from gradsweep.records import (
    FAILED,
    Cell,
    CellResult,
    MeasureSettings,
    SweepSpec,
    new_sweep_id,
    skeleton,
)
from gradsweep.spec import expand
from gradsweep.stats import RatioEstimate

ROLES = ("base", "candidate")
DEFAULT_SPEC = CI_SPEC
#: What the gate's samples rank on (both are stored): ``cpu``, the timing thread's
#: CPU time, which leaves out the time it was descheduled for other processes (the
#: dominant noise on a shared machine); ``wall``, perf_counter_ns, as sweeps may.
CLOCKS = ("cpu", "wall")
NS_PER_S = 1_000_000_000
#: Seconds a worker may take to start (imports numpy, scipy, the registry).
START_TIMEOUT_S = 120.0
WORKER = Path(__file__).with_name("side.py")


def round_order(round_: int, first: int) -> tuple[int, int]:
    """Which side samples first and second in a round (0 is base, 1 candidate).

    ``first`` starts round 0; rounds alternate, so the turns are A B B A A B ...
    and each side follows the other as often as it follows itself.

    >>> [round_order(r, 1) for r in range(3)]
    [(1, 0), (0, 1), (1, 0)]
    """
    a = (first + round_) % 2
    return a, 1 - a


def pin_cores(threads: int, allowed: set[int] | None = None) -> tuple[int, ...]:
    """The cores both sides are pinned to: the last ``threads`` of those allowed."""
    cores = sorted(allowed if allowed is not None else os.sched_getaffinity(0))
    return tuple(cores[-max(1, min(threads, len(cores))):])


def side_seed(settings: MeasureSettings, cell: Cell, pair: int, role: str) -> int:
    """The seed of one side's layout offsets for a cell in a pair."""
    text = f"{settings.seed}:{cell.cell_id}:{pair}:{role}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


class SideFailed(Exception):
    """A side could not do what was asked: its status, error and max_rel_err."""

    def __init__(self, status: str, error: str, max_rel_err: float | None = None,
                 role: str = ""):
        super().__init__(error)
        self.status, self.error, self.max_rel_err = status, error, max_rel_err
        self.role = role


@dataclass
class Worker:
    """The driver's handle on one side's worker process (restarted after a crash)."""

    role: str
    tree: str
    harness: str
    cores: tuple[int, ...]
    pythonpath: list[str]
    pycache: str | None = None
    info: dict = field(default_factory=dict)

    def start(self) -> None:
        """Start the process and check it imports ``impls`` from its own tree."""
        from multiprocessing.connection import Connection

        code = (f"import runpy; runpy.run_path({str(WORKER.resolve())!r}, "
                "run_name='__main__')")
        threads = str(len(self.cores))
        environ = {**os.environ, "PYTHONPATH": os.pathsep.join([self.tree, *self.pythonpath]),
                   "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads,
                   "MKL_NUM_THREADS": threads, **MALLOC_ENV}
        if self.pycache:
            environ["PYTHONPYCACHEPREFIX"] = self.pycache
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, self.tree, self.harness,
             ",".join(map(str, self.cores))], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            cwd=self.tree, env=environ)
        self.send = Connection(os.dup(self.proc.stdin.fileno()), readable=False)
        self.recv = Connection(os.dup(self.proc.stdout.fileno()), writable=False)
        try:
            self.info = self.call("hello", timeout=START_TIMEOUT_S)
        except SideFailed as exc:
            self.close()
            raise BadInput(f"the {self.role} worker did not start in {self.tree}: "
                           f"{exc.error} (see its stderr above)") from None
        self.check_origin()

    def check_origin(self) -> None:
        """BadInput unless this side imported ``impls`` from its tree."""
        where = os.path.realpath(self.info["impls"])
        if not where.startswith(os.path.realpath(self.tree) + os.sep):
            self.close()
            raise BadInput(f"the {self.role} worker imported impls from {where}, not from "
                           f"{self.tree}")

    def call(self, op: str, *args, timeout: float | None = None):
        """Send one request and wait for its value; SideFailed on a failure, crash or timeout."""
        try:
            return self._call(op, args, timeout)
        except SideFailed as exc:
            exc.role = self.role
            raise

    def _call(self, op: str, args: tuple, timeout: float | None):
        try:
            self.send.send((op, *args))
            if timeout is not None and not self.recv.poll(timeout):
                self.restart()
                raise SideFailed("timeout", f"{op} exceeded timeout_s {timeout:g}")
            reply = self.recv.recv()
        except (EOFError, OSError, BrokenPipeError):
            code = self.proc.poll()
            self.restart()
            raise SideFailed("crashed", f"the {self.role} worker died during {op} "
                             f"(exit code {code})") from None
        if reply[0] == "ok":
            return reply[1]
        raise SideFailed(*reply[1:])

    def restart(self) -> None:
        """Kill and start again (after a crash or timeout), unless it is starting."""
        self.close()
        if self.info:
            self.info = {}
            self.start()

    def close(self) -> None:
        """Ask the process to quit; kill it if it does not."""
        proc = getattr(self, "proc", None)
        if proc is None:
            return
        try:
            if proc.poll() is None:
                self.send.send(("quit",))
                proc.wait(timeout=5)
        except (OSError, BrokenPipeError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        for conn in (self.send, self.recv):
            conn.close()
        for pipe in (proc.stdin, proc.stdout):
            pipe.close()
        self.proc = None


def _not_timed(cell: Cell, failed: dict[str, SideFailed], role: str, tree: str) -> CellResult:
    """The row of one side of a cell that was not timed because a side failed."""
    if role in failed:
        f = failed[role]
        result = skeleton(cell, f.status, f.error, max_rel_err=f.max_rel_err)
    else:
        other = next(iter(failed))
        result = skeleton(cell, "skipped", f"not timed: the {other} side is "
                          f"{failed[other].status}: {failed[other].error}")
    return worker.stamped(result, tree=tree)


def _timed(workers: tuple[Worker, Worker], settings: MeasureSettings, pair: int, first: int,
           memory: bool, extra: dict) -> list[CellResult]:
    """Calibrate (shared loops), warm up, take the rounds, finish both sides."""
    limit = settings.timeout_s
    order = (workers[first], workers[1 - first])
    loops = max(w.call("calibrate", settings.min_time_s * NS_PER_S, timeout=limit)
                for w in order)
    for w in order:
        w.call("warmup", loops, settings.max_warmups, timeout=limit)
    for r in range(worker.rounds_per_block(settings)):
        for side in round_order(r, first):
            workers[side].call("sample", loops, r, timeout=limit)
    return [w.call("finish", loops, memory, pair, extra, timeout=limit) for w in workers]


def measure_cell(cell: Cell, workers: tuple[Worker, Worker], settings: MeasureSettings,
                 plugins: tuple[str, ...], clock: str = "cpu", pair: int = 0,
                 first: int = 0) -> list[CellResult]:
    """One cell in one process pair: ``[base row, candidate row]``; failures are rows.

    Parameters
    ----------
    pair : int
        The pair's index: the rows' ``sample_block``.
    first : int
        The side (0 base, 1 candidate) that prepares and samples first.
    """
    started = datetime.now(UTC)
    failed: dict[str, SideFailed] = {}
    for w in (workers[first], workers[1 - first]):
        try:
            w.call("prepare", cell, plugins, clock, side_seed(settings, cell, pair, w.role),
                   timeout=settings.timeout_s)
        except SideFailed as exc:
            failed[w.role] = exc
    if not failed:
        try:
            return _timed(workers, settings, pair, first, settings.memory and pair == 0,
                          {"started_at": started})
        except SideFailed as exc:
            failed[exc.role] = exc
    return [_not_timed(cell, failed, w.role, w.tree) for w in workers]


def start_workers(trees: Trees, repo: str, threads: int, first: int = 0
                  ) -> tuple[Worker, Worker]:
    """Both sides' processes pinned to the same cores, side ``first`` started first."""
    import gradsweep

    harness = str(Path(gradsweep.__file__).resolve().parent)
    entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    cores = pin_cores(threads)
    workers = {role: Worker(role, trees.paths[role], harness, cores,
                            map_pythonpath(entries, repo, trees.paths[role]), trees.pycache)
               for role in ROLES}
    started = []
    try:
        for role in (ROLES[first], ROLES[1 - first]):
            workers[role].start()
            started.append(workers[role])
    except BaseException:
        for w in started:
            w.close()
        raise
    return workers["base"], workers["candidate"]


@dataclass
class CellRows:
    """One cell's rows so far: per role, one row per pair it took part in."""

    cell: Cell
    rows: dict[str, list[CellResult]] = field(default_factory=lambda: {r: [] for r in ROLES})

    @property
    def failed(self) -> bool:
        """Whether a side was not ok in some pair (the cell is measured no more)."""
        return any(r.status != "ok" for rows in self.rows.values() for r in rows)

    def estimate(self) -> RatioEstimate | None:
        """Candidate over base, random effects over the pairs (None: too few rounds)."""
        if self.failed or not self.rows["base"]:
            return None
        base, cand = (regress.merged_samples(self.rows[r]) for r in ROLES)
        return regress.paired_block_estimate(base, cand)

    def merged(self, role: str) -> CellResult:
        """The role's row over every pair (``worker.merge_blocks``)."""
        return worker.merge_blocks(self.rows[role])


@dataclass(frozen=True)
class AbOutcome:
    """The two sweeps of one gate run and how it went.

    Attributes
    ----------
    ci_run, base_sweep, candidate_sweep : str
    counts : dict[str, dict[str, int]]
        Per role, cells per status.
    verdicts : dict[str, str]
        The sequential rule's final verdict per cell_id.
    pairs : int
        Process pairs run (the most any cell got).
    seconds : float
        Seconds of measurement.
    """

    ci_run: str
    base_sweep: str
    candidate_sweep: str
    counts: dict[str, dict[str, int]]
    verdicts: dict[str, str] = field(default_factory=dict)
    pairs: int = 0
    seconds: float = 0.0

    def failed(self, role: str) -> int:
        """Cells of ``role`` whose status counts as a failure."""
        return sum(self.counts[role].get(s, 0) for s in FAILED)


def new_ids() -> tuple[str, str, str]:
    """(ci_run, base sweep, candidate sweep), all distinct."""
    ids: list[str] = []
    while len(ids) < 3:
        candidate = new_sweep_id()
        if candidate not in ids:
            ids.append(candidate)
    return f"ci-{ids[0]}", ids[1], ids[2]


@dataclass(frozen=True)
class Look:
    """What the driver reports after each process pair."""

    pair: int
    cells: int
    seconds: float


def default_rule(settings: MeasureSettings, **given) -> Rule:
    """The sequential rule with the spec's ``repeats`` as the pairs before the first look
    (at least 2, at most ``max_pairs``); ``given`` overrides any field."""
    limit = given.get("max_pairs", MAX_PAIRS)
    return Rule(**{"min_pairs": min(max(2, settings.repeats), limit), **given})


def _pair_runner(cells: list[CellRows], spec: SweepSpec, trees: Trees, repo: str, clock: str,
                 on_pair: Callable[[Look], None], on_cell: Callable[[CellRows], None]):
    """The ``measure`` callback of the sequential rule: pair ``p`` over some cells."""
    t0 = time.monotonic()

    def measure(pair: int, todo: list[int]) -> None:
        first = pair % 2
        workers = start_workers(trees, repo, spec.measure.threads, first)
        try:
            for i in todo:
                rows = measure_cell(cells[i].cell, workers, spec.measure, spec.plugins, clock,
                                    pair, first)
                for role, row in zip(ROLES, rows):
                    cells[i].rows[role].append(row)
                on_cell(cells[i])
        finally:
            for w in workers:
                w.close()
        on_pair(Look(pair, len(todo), time.monotonic() - t0))
    return measure


def _store(dataset: store.Dataset, ids: dict[str, str], cells: list[CellRows]
           ) -> dict[str, dict[str, int]]:
    """Each role's merged rows written to its sweep; counts per status."""
    counts: dict[str, dict[str, int]] = {role: {} for role in ROLES}
    for role in ROLES:
        writer = runner.BatchWriter(dataset, ids[role])
        for c in cells:
            if c.rows[role]:
                row = c.merged(role)
                writer.add(row)
                counts[role][row.status] = counts[role].get(row.status, 0) + 1
        writer.flush()
    return counts


def run_ab(spec: SweepSpec, dataset: store.Dataset, trees: Trees, repo: str, *,
           rule: Rule | None = None, clock: str = "cpu",
           on_start: Callable[[str, str, str], None] = lambda run, base, cand: None,
           on_pair: Callable[[Look], None] = lambda look: None,
           on_cell: Callable[[CellRows], None] = lambda c: None) -> AbOutcome:
    """Measure every cell of ``spec`` on both trees in process pairs; store both sweeps.

    Parameters
    ----------
    trees : Trees
        Each side's source tree (and the shared bytecode cache).
    repo : str
        The repository whose PYTHONPATH entries are mapped into the trees.
    rule : Rule, optional
        The sequential rule (threshold, alpha, pairs, budget); by default
        :func:`default_rule` of the spec.
    clock : {"cpu", "wall"}
        What samples rank on (see :data:`CLOCKS`).
    """
    if clock not in CLOCKS:
        raise BadInput(f"unknown clock {clock!r} (expected one of {', '.join(CLOCKS)})",
                       key="--clock")
    rule = rule or default_rule(spec.measure)
    cells = [CellRows(c) for c in expand(spec).cells]
    ci_run, base_id, cand_id = new_ids()
    ids = {"base": base_id, "candidate": cand_id}
    for role in ROLES:
        runner.write_event(dataset, ids[role], runner.sweep_event(
            spec, "started", "running", len(cells), role, ci_run, tree=trees.paths[role]))
    on_start(ci_run, base_id, cand_id)
    measure = _pair_runner(cells, spec, trees, repo, clock, on_pair, on_cell)
    status, verdicts, t0 = "failed", [], time.monotonic()
    try:
        verdicts = run_sequential(len(cells), measure, lambda i: cells[i].estimate(), rule,
                                  failed=lambda i: cells[i].failed)
        status = "finished"
    except KeyboardInterrupt:
        status = "cancelled"
        raise
    finally:
        counts = _store(dataset, ids, cells)
        for role in ROLES:
            runner.write_event(dataset, ids[role], runner.sweep_event(
                spec, status, status, len(cells), role, ci_run, tree=trees.paths[role]))
    pairs = max((len(c.rows["base"]) for c in cells), default=0)
    return AbOutcome(ci_run, base_id, cand_id, counts,
                     {c.cell.cell_id: v for c, v in zip(cells, verdicts)}, pairs,
                     time.monotonic() - t0)
