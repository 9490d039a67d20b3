"""An instruction-count clock for the CI gate (``gradsweep ci --clock instructions``).

A cell's cost is counted, not timed: valgrind's cachegrind counts the
instructions (event ``Ir``) a process executes, which does not depend on the
machine's load, and repeats from run to run where a clock spreads by percent.

cachegrind 3.19 cannot start and stop counting inside a process, so counts are
taken by difference. One process under cachegrind (:mod:`gradsweep.gate.count_target`)
imports everything once; for each cell it builds and verifies the case, then
forks two children from that same state, one calling the backward ``k`` times
and the other ``2k`` times. valgrind writes each child's total to its own file,
so::

    per_call = (I_2k - I_k - offset) / k

where everything before the fork (start-up, imports, building and verifying
the case) cancels exactly, and so do the first ``k`` calls, whose cost can
differ from later ones (caches and allocator pools filling). ``offset`` is the
parent's own steps between its two forks (~1,700 instructions), measured by
pairs of children that make no call; the spread of the last few such pairs
bounds its error, and a count whose offset spread exceeds
:data:`MAX_OFFSET_SHARE` of the ``k`` calls, or whose ``per_call`` is not
positive, is refused as unstable.

Two counts of the same cell agree to the instruction when the counted
processes are identical: both run with one BLAS thread, ``PYTHONHASHSEED=0``,
the gate's fixed glibc malloc thresholds, numpy's import-time seed entropy
drawn from a fixed seed (``count_target.fixed_entropy``) and the same kind of
bytecode cache. A native run of the same target (no calls) goes first: it
verifies the cells quickly, compiles everything imported into a private
bytecode cache (``PYTHONPYCACHEPREFIX``) that the counted run then reads, and
reports the SIMD features and BLAS core the timed path uses.

What still moves a per-call count is the state of the heap the calls find
(where their arrays land: numpy's loops, for one, treat unaligned heads apart),
and the lengths of the paths a process holds shape that heap. So every tree is
counted through a symlink of one length (``_same_paths``), and every cell in
its own process forked after the imports (so a change to one cell cannot move
another's count). Measured on jobs/ci.toml's nine cells (2026-11-30, k = 2):
the same code counted from two trees at paths of different lengths agreed
within 1.6e-5 (median 6e-7); with the trees at their own paths, only within
4e-3. Counting the same tree twice gives the same per-call count to the
instruction. Different ``k`` measure different calls (k = 1 and k = 4 differed
by up to 2e-3): compare counts of one ``k``.

The counted path is not always the timed one: valgrind emulates no AVX-512, so
numpy dispatches its AVX2 loops and OpenBLAS picks its Haswell kernels where a
native process on an AVX-512 machine would not. :class:`SimdNote` records both
sides; its :meth:`~SimdNote.text` is the note to print. Counts compare two
revisions on one machine, never machines.

Pitfall: valgrind must be given the real interpreter binary, not a launcher
script (a pyenv shim execs the interpreter and escapes valgrind, which then
writes no output): :func:`real_interpreter`.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from gradsweep.errors import BadInput
from gradsweep.gate.count_target import CHILD_FAILED, OFFSET_PAIRS
from gradsweep.measure import MALLOC_ENV
from gradsweep.records import Cell

#: How valgrind is started; tests replace it to simulate a missing valgrind.
VALGRIND: tuple[str, ...] = ("valgrind",)
#: cachegrind counting instructions only (no cache or branch simulation: faster, same Ir).
CACHEGRIND_ARGS = ("--tool=cachegrind", "--cache-sim=no", "--branch-sim=no")
#: The event counted: instructions executed.
EVENT = "Ir"
#: Each process's output file in the output directory (``%p``: the pid, so that
#: forked children write their own).
OUT_PATTERN = "cg.%p"
#: The program valgrind runs.
TARGET = Path(__file__).with_name("count_target.py")
#: Backward calls of the shorter child (the longer makes twice as many).
DEFAULT_CALLS = 2
#: Offset pairs used: the last of the OFFSET_PAIRS forked (the first few run colder code:
#: measured offsets 3059, 2382, 3547, then 1655, 1770, 1655, 1655, 1655, 1661, 1661).
OFFSET_USED = min(3, OFFSET_PAIRS)
#: Largest offset spread allowed, as a share of the k calls' instructions.
MAX_OFFSET_SHARE = 1e-3
#: Seconds the counted process may take: its start-up, plus this much per cell
#: (a numpy process runs ~50x slower under valgrind).
COUNT_STARTUP_S = 300.0
COUNT_PER_CELL_S = 600.0
#: Seconds the native run may take, per cell on top of its start-up.
NATIVE_STARTUP_S = 120.0
NATIVE_PER_CELL_S = 60.0
#: Environment of the counted process: one BLAS thread, fixed hashing and malloc
#: thresholds, no bytecode written (it reads the native run's, see _environment).
COUNT_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
             "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", **MALLOC_ENV}
#: First bytes of an ELF executable (what valgrind can run without losing the client).
ELF_MAGIC = b"\x7fELF"
#: Hidden CPU features named in a SimdNote's text (the rest are counted).
NOTE_FEATURES = 3
#: Characters of a failing process's stderr quoted in an error.
STDERR_TAIL_CHARS = 300


class InstructionCountError(BadInput):
    """valgrind is missing or failed, or its output is unusable (one line; exit 2)."""


class CellNotCounted(Exception):
    """The cell itself failed (``status`` incorrect, error, crashed or skipped): one line."""

    def __init__(self, status: str, error: str, max_rel_err: float | None = None):
        super().__init__(f"{status}: {error}")
        self.status, self.error, self.max_rel_err = status, error, max_rel_err


@dataclass(frozen=True)
class SimdNote:
    """What numpy and its BLAS use natively (the timed path) and under valgrind (counted).

    Attributes
    ----------
    native, counted : tuple of str
        CPU features numpy detected (``numpy._core._multiarray_umath.__cpu_features__``).
    native_blas, counted_blas : str
        numpy's BLAS with its core type, e.g. ``openblas 0.3.31 SkylakeX``.
    """

    native: tuple[str, ...]
    counted: tuple[str, ...]
    native_blas: str
    counted_blas: str

    @property
    def hidden(self) -> tuple[str, ...]:
        """Features the native process uses that the counted one does not see, AVX first."""
        hidden = [f for f in self.native if f not in self.counted]
        return tuple(sorted(hidden, key=lambda f: not f.startswith("AVX")))

    @property
    def differs(self) -> bool:
        """Whether the counted path may differ from the timed one."""
        return bool(self.hidden) or self.native_blas != self.counted_blas

    def text(self) -> str:
        """One line for the gate's output; empty when both paths agree."""
        if not self.differs:
            return ""
        parts = []
        if self.hidden:
            shown = ", ".join(self.hidden[:NOTE_FEATURES])
            more = len(self.hidden) - NOTE_FEATURES
            parts.append(f"numpy sees no {shown}{f' (+{more} more)' if more > 0 else ''} "
                         "under valgrind")
        if self.native_blas != self.counted_blas:
            parts.append(f"BLAS {self.counted_blas} counted, {self.native_blas} natively")
        return "counted path differs from the timed one: " + "; ".join(parts)


