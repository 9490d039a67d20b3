"""An instruction-count clock for the CI gate (``gradsweep ci --clock instructions``).

A cell's cost is counted, not timed: valgrind's cachegrind counts the
instructions (event ``Ir``) a process executes, which does not depend on the
machine's load, and repeats from run to run where a clock spreads by percent.
One counted process cannot count the backward alone (cachegrind 3.19 has no
start/stop requests), so two processes run :mod:`bench.gate.count_target`,
identical but for the number of backward calls, ``k`` and ``2k``::

    per_call = (I_2k - I_k) / k

Start-up, imports, building and verifying the case cancel; so do the first
``k`` calls, whose cost can differ from later ones (caches and allocator
pools filling). The count is checked: ``per_call`` and the start-up it implies
(``I_k - k * per_call``) must both be positive.

What makes two counted runs of the same program agree (measured: to a few
hundred instructions in ~1e9; see tests/gate): both run with one BLAS thread,
``PYTHONHASHSEED=0``, the gate's fixed glibc malloc thresholds, numpy's
import-time seed entropy drawn from a fixed seed (``count_target.fixed_entropy``)
and the same bytecode caches. A native run of the same target (0 calls) goes
first: it verifies the cell quickly, compiles everything imported into a
private bytecode cache (``PYTHONPYCACHEPREFIX``) that the counted runs then
read, and reports the SIMD features and BLAS core the timed path uses.

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
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.errors import BadInput
from bench.measure import MALLOC_ENV
from bench.spec import Cell

#: How valgrind is started; tests replace it to simulate a missing valgrind.
VALGRIND: tuple[str, ...] = ("valgrind",)
#: cachegrind counting instructions only (no cache or branch simulation: faster, same Ir).
CACHEGRIND_ARGS = ("--tool=cachegrind", "--cache-sim=no", "--branch-sim=no")
#: The event counted: instructions executed.
EVENT = "Ir"
#: The program valgrind runs.
TARGET = Path(__file__).with_name("count_target.py")
#: Backward calls of the shorter counted run (the longer makes twice as many).
DEFAULT_CALLS = 8
#: Seconds one counted process may take (a numpy process runs ~50x slower under valgrind).
COUNT_TIMEOUT_S = 1200.0
#: Seconds the native pre-flight run may take.
NATIVE_TIMEOUT_S = 300.0
#: Counted processes run at once by default (counts do not depend on the load).
DEFAULT_JOBS = 2
#: Environment of every counted process: one BLAS thread, fixed hashing and malloc
#: thresholds, no bytecode written (both runs must see the same caches, see _environment).
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
    """The cell itself failed (``status`` incorrect, error or skipped): one line."""

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
    """A cell's instructions per backward call, from two counted runs.

    Attributes
    ----------
    cell_id : str
    calls : int
        ``k``: backward calls of the shorter run (the longer made ``2k``).
    total_k, total_2k : int
        Instructions (Ir) of each whole counted process.
    per_call : float
        ``(total_2k - total_k) / k``.
    startup : float
        ``total_k - k * per_call``: the process's instructions outside the loop.
    max_rel_err : float
        The cell's verification error (native run).
    simd : SimdNote
    wall_s : float
        Seconds the whole count took.
    """

    cell_id: str
    calls: int
    total_k: int
    total_2k: int
    per_call: float
    startup: float
    max_rel_err: float
    simd: SimdNote
    wall_s: float


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


def _check_valgrind() -> None:
    if not valgrind_available():
        raise InstructionCountError(f"{VALGRIND[0]} is not installed (the instruction clock "
                                    "needs it; on Debian: apt-get install valgrind)")


def _request(tmp: str, name: str, cell: Cell, plugins: Sequence[str], calls: int,
             tree: str) -> tuple[str, str]:
    """Write the target's request; (request path, outcome path)."""
    import bench

    harness = str(Path(bench.__file__).resolve().parent.parent)
    request, outcome = os.path.join(tmp, f"{name}.json"), os.path.join(tmp, f"{name}.outcome")
    record = asdict(cell)
    record["shape"] = [list(item) for item in cell.shape]
    with open(request, "w") as f:
        json.dump({"cell": record, "plugins": list(plugins), "calls": calls, "tree": tree,
                   "harness": harness, "outcome": outcome}, f)
    return request, outcome


