"""Scalene line profiles of one cell's backward: run, parse, store.

scalene cannot start inside a running interpreter (nor a Ray task), so a cell
is profiled in a subprocess: ``python -m scalene run`` on
:mod:`gradsweep.profile_target`, which builds and verifies the cell with profiling
off and then calls its backward in a loop for a few seconds between
``scalene_profiler.start()`` and ``stop()``. Only the variant's code is
profiled (``--profile-only`` the ``impls`` package, the backward's own package
and the plugins), so every line is the variant's code; time spent inside numpy
or BLAS is charged to the line of the variant that called it, as native time.

Semantics of the numbers (scalene 2.4's JSON): ``cpu_percent_*`` are shares of
the CPU time sampled in the profiled files during the loop, so a profile's
lines add up to about 100 %. ``peak_mb`` is scalene's peak footprint of the
line; ``alloc_mb`` is what the line allocated per backward call (scalene's
sampled ``n_malloc_mb`` over the loop divided by the calls).

Profiling runs apart from timing and never changes a stored timing.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gradsweep.defaults import PROFILE_SECONDS, PROFILE_TOP
from gradsweep.errors import BadInput
from gradsweep.impls.base import DTYPES, Kernel, parse_variant, variant_name
from gradsweep.impls.registry import Registry
from gradsweep.records import Cell, MeasureSettings, ProfileLine, SweepEvent, new_sweep_id
from gradsweep.spec import registry_for

#: How scalene is started; tests replace it to simulate a missing scalene.
SCALENE_COMMAND: tuple[str, ...] = (sys.executable, "-m", "scalene", "run")
#: The program scalene runs.
TARGET = Path(__file__).with_name("profile_target.py")
DEFAULT_SECONDS = PROFILE_SECONDS
#: scalene's CPU sampling interval (its default, 0.01 s, gives too few samples).
SAMPLING_INTERVAL_S = 0.002
#: Allowance for scalene's start-up, the cell's set-up and the JSON output.
STARTUP_ALLOWANCE_S = 120.0
DEFAULT_TOP = PROFILE_TOP
#: Characters of scalene's stderr quoted in an error.
STDERR_TAIL_CHARS = 300
#: A line below both thresholds carries nothing worth storing.
MIN_CPU_PERCENT = 0.0
MIN_MB = 0.0
#: Function name of lines outside any def.
MODULE_LEVEL = "<module>"
#: Package whose code is always profiled (plugins build on it).
BUILTIN_PACKAGE = "gradsweep.impls"


class ProfileError(BadInput):
    """scalene is missing or failed (one line; the CLI exits 2)."""


class CellFailed(Exception):
    """The cell itself failed to build or run under the profiler (one line; exit 1)."""


@dataclass(frozen=True)
class Profile:
    """A cell's profile: its hot lines and how the profiled loop went."""

    cell: Cell
    lines: tuple[ProfileLine, ...]
    calls: int
    elapsed_s: float
    max_rel_err: float | None
    files: tuple[str, ...]

    @property
    def ms_per_call(self) -> float:
        """Wall milliseconds per backward call under the profiler (not a timing)."""
        return 1e3 * self.elapsed_s / max(self.calls, 1)


# --- the cell from the command line -------------------------------------------------


def canonical_variant(registry: Registry, name: str) -> str:
    """``name`` as a known canonical variant (axes may come in any order)."""
    try:
        kernel_name, axes = parse_variant(name)
    except ValueError as exc:
        raise BadInput(str(exc), key="VARIANT") from None
    if kernel_name not in registry.kernels:
        raise BadInput(f"unknown kernel {kernel_name!r} (expected one of "
                       f"{', '.join(sorted(registry.kernels))})", key="VARIANT")
    kernel = registry.kernels[kernel_name]
    order = tuple(a.name for a in kernel.axes)
    if set(axes) == set(order):
        name = variant_name(kernel_name, axes, order)
    if name not in kernel.variants:
        example = next(iter(kernel.variants))
        raise BadInput(f"unknown variant {name!r} (expected every axis of {kernel_name}: "
                       f"{', '.join(order)}; e.g. {example}; see `gradsweep list`)",
                       key="VARIANT")
    return name