@dataclass(frozen=True)
class InstructionCount:
    """A cell's instructions per backward call, from two forked children.

    Attributes
    ----------
    cell_id : str
    calls : int
        ``k``: backward calls of the shorter child (the longer made ``2k``).
    total_k, total_2k : int
        Instructions (Ir) of each child, everything before its fork included.
    offset : float
        The parent's instructions between two forks (median of the last
        :data:`OFFSET_USED` pairs of children that made no call).
    offset_spread : int
        Range of those pairs' offsets: the offset's error in ``per_call`` is at
        most ``offset_spread / calls``.
    per_call : float
        ``(total_2k - total_k - offset) / calls``.
    max_rel_err : float
        The cell's verification error under valgrind.
    simd : SimdNote
    wall_s : float
        Seconds the counted process spent on this cell (build, verify, both children).
    """

    cell_id: str
    calls: int
    total_k: int
    total_2k: int
    offset: float
    offset_spread: int
    per_call: float
    max_rel_err: float
    simd: SimdNote
    wall_s: float


@dataclass(frozen=True)
class NotCounted:
    """A cell that could not be counted: its status, one-line error and max_rel_err."""

    cell_id: str
    status: str
    error: str
    max_rel_err: float | None = None

    def exception(self) -> CellNotCounted:
        """This failure as the exception :func:`count_instructions` raises."""
        return CellNotCounted(self.status, self.error, self.max_rel_err)