def _environment(tree: str, pythonpath: Sequence[str] | None, pycache: str,
                 counted: bool) -> dict[str, str]:
    """A target process's environment: ``tree`` first on PYTHONPATH, bytecode in ``pycache``.

    The native run writes the bytecode of everything imported into ``pycache``
    (``PYTHONPYCACHEPREFIX``); the counted runs (COUNT_ENV) read it and write
    nothing. So both counted runs, and the counts of two trees, start from the
    same caches whatever ``__pycache__`` the trees hold: loading a module from
    source instead of bytecode leaves a different heap, which moved a per-call
    count by 8e-4.
    """
    if pythonpath is None:
        pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=os.pathsep.join([tree, *pythonpath]), PYTHONPYCACHEPREFIX=pycache)
    return {**env, **COUNT_ENV} if counted else {**env, "OPENBLAS_NUM_THREADS": "1"}


def _run(argv: list[str], env: dict[str, str], cwd: str, timeout_s: float, what: str,
         outcome: str) -> dict:
    """Run one process of the target; its outcome (status ok), or raise.

    Raises
    ------
    InstructionCountError
        The process failed, timed out or wrote no outcome.
    CellNotCounted
        The cell was incorrect, raised or was skipped.
    """
    try:
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise InstructionCountError(f"cannot run {argv[0]}: not found") from None
    except subprocess.TimeoutExpired:
        raise InstructionCountError(f"the {what} did not finish within {timeout_s:.0f} s "
                                    "(fewer calls or a smaller cell?)") from None
    try:
        with open(outcome) as f:
            result = json.load(f)
    except (OSError, json.JSONDecodeError):
        raise InstructionCountError(
            f"the {what} exited with {done.returncode} and wrote no outcome: "
            f"{_tail(done.stderr) or _tail(done.stdout) or 'no output'}") from None
    if result["status"] != "ok":
        raise CellNotCounted(result["status"], result["error"], result.get("max_rel_err"))
    return result


def _counted(tmp: str, cell: Cell, plugins: Sequence[str], calls: int, tree: str,
             env: dict[str, str], timeout_s: float) -> tuple[int, dict]:
    """One process under cachegrind making ``calls`` backward calls: (Ir, outcome)."""
    name = f"counted-{calls}"
    request, outcome = _request(tmp, name, cell, plugins, calls, tree)
    out = os.path.join(tmp, f"{name}.cachegrind")
    argv = [*VALGRIND, *CACHEGRIND_ARGS, f"--cachegrind-out-file={out}", real_interpreter(),
            str(TARGET), request]
    result = _run(argv, env, tree, timeout_s, f"counted run ({calls} calls)", outcome)
    if not os.path.exists(out):
        raise InstructionCountError(f"valgrind wrote no {out} (did the interpreter exec "
                                    "another program, e.g. through a launcher script?)")
    return read_cachegrind(out), result


def _native(tmp: str, cell: Cell, plugins: Sequence[str], tree: str,
            env: dict[str, str]) -> dict:
    """The target run natively with 0 calls: verifies the cell, reports the timed path."""
    request, outcome = _request(tmp, "native", cell, plugins, 0, tree)
    result = _run([real_interpreter(), str(TARGET), request], env, tree, NATIVE_TIMEOUT_S,
                  "native run", outcome)
    where = os.path.realpath(result["impls"])
    if not where.startswith(os.path.realpath(tree) + os.sep):
        raise InstructionCountError(f"the counted process imported impls from {where}, "
                                    f"not from {tree}")
    return result