def parse_shape(kernel: Kernel, text: str) -> dict[str, int]:
    """``"N=32,T=64"`` as every dim of ``kernel`` (missing dims take defaults).

    Raises
    ------
    BadInput
        For an unknown dim, a non-integer or too-small value, or a shape the
        kernel's ``check`` refuses.
    """
    given: dict[str, int] = {}
    names = [d.name for d in kernel.dims]
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or key not in names:
            raise BadInput(f"{part!r}: expected DIM=INT with DIM one of {', '.join(names)}",
                           key="--shape")
        try:
            given[key] = int(value)
        except ValueError:
            raise BadInput(f"{key}={value!r} is not an integer", key="--shape") from None
        if given[key] < kernel.dim(key).minimum:
            raise BadInput(f"{key}={given[key]} is below the minimum {kernel.dim(key).minimum}",
                           key="--shape")
    shape = kernel.full_shape(given)
    reason = kernel.check(shape)
    if reason:
        raise BadInput(f"{kernel.name} refuses {shape}: {reason}", key="--shape")
    return shape


def make_cell(variant: str, shape: str = "", dtype: str = "float64", threads: int = 1,
              plugins: Sequence[str] = (), settings: MeasureSettings | None = None) -> Cell:
    """The cell the ``profile`` command names; BadInput for anything unknown."""
    settings = settings or MeasureSettings()
    registry, _ = registry_for(plugins)
    name = canonical_variant(registry, variant)
    kernel = registry.kernels[name.partition("/")[0]]
    if dtype not in DTYPES:
        raise BadInput(f"unknown dtype {dtype!r} (expected one of {', '.join(DTYPES)})",
                       key="--dtype")
    if threads < 1:
        raise BadInput("must be at least 1", key="--threads")
    return Cell(kernel=kernel.name, variant=name,
                shape=tuple(parse_shape(kernel, shape).items()), dtype=dtype,
                threads=threads, seed=settings.seed, clip_value=settings.clip_value,
                clip_norm=settings.clip_norm)


# --- which files are the variant's code ---------------------------------------------


def _module_root(module_name: str) -> str | None:
    """The top-level package directory (or lone module file) of ``module_name``;
    for the built-in kernels, the ``gradsweep.impls`` package's directory."""
    builtin = module_name == BUILTIN_PACKAGE or module_name.startswith(BUILTIN_PACKAGE + ".")
    top = BUILTIN_PACKAGE if builtin else module_name.split(".")[0]
    try:
        module = importlib.import_module(top)
    except ImportError:
        return None
    paths = list(getattr(module, "__path__", []))
    path = paths[0] if paths else getattr(module, "__file__", None)
    return os.path.abspath(path) if path else None


def code_roots(cell: Cell, plugins: Sequence[str] = ()) -> tuple[str, ...]:
    """Directories and files holding the variant's code, for ``--profile-only``.

    The ``impls`` package (built-in kernels and the helpers plugins build on),
    the package of the variant's backward function, and every plugin's package
    or module file.
    """
    backward = registry_for(plugins)[0].backward(cell.variant)
    names = [BUILTIN_PACKAGE, getattr(backward, "__module__", None) or "", *plugins]
    roots = [_module_root(n) for n in names if n]
    return tuple(dict.fromkeys(r for r in roots if r))


def _pattern(root: str) -> str:
    """A ``--profile-only`` substring: a directory ends with a separator."""
    return root + os.sep if os.path.isdir(root) else root


def short_path(path: str, roots: Sequence[str]) -> str | None:
    """``path`` relative to the parent of the root holding it (``impls/lstm.py``)."""
    full = os.path.abspath(path)
    for root in roots:
        if full == root or full.startswith(_pattern(root)):
            return os.path.relpath(full, os.path.dirname(root))
    return None


@functools.lru_cache(maxsize=64)
def source_lines(path: str) -> tuple[str, ...]:
    """The file's lines (empty when unreadable): scalene's own copy escapes characters."""
    try:
        return tuple(Path(path).read_text().splitlines())
    except (OSError, UnicodeDecodeError, ValueError):
        return ()


@functools.lru_cache(maxsize=64)
def function_index(path: str) -> dict[int, str]:
    """Line number -> qualified name of the innermost enclosing def (``_Scratch.__init__``)."""
    try:
        tree = ast.parse("\n".join(source_lines(path)))
    except (SyntaxError, ValueError):
        return {}
    index: dict[int, str] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                for line in range(first, (child.end_lineno or child.lineno) + 1):
                    index[line] = name
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return index


# --- running scalene -----------------------------------------------------------------


def scalene_argv(out: str, roots: Sequence[str], request: str, memory: bool) -> list[str]:
    """The scalene command line: profiling off until the loop, only ``roots`` profiled."""
    return [*SCALENE_COMMAND, "-o", out, "--off", "--no-stacks", "--profile-all",
            "--profile-only", ",".join(_pattern(r) for r in roots),
            "--cpu-sampling-rate", str(SAMPLING_INTERVAL_S),
            *(["--memory"] if memory else ["--cpu-only"]), str(TARGET), "---", request]