# --------------------------------------------------------------------------- cachegrind output


def parse_cachegrind(text: str, where: str = "cachegrind output") -> int:
    """Total instructions (``Ir``) of a cachegrind (or callgrind) output file's text.

    The format (valgrind's cg_annotate reads the same): an ``events:`` line names
    the counted events in order; the ``summary:`` line (cachegrind) or
    ``totals:`` line (callgrind) holds one total per event in that order.

    Raises
    ------
    InstructionCountError
        When ``text`` has no events line, no Ir event, no total, or a malformed total.
    """
    events = totals = None
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key == "events" and events is None:
            events = rest.split()
        elif key in ("summary", "totals") and totals is None:
            totals = rest.split()
    if events is None:
        raise InstructionCountError("not a cachegrind output (no 'events:' line)", where=where)
    if EVENT not in events:
        raise InstructionCountError(f"no {EVENT} event (events: {' '.join(events)})",
                                    where=where)
    if totals is None:
        raise InstructionCountError("no 'summary:' or 'totals:' line", where=where)
    index = events.index(EVENT)
    if len(totals) <= index or not totals[index].isdigit():
        raise InstructionCountError(f"malformed total {' '.join(totals)!r} for events "
                                    f"{' '.join(events)}", where=where)
    return int(totals[index])


def read_cachegrind(path: str | os.PathLike) -> int:
    """Total instructions of the cachegrind output file at ``path`` (see parse_cachegrind)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        raise InstructionCountError(f"cannot read it: {exc.strerror or exc}",
                                    where=str(path)) from None
    return parse_cachegrind(text, where=str(path))


# --------------------------------------------------------------------------- the processes


def valgrind_available() -> bool:
    """Whether the valgrind command is on PATH."""
    return shutil.which(VALGRIND[0]) is not None


def is_elf(path: str) -> bool:
    """Whether ``path`` (symlinks followed) is an ELF executable, not a script."""
    try:
        with open(os.path.realpath(path), "rb") as f:
            return f.read(len(ELF_MAGIC)) == ELF_MAGIC
    except OSError:
        return False


def real_interpreter() -> str:
    """This Python as a path valgrind can run: ``sys.executable`` if it is a binary.

    A virtualenv's ``bin/python`` is a symlink to the binary and is kept as is
    (through it the interpreter finds its ``pyvenv.cfg``, hence the venv's
    packages). A launcher script (a pyenv shim) would exec the interpreter out of
    valgrind's reach: then ``sys._base_executable`` is used if it is a binary.
    """
    candidates = [sys.executable, getattr(sys, "_base_executable", "")]
    for path in candidates:
        if path and is_elf(path):
            return path
    raise InstructionCountError(f"{sys.executable} is not an executable binary (a launcher "
                                "script?); valgrind needs the real interpreter")


def _tail(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines()
             if ln.strip() and "warning:" not in ln]
    return " ".join(lines[-2:])[-STDERR_TAIL_CHARS:]


def check_valgrind() -> None:
    """InstructionCountError unless valgrind is on PATH."""
    if not valgrind_available():
        raise InstructionCountError(f"{VALGRIND[0]} is not installed (the instruction clock "
                                    "needs it; on Debian: apt-get install valgrind)")


def _harness() -> str:
    """The directory of this ``gradsweep`` package (both counted processes load it)."""
    import gradsweep

    return str(Path(gradsweep.__file__).resolve().parent)


def _request(tmp: str, name: str, cells: Sequence[Cell], plugins: Sequence[str], calls: int,
             tree: str) -> tuple[str, str]:
    """Write the target's request; (request path, outcome path)."""
    harness = _harness()
    request, outcome = os.path.join(tmp, f"{name}.json"), os.path.join(tmp, f"{name}.outcome")
    records = []
    for cell in cells:
        record = asdict(cell)
        record["shape"] = [list(item) for item in cell.shape]
        records.append(record)
    with open(request, "w") as f:
        json.dump({"cells": records, "plugins": list(plugins), "calls": calls, "tree": tree,
                   "harness": harness, "outcome": outcome}, f)
    return request, outcome