# --------------------------------------------------------------------------- the count


def count_instructions(cell: Cell, *, tree: str | None = None, plugins: Sequence[str] = (),
                       calls: int = DEFAULT_CALLS, pythonpath: Sequence[str] | None = None,
                       jobs: int = DEFAULT_JOBS,
                       timeout_s: float = COUNT_TIMEOUT_S) -> InstructionCount:
    """Instructions per backward call of ``cell`` with the kernels of ``tree``.

    Parameters
    ----------
    cell : Cell
        Must have ``threads == 1`` (BLAS threads spin while they wait: counts
        of several threads do not repeat).
    tree : str, optional
        The source tree whose ``impls`` and plugins are counted (a revision's
        worktree); by default the tree holding this ``bench`` package. The case
        is built and verified by this ``bench`` (the harness) either way.
    plugins : sequence of str
        The spec's plugin modules.
    calls : int >= 1
        ``k``: the counted runs make ``k`` and ``2k`` backward calls.
    pythonpath : sequence of str, optional
        PYTHONPATH entries after ``tree`` (e.g. a plugin directory mapped into
        the tree); by default the current PYTHONPATH.
    jobs : int >= 1
        Counted processes run at once.
    timeout_s : float
        Seconds each counted process may take.

    Raises
    ------
    InstructionCountError
        valgrind missing or failing, or a count that is not positive.
    CellNotCounted
        The cell is incorrect, raises or is skipped.
    """
    import bench

    if cell.threads != 1:
        raise InstructionCountError(f"instruction counts need threads = 1, the cell has "
                                    f"{cell.threads} (BLAS threads spin: counts would not "
                                    "repeat)", key="threads")
    if calls < 1 or jobs < 1:
        raise InstructionCountError(f"calls and jobs must be >= 1, got {calls} and {jobs}")
    _check_valgrind()
    tree = os.path.abspath(tree or Path(bench.__file__).resolve().parent.parent)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gradsweep-count-") as tmp:
        pycache = os.path.join(tmp, "pycache")
        native = _native(tmp, cell, plugins, tree, _environment(tree, pythonpath, pycache,
                                                                   False))
        env = _environment(tree, pythonpath, pycache, True)
        with ThreadPoolExecutor(max_workers=min(jobs, 2)) as pool:
            runs = list(pool.map(lambda n: _counted(tmp, cell, plugins, n, tree, env,
                                                    timeout_s), (calls, 2 * calls)))
    (total_k, counted), (total_2k, _) = runs
    per_call = (total_2k - total_k) / calls
    startup = total_k - calls * per_call
    if per_call <= 0 or startup <= 0:
        raise InstructionCountError(
            f"unstable count for {cell.variant}: {total_k} instructions with {calls} calls, "
            f"{total_2k} with {2 * calls} (per call {per_call:.0f}, start-up {startup:.0f})")
    simd = SimdNote(tuple(native["simd"]), tuple(counted["simd"]), native["blas"],
                    counted["blas"])
    return InstructionCount(cell.cell_id, calls, total_k, total_2k, per_call, startup,
                            native["max_rel_err"], simd, time.perf_counter() - t0)


def compare_counts(base: InstructionCount, candidate: InstructionCount) -> float:
    """``candidate.per_call / base.per_call`` (> 1: the candidate executes more).

    Raises
    ------
    InstructionCountError
        When the two counts are of different cells or were counted on different
        paths (SIMD features or BLAS core under valgrind).
    """
    if base.cell_id != candidate.cell_id:
        raise InstructionCountError(f"counts of different cells: {base.cell_id} and "
                                    f"{candidate.cell_id}")
    b, c = base.simd, candidate.simd
    if (b.counted, b.counted_blas) != (c.counted, c.counted_blas):
        raise InstructionCountError(f"counted on different paths: {b.counted_blas} "
                                    f"vs {c.counted_blas}")
    return candidate.per_call / base.per_call
