"""The paired A/B gate behind ``gradsweep ci``: two revisions, one core, turns of A B B A.

``ci_command`` checks the base revision out into a temporary git worktree and
starts two worker processes (``gate/side.py``): base with the worktree
first on its import path, candidate with the working tree. Both are pinned to
the same core(s) and take turns one sample at a time in A B B A order (the
driver sends one request and waits for its answer before the next), so drift
hits both alike and they never run at once (DESIGN.md, Statistics; PLATFORM.md,
Timing noise). Per cell: both sides build and verify the cell (an incorrect or
failing side is recorded and the cell is not timed), both calibrate and the
larger loop count is used by both, both warm up, then the paired samples. Both
sweeps are stored with roles ``base``/``candidate`` and one ``ci_run``, and
``regress`` compares them paired.

Which code runs where (see ``gate/side.py``): the harness ``gradsweep`` is
the one running this driver (the candidate's) on both sides; ``gradsweep.impls`` and the
spec's plugins come from each side's tree. Entries of PYTHONPATH inside the
repository are mapped to the same place in the base worktree, so a plugin kept
in the repository (``tests/plugins``) is the base revision's on the base side.

The clock: by default the gate times CPU time (``time.process_time_ns``), not
wall time. On a 2-core machine shared with other work, a 1 ms LSTM sample's
wall time doubled and spread (MAD/median 17%) while its CPU time stayed put
(3.5%): wall time counts the slices the worker spent descheduled. With one
BLAS thread the kernel never waits, so CPU time is its cost; ``--clock wall``
restores the sweeps' clock. Each sample is preceded by one untimed call, so
the side whose turn it is starts with its caches warm after the other ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gradsweep import runner, store
from gradsweep.defaults import CI_SPEC
from gradsweep.errors import BadInput
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
from gradsweep.worker import stamped

ROLES = ("base", "candidate")
#: The order of turns within one round: A B B A (index 0 is base, 1 candidate).
ABBA = (0, 1, 1, 0)
DEFAULT_SPEC = CI_SPEC
#: What the gate's samples measure. ``cpu``: the worker's CPU time (process_time_ns), which
#: leaves out the time it was descheduled for other processes, the dominant noise on a
#: shared machine; ``wall``: perf_counter_ns, as sweeps measure. Pairing cancels drift either
#: way; CPU time also removes preemption (see the module docstring).
CLOCKS = ("cpu", "wall")
NS_PER_S = 1_000_000_000
GIT_TIMEOUT_S = 120.0
#: Seconds a worker may take to start (imports numpy, scipy, the registry).
START_TIMEOUT_S = 120.0
WORKER = Path(__file__).with_name("side.py")


def abba_order(samples: int) -> tuple[int, ...]:
    """Whose turn each sample is: rounds of A B B A, ``samples`` turns per side.

    Sample i of each side forms pair i; pairs are adjacent in time and which
    side goes first alternates. An odd count ends with one A B round.

    >>> abba_order(3)
    (0, 1, 1, 0, 0, 1)
    """
    turns = [ABBA[i % len(ABBA)] for i in range(2 * samples)]
    return tuple(turns)


def pin_cores(threads: int, allowed: set[int] | None = None) -> tuple[int, ...]:
    """The cores both sides are pinned to: the last ``threads`` of those allowed."""
    cores = sorted(allowed if allowed is not None else os.sched_getaffinity(0))
    return tuple(cores[-max(1, min(threads, len(cores))):])


def map_pythonpath(entries: list[str], repo: str, tree: str) -> list[str]:
    """PYTHONPATH entries with those inside ``repo`` moved to the same place in ``tree``."""
    root = os.path.realpath(repo)
    mapped = []
    for entry in entries:
        real = os.path.realpath(entry) if entry else entry
        if real == root or real.startswith(root + os.sep):
            mapped.append(os.path.join(tree, os.path.relpath(real, root)))
        else:
            mapped.append(entry)
    return mapped


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
    return stamped(result, tree=tree)


def _timed(cell: Cell, workers: tuple[Worker, Worker], settings: MeasureSettings,
           extra: dict) -> list[CellResult]:
    """Calibrate (shared loops), warm up, take the A B B A samples, finish both sides."""
    limit = settings.timeout_s
    loops = max(w.call("calibrate", settings.min_time_s * NS_PER_S, timeout=limit)
                for w in workers)
    for w in workers:
        w.call("warmup", loops, settings.max_warmups, timeout=limit)
    for side in abba_order(settings.samples):
        workers[side].call("sample", loops, timeout=limit)
    return [w.call("finish", loops, settings.memory, extra, timeout=limit) for w in workers]


def run_pair(cell: Cell, workers: tuple[Worker, Worker], settings: MeasureSettings,
             plugins: tuple[str, ...], clock: str = "cpu") -> list[CellResult]:
    """One cell on both sides: ``[base result, candidate result]``; failures are rows."""
    started = datetime.now(UTC)
    failed: dict[str, SideFailed] = {}
    for w in workers:
        try:
            w.call("prepare", cell, plugins, clock, timeout=settings.timeout_s)
        except SideFailed as exc:
            failed[w.role] = exc
    if not failed:
        try:
            return _timed(cell, workers, settings, {"started_at": started})
        except SideFailed as exc:
            failed[exc.role] = exc
    return [_not_timed(cell, failed, w.role, w.tree) for w in workers]


@dataclass(frozen=True)
class AbOutcome:
    """The two sweeps of one paired run."""

    ci_run: str
    base_sweep: str
    candidate_sweep: str
    counts: dict[str, dict[str, int]]

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


def start_workers(trees: dict[str, str], repo: str, threads: int) -> tuple[Worker, Worker]:
    """Both sides' processes, pinned to the same cores."""
    import gradsweep

    harness = str(Path(gradsweep.__file__).resolve().parent)
    entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    cores = pin_cores(threads)
    workers = []
    try:
        for role in ROLES:
            w = Worker(role, trees[role], harness, cores,
                       map_pythonpath(entries, repo, trees[role]))
            w.start()
            workers.append(w)
    except BaseException:
        for w in workers:
            w.close()
        raise
    return workers[0], workers[1]