def _environment(tree: str, pythonpath: Sequence[str], pycache: str,
                 counted: bool) -> dict[str, str]:
    """A target process's environment: ``tree`` first on PYTHONPATH, bytecode in ``pycache``.

    The native run writes the bytecode of everything imported into ``pycache``
    (``PYTHONPYCACHEPREFIX``); the counted run (COUNT_ENV) reads it and writes
    nothing. So the counts of two trees start from the same kind of caches
    whatever ``__pycache__`` the trees hold: a process that compiled its modules
    from source left a different heap, which moved a per-call count by 8e-4.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=os.pathsep.join([tree, *pythonpath]), PYTHONPYCACHEPREFIX=pycache)
    return {**env, **COUNT_ENV} if counted else {**env, "OPENBLAS_NUM_THREADS": "1"}


def _run(argv: list[str], env: dict[str, str], cwd: str, timeout_s: float, what: str,
         outcome: str) -> dict:
    """Run the target; its outcome. InstructionCountError if it fails, times out or is mute."""
    try:
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise InstructionCountError(f"cannot run {argv[0]}: not found") from None
    except subprocess.TimeoutExpired:
        raise InstructionCountError(f"the {what} did not finish within {timeout_s:.0f} s "
                                    "(fewer calls or smaller cells?)") from None
    try:
        with open(outcome) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        raise InstructionCountError(
            f"the {what} exited with {done.returncode} and wrote no outcome: "
            f"{_tail(done.stderr) or _tail(done.stdout) or 'no output'}") from None


def _native(tmp: str, cells: Sequence[Cell], plugins: Sequence[str], tree: str,
            env: dict[str, str]) -> dict:
    """The target run natively with no calls: verifies the cells, reports the timed path."""
    request, outcome = _request(tmp, "native", cells, plugins, 0, tree)
    result = _run([real_interpreter(), str(TARGET), request], env, tmp,
                  NATIVE_STARTUP_S + NATIVE_PER_CELL_S * len(cells), "native run", outcome)
    where = os.path.realpath(result["impls"])
    if not where.startswith(os.path.realpath(tree) + os.sep):
        raise InstructionCountError(f"the counted process imported impls from {where}, "
                                    f"not from {os.path.realpath(tree)}")
    return result


def _counted(tmp: str, cells: Sequence[Cell], plugins: Sequence[str], calls: int, tree: str,
             env: dict[str, str], timeout_s: float) -> tuple[dict, str]:
    """The target under cachegrind: (its outcome, the directory of the children's counts)."""
    request, outcome = _request(tmp, "counted", cells, plugins, calls, tree)
    out_dir = os.path.join(tmp, "cachegrind")
    os.mkdir(out_dir)
    argv = [*VALGRIND, *CACHEGRIND_ARGS, f"--cachegrind-out-file={out_dir}/{OUT_PATTERN}",
            real_interpreter(), str(TARGET), request]
    return _run(argv, env, tmp, timeout_s, "counted run", outcome), out_dir


def child_total(out_dir: str, pid: int) -> int:
    """Instructions counted for the process ``pid`` (its file in ``out_dir``)."""
    path = os.path.join(out_dir, OUT_PATTERN.replace("%p", str(pid)))
    if not os.path.exists(path):
        raise InstructionCountError(f"valgrind wrote no {path} (did the interpreter exec "
                                    "another program, e.g. through a launcher script?)")
    return read_cachegrind(path)


# --------------------------------------------------------------------------- the count


def offset_of(pairs: Sequence[tuple[int, int]]) -> tuple[float, int]:
    """The offset (median of the last OFFSET_USED pairs' differences) and their range.

    Parameters
    ----------
    pairs : sequence of (int, int)
        Totals of the first and second child of each pair that made no call, in
        the order forked.
    """
    if len(pairs) < OFFSET_USED:
        raise InstructionCountError(f"{len(pairs)} offset pairs, expected at least "
                                    f"{OFFSET_USED}")
    diffs = [second - first for first, second in pairs[-OFFSET_USED:]]
    return float(statistics.median(diffs)), max(diffs) - min(diffs)


def per_call_of(total_k: int, total_2k: int, offset: float, offset_spread: int,
                calls: int, what: str) -> float:
    """``(total_2k - total_k - offset) / calls``, checked positive and stable.

    Raises
    ------
    InstructionCountError
        When the result is not positive, or the offset's spread exceeds
        :data:`MAX_OFFSET_SHARE` of the ``calls`` calls' instructions.
    """
    per_call = (total_2k - total_k - offset) / calls
    if per_call <= 0 or offset_spread > MAX_OFFSET_SHARE * calls * per_call:
        raise InstructionCountError(
            f"unstable count for {what}: {total_k} instructions with {calls} calls, "
            f"{total_2k} with {2 * calls}, offset {offset:.0f} (spread {offset_spread}), "
            f"per call {per_call:.0f}")
    return per_call


def _child_failure(cell: Cell, exits: list[int]) -> NotCounted:
    status = "error" if CHILD_FAILED in exits else "crashed"
    return NotCounted(cell.cell_id, status, f"a counted child of {cell.variant} exited with "
                      f"{' and '.join(map(str, exits))} (its backward raised or it died)")


def _result(cell: Cell, entry: dict, out_dir: str, offset: tuple[float, int], calls: int,
            simd: SimdNote) -> InstructionCount | NotCounted:
    """One cell's record from the counted process's outcome entry."""
    if entry["status"] != "ok":
        return NotCounted(cell.cell_id, entry["status"], entry["error"],
                          entry.get("max_rel_err"))
    if any(entry["exits"]):
        return _child_failure(cell, entry["exits"])
    total_k, total_2k = (child_total(out_dir, pid) for pid in entry["pids"])
    per_call = per_call_of(total_k, total_2k, *offset, calls, cell.variant)
    return InstructionCount(cell.cell_id, calls, total_k, total_2k, offset[0], offset[1],
                            per_call, entry["max_rel_err"], simd, entry["wall_s"])


def _same_paths(tmp: str, tree: str, pythonpath: Sequence[str] | None
                ) -> tuple[str, str, list[str]]:
    """(pycache, tree, pythonpath) as the counted process sees them: all inside ``tmp``.

    ``tree`` is reached through a symlink ``tmp/tree`` and PYTHONPATH entries inside it
    are moved there, so every tree is counted through paths of the same length: the
    lengths of paths the process holds shape its heap, and with it the alignment of
    the arrays its calls allocate (a tree at a longer path moved an LSTM cell's
    per-call count by 4e-3; two temporary directories of one length, by < 1e-5).
    """
    link = os.path.join(tmp, "tree")
    os.symlink(tree, link)
    if pythonpath is None:
        pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    moved = [os.path.join(link, os.path.relpath(os.path.abspath(p), tree))
             if os.path.abspath(p).startswith(tree + os.sep) else p for p in pythonpath]
    return os.path.join(tmp, "pycache"), link, moved


def check_cells(cells: Sequence[Cell], calls: int) -> None:
    """InstructionCountError unless every cell has one thread and calls >= 1."""
    for cell in cells:
        if cell.threads != 1:
            raise InstructionCountError(f"instruction counts need threads = 1, {cell.variant} "
                                        f"has {cell.threads} (BLAS threads spin: counts "
                                        "would not repeat)", key="threads")
    if calls < 1:
        raise InstructionCountError(f"calls must be >= 1, got {calls}", key="calls")


def _counted_results(tmp: str, cells: Sequence[Cell], plugins: Sequence[str], calls: int,
                     tree: str, env: dict[str, str], timeout_s: float,
                     native: dict) -> list[InstructionCount | NotCounted]:
    """Count ``cells`` (all verified natively) in one process under cachegrind."""
    counted, out_dir = _counted(tmp, cells, plugins, calls, tree, env, timeout_s)
    simd = SimdNote(tuple(native["simd"]), tuple(counted["simd"]), native["blas"],
                    counted["blas"])
    pairs = [tuple(child_total(out_dir, pid) for pid in pair["pids"])
             for pair in counted["offsets"]]
    offset = offset_of(pairs)
    return [_result(cell, entry, out_dir, offset, calls, simd)
            for cell, entry in zip(cells, counted["cells"])]


def count_cells(cells: Sequence[Cell], *, tree: str | None = None,
                plugins: Sequence[str] = (), calls: int = DEFAULT_CALLS,
                pythonpath: Sequence[str] | None = None,
                timeout_s: float | None = None) -> tuple[InstructionCount | NotCounted, ...]:
    """Instructions per backward call of each cell, with the kernels of ``tree``.

    One native run verifies every cell; one process under cachegrind then
    counts those that passed (its start-up is paid once).

    Parameters
    ----------
    cells : sequence of Cell
        Each must have ``threads == 1`` (BLAS threads spin while they wait:
        counts of several threads do not repeat).
    tree : str, optional
        The source tree whose ``impls`` and plugins are counted (a revision's
        worktree); by default the tree holding this ``gradsweep`` package. The cases
        are built and verified by this ``gradsweep`` (the harness) either way.
    plugins : sequence of str
        The spec's plugin modules.
    calls : int >= 1
        ``k``: each cell's two children make ``k`` and ``2k`` backward calls.
    pythonpath : sequence of str, optional
        PYTHONPATH entries after ``tree`` (e.g. a plugin directory mapped into
        the tree); by default the current PYTHONPATH.
    timeout_s : float, optional
        Seconds the counted process may take; by default COUNT_STARTUP_S plus
        COUNT_PER_CELL_S per cell.

    Returns
    -------
    tuple of InstructionCount or NotCounted
        One per cell, in order; a cell that is incorrect, raises, is skipped or
        whose child dies is a NotCounted.

    Raises
    ------
    InstructionCountError
        valgrind missing or failing, or a count that is not positive or stable.
    """
    check_cells(cells, calls)
    check_valgrind()
    tree = os.path.abspath(tree or Path(_harness()).parent)
    results: list[InstructionCount | NotCounted | None] = [None] * len(cells)
    with tempfile.TemporaryDirectory(prefix="gradsweep-count-") as tmp:
        pycache, tree, pythonpath = _same_paths(tmp, tree, pythonpath)
        native = _native(tmp, cells, plugins, tree,
                         _environment(tree, pythonpath, pycache, counted=False))
        todo = []
        for i, (cell, entry) in enumerate(zip(cells, native["cells"])):
            if entry["status"] == "ok":
                todo.append(i)
            else:
                results[i] = NotCounted(cell.cell_id, entry["status"], entry["error"],
                                        entry.get("max_rel_err"))
        if todo:
            timeout = timeout_s or COUNT_STARTUP_S + COUNT_PER_CELL_S * len(todo)
            env = _environment(tree, pythonpath, pycache, counted=True)
            counted = _counted_results(tmp, [cells[i] for i in todo], plugins, calls, tree,
                                       env, timeout, native)
            for i, result in zip(todo, counted):
                results[i] = result
    return tuple(results)


def count_instructions(cell: Cell, *, tree: str | None = None, plugins: Sequence[str] = (),
                       calls: int = DEFAULT_CALLS, pythonpath: Sequence[str] | None = None,
                       timeout_s: float | None = None) -> InstructionCount:
    """Instructions per backward call of one cell (see :func:`count_cells`).

    Raises
    ------
    CellNotCounted
        The cell is incorrect, raises, is skipped or its counted child died.
    InstructionCountError
        As :func:`count_cells`.
    """
    (result,) = count_cells([cell], tree=tree, plugins=plugins, calls=calls,
                            pythonpath=pythonpath, timeout_s=timeout_s)
    if isinstance(result, NotCounted):
        raise result.exception()
    return result


def compare_counts(base: InstructionCount, candidate: InstructionCount) -> float:
    """``candidate.per_call / base.per_call`` (> 1: the candidate executes more).

    Raises
    ------
    InstructionCountError
        When the two counts are of different cells or ``calls``, or were counted on
        different paths (SIMD features or BLAS core under valgrind).
    """
    if base.cell_id != candidate.cell_id:
        raise InstructionCountError(f"counts of different cells: {base.cell_id} and "
                                    f"{candidate.cell_id}")
    if base.calls != candidate.calls:
        raise InstructionCountError(f"counts of different calls (k = {base.calls} and "
                                    f"{candidate.calls}) measure different calls")
    b, c = base.simd, candidate.simd
    if (b.counted, b.counted_blas) != (c.counted, c.counted_blas):
        raise InstructionCountError(f"counted on different paths: {b.counted_blas} "
                                    f"vs {c.counted_blas}")
    return candidate.per_call / base.per_call