def _cell_record(cell: Cell) -> dict[str, Any]:
    record = asdict(cell)
    record["shape"] = [list(item) for item in cell.shape]
    return record


def _tail(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return " ".join(lines[-2:])[-STDERR_TAIL_CHARS:]


def scalene_available() -> bool:
    """Whether this Python can import scalene."""
    return importlib.util.find_spec("scalene") is not None


def _check_scalene() -> None:
    """ProfileError when the default command is used and scalene is not importable."""
    default = SCALENE_COMMAND[:3] == (sys.executable, "-m", "scalene")
    if default and not scalene_available():
        raise ProfileError("scalene is not installed in this Python "
                           f"({sys.executable}); pip install scalene")


def _execute(argv: list[str], timeout_s: float, tmp: str) -> None:
    """Run scalene with ``tmp`` as its temporary directory (scalene leaves a directory of
    python shims behind in it at every run); ProfileError with its last words when it fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL, env={**os.environ, "TMPDIR": tmp})
    except FileNotFoundError:
        raise ProfileError(f"cannot run scalene: {argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise ProfileError(f"scalene did not finish within {timeout_s:.0f} s") from None
    if done.returncode != 0:
        raise ProfileError(f"scalene exited with {done.returncode}: "
                           f"{_tail(done.stderr) or _tail(done.stdout) or 'no output'}")


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ProfileError(f"scalene wrote no {what}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(f"unreadable scalene {what}: {exc}") from None


def run_scalene(cell: Cell, plugins: Sequence[str], roots: Sequence[str], seconds: float,
                memory: bool = True) -> tuple[dict, dict]:
    """Profile ``cell`` under scalene in a subprocess: (scalene's JSON, the loop's outcome).

    Raises
    ------
    ProfileError
        When scalene is missing, fails or writes no JSON.
    CellFailed
        When the cell cannot be built or its backward raises.
    """
    _check_scalene()
    with tempfile.TemporaryDirectory(prefix="gradsweep-profile-") as tmp:
        out, request, outcome = (os.path.join(tmp, n)
                                 for n in ("scalene.json", "request.json", "outcome.json"))
        with open(request, "w") as f:
            json.dump({"cell": _cell_record(cell), "plugins": list(plugins),
                       "seconds": seconds, "outcome": outcome,
                       "sys_path": [p for p in sys.path if p]}, f)
        _execute(scalene_argv(out, roots, request, memory), seconds + STARTUP_ALLOWANCE_S, tmp)
        loop = _read_json(outcome, "outcome from the profiled cell")
        if "error" in loop:
            raise CellFailed(f"{cell.variant}: {loop['error']}")
        report = _read_json(out, "JSON profile")
    return report, loop


# --- scalene's JSON to rows ----------------------------------------------------------


def _number(entry: dict, key: str) -> float:
    value = entry.get(key) or 0.0
    return float(value) if isinstance(value, int | float) else 0.0


def _worth_keeping(line: ProfileLine) -> bool:
    return line.cpu_percent > MIN_CPU_PERCENT or line.peak_mb > MIN_MB \
        or line.alloc_mb > MIN_MB


def _file_lines(cell: Cell, path: str, short: str, entries: list[dict],
                calls: int) -> list[ProfileLine]:
    functions, source = function_index(path), source_lines(path)
    rows = []
    for e in entries:
        lineno = int(e.get("lineno", 0))
        code = source[lineno - 1] if 0 < lineno <= len(source) else str(e.get("line", ""))
        rows.append(ProfileLine(
            cell_id=cell.cell_id, variant=cell.variant, file=short, line=lineno,
            function=functions.get(lineno, MODULE_LEVEL), code=code.rstrip(),
            cpu_percent_python=_number(e, "n_cpu_percent_python"),
            cpu_percent_native=_number(e, "n_cpu_percent_c"),
            cpu_percent_system=_number(e, "n_sys_percent"),
            peak_mb=_number(e, "n_peak_mb"),
            alloc_mb=_number(e, "n_malloc_mb") / max(calls, 1)))
    return [r for r in rows if _worth_keeping(r)]


def parse_report(report: dict, cell: Cell, roots: Sequence[str],
                 calls: int = 1) -> tuple[ProfileLine, ...]:
    """scalene's JSON as rows of the variant's files, hottest (CPU) first.

    Files outside ``roots`` are dropped; lines with no CPU time and no memory
    too. ``alloc_mb`` is divided by ``calls`` (per backward call).
    """
    rows: list[ProfileLine] = []
    for path, data in (report.get("files") or {}).items():
        short = short_path(path, roots)
        if short is not None and isinstance(data, dict):
            rows += _file_lines(cell, path, short, list(data.get("lines") or ()), calls)
    rows.sort(key=lambda r: (-r.cpu_percent, -r.peak_mb, r.file, r.line))
    return tuple(rows)


def run_profile(cell: Cell, settings: MeasureSettings | None = None,
                plugins: Sequence[str] = (), *, seconds: float = DEFAULT_SECONDS,
                memory: bool = True) -> Profile:
    """Profile one cell under scalene (a subprocess); its lines and loop statistics.

    Raises
    ------
    ProfileError
        When scalene is missing or fails.
    CellFailed
        When the cell cannot be built or its backward raises, or when scalene
        recorded no line of the variant's code.
    """
    settings = settings or MeasureSettings()
    roots = code_roots(cell, plugins)
    report, loop = run_scalene(cell, plugins, roots, seconds, memory)
    calls = int(loop.get("calls", 1))
    lines = parse_report(report, cell, roots, calls)
    if not lines:  # nothing of the variant's code was sampled: never an empty success
        raise CellFailed(f"{cell.variant}: scalene recorded no line of its code (looked in "
                         f"{', '.join(roots) or 'no directory'}); is another copy of the code "
                         "imported?")
    files = tuple(dict.fromkeys(r.file for r in lines))
    return Profile(cell=cell, lines=lines, calls=calls,
                   elapsed_s=float(loop.get("elapsed_s", 0.0)),
                   max_rel_err=loop.get("max_rel_err"), files=files)


def profile_cell(cell: Cell, settings: MeasureSettings | None = None,
                 plugins: Sequence[str] = (), *,
                 seconds: float = DEFAULT_SECONDS) -> tuple[ProfileLine, ...]:
    """The profiled lines of ``cell`` (see :func:`run_profile`: ProfileError, CellFailed)."""
    return run_profile(cell, settings, plugins, seconds=seconds).lines



# --- sweeps: which cells, and a profile that never fails the cell --------------------


def wants_profile(cell: Cell, settings: MeasureSettings) -> bool:
    """Whether a sweep profiles ``cell``: ``profile = true`` and, when the spec has
    ``profile_variants`` (glob patterns over canonical names), one of them matches."""
    if not settings.profile:
        return False
    patterns = tuple(getattr(settings, "profile_variants", ()) or ())
    return not patterns or any(fnmatch.fnmatchcase(cell.variant, p) for p in patterns)


@dataclass(frozen=True)
class SweepProfile:
    """A sweep cell's profile rows, or the one-line reason there are none."""

    rows: tuple[ProfileLine, ...] = ()
    error: str | None = None


def profile_for_sweep(cell: Cell, settings: MeasureSettings, plugins: Sequence[str] = (),
                      seconds: float | None = None) -> SweepProfile:
    """Profile a sweep cell after its timing; never raises (the error is returned).

    ``seconds`` defaults to the spec's ``profile_seconds`` when MeasureSettings
    has that field, else :data:`DEFAULT_SECONDS`.
    """
    if not wants_profile(cell, settings):
        return SweepProfile()
    if seconds is None:
        seconds = float(getattr(settings, "profile_seconds", DEFAULT_SECONDS))
    try:
        lines = profile_cell(cell, settings, plugins, seconds=seconds)
    except Exception as exc:  # a failed profile must never cost the cell its timing
        return SweepProfile(error=" ".join(f"profile: {exc}".split()))
    return SweepProfile(rows=tuple(lines))


# --- the ``profile`` command ---------------------------------------------------------


def store_profile(dataset, profile: Profile, command: str = "") -> str:
    """Write ``profile`` to the ``profiles`` table under a new sweep; its sweep_id.

    The sweep gets ``started`` and ``finished`` events named ``profile VARIANT``
    so ``results list`` shows it; it has profile rows and no cells rows.
    """
    from gradsweep import env, store

    sweep_id, machine = new_sweep_id(), env.collect()

    def event(name: str, status: str) -> SweepEvent:
        return SweepEvent(name=f"profile {profile.cell.variant}", event=name, status=status,
                          spec=command, spec_hash=None, spec_path=None, cells_total=1,
                          git_commit=machine.git_commit, git_dirty=machine.git_dirty,
                          host=machine.host)

    store.write(dataset, "sweeps", sweep_id, [event("started", "running")])
    store.write(dataset, "profiles", sweep_id, list(profile.lines))
    store.write(dataset, "sweeps", sweep_id, [event("finished", "finished")])
    return sweep_id