def run_ab(spec: SweepSpec, dataset: store.Dataset, trees: dict[str, str], repo: str, *,
           on_start: Callable[[str, str, str], None] = lambda run, base, cand: None,
           on_pair: Callable[[CellResult, CellResult], None] = lambda b, c: None,
           clock: str = "cpu") -> AbOutcome:
    """Measure every cell of ``spec`` on both trees, paired; store both sweeps.

    Parameters
    ----------
    trees : dict
        ``{"base": path, "candidate": path}``: each side's source tree.
    repo : str
        The repository whose PYTHONPATH entries are mapped into the base tree.
    clock : {"cpu", "wall"}
        What a sample measures (see :data:`CLOCKS`).
    """
    if clock not in CLOCKS:
        raise BadInput(f"unknown clock {clock!r} (expected one of {', '.join(CLOCKS)})",
                       key="--clock")
    cells = expand(spec).cells
    ci_run, base_id, cand_id = new_ids()
    ids = {"base": base_id, "candidate": cand_id}
    for role in ROLES:
        runner.write_event(dataset, ids[role], runner.sweep_event(
            spec, "started", "running", len(cells), role, ci_run, tree=trees[role]))
    on_start(ci_run, base_id, cand_id)
    writers = {role: runner.BatchWriter(dataset, ids[role]) for role in ROLES}
    counts: dict[str, dict[str, int]] = {role: {} for role in ROLES}
    status = "failed"
    workers = start_workers(trees, repo, spec.measure.threads)
    try:
        for cell in cells:
            pair = run_pair(cell, workers, spec.measure, spec.plugins, clock)
            for role, result in zip(ROLES, pair):
                writers[role].add(result)
                counts[role][result.status] = counts[role].get(result.status, 0) + 1
            on_pair(*pair)
        status = "finished"
    except KeyboardInterrupt:
        status = "cancelled"
        raise
    finally:
        for w in workers:
            w.close()
        for role in ROLES:
            writers[role].flush()
            runner.write_event(dataset, ids[role], runner.sweep_event(
                spec, status, status, len(cells), role, ci_run, tree=trees[role]))
    return AbOutcome(ci_run, base_id, cand_id, counts)


# --------------------------------------------------------------------------- git


def git(repo: str, *args: str) -> str:
    """stdout of ``git -C repo args``; BadInput naming the command when it fails."""
    try:
        done = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BadInput(f"git {' '.join(args)} failed: {exc}") from None
    if done.returncode:
        raise BadInput(f"git {' '.join(args)}: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout.strip()


def resolve_revision(repo: str, rev: str) -> str:
    """The commit ``rev`` names in ``repo``; BadInput when it names none."""
    try:
        return git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except BadInput:
        raise BadInput(f"not a commit in {repo}: {rev!r}", key="--base") from None


@contextmanager
def base_worktree(repo: str, commit: str) -> Iterator[str]:
    """``git worktree add --detach`` of ``commit`` in a temporary directory, removed after."""
    parent = tempfile.mkdtemp(prefix="gradsweep-ci-")
    path = os.path.join(parent, "base")
    try:
        git(repo, "worktree", "add", "--detach", path, commit)
        yield path
    finally:
        subprocess.run(["git", "-C", repo, "worktree", "remove", "--force", path],
                       capture_output=True, timeout=GIT_TIMEOUT_S)
        shutil.rmtree(parent, ignore_errors=True)
        subprocess.run(["git", "-C", repo, "worktree", "prune"], capture_output=True,
                       timeout=GIT_TIMEOUT_S)


def repository_root(where: str = ".") -> str:
    """The top of the git working tree containing ``where``; BadInput outside git."""
    try:
        return git(where, "rev-parse", "--show-toplevel")
    except BadInput:
        raise BadInput(f"{os.path.abspath(where)} is not inside a git repository; "
                       "gradsweep ci compares two revisions of one") from None


# --------------------------------------------------------------------------- command


