"""Every record passed between stages and every row the store writes.

Frozen dataclasses only: the spec (:class:`SweepSpec`, :class:`MeasureSettings`,
:class:`Grid`), what a sweep measures (:class:`Cell`, its :attr:`Cell.cell_id`),
what a cell gave (:class:`CellResult`, a row of ``cells``), a sweep's events
(:class:`SweepEvent`, rows of ``sweeps``), node probes (:class:`NodeProbe`, rows
of ``nodes``), profiled lines (:class:`ProfileLine`, rows of ``profiles``), the
statuses and the ids. ``gradsweep.store`` owns the Arrow schemas of these rows;
``tests/test_records.py`` checks that every field has its column.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from gradsweep.defaults import REPEATS, SAMPLES
from gradsweep.impls.base import parse_variant

#: Characters of a cell_id: the first 16 hex digits of its sha256.
CELL_ID_HEX = 16
#: Longest error text stored with a cell.
MAX_ERROR_CHARS = 2000

#: Cell statuses (DESIGN.md "Cells and their identity").
OK, INCORRECT, ERROR, CRASHED, TIMEOUT, SKIPPED = (
    "ok", "incorrect", "error", "crashed", "timeout", "skipped")
CELL_STATUSES = (OK, INCORRECT, ERROR, CRASHED, TIMEOUT, SKIPPED)
#: Statuses that count as a failed cell (exit code 1).
FAILED = (INCORRECT, ERROR, CRASHED, TIMEOUT)
#: Sweep statuses; a sweep still ``running`` whose driver is gone reads as ``incomplete``.
SWEEP_STATUSES = ("running", "finished", "failed", "cancelled")
#: Sweep roles: an ordinary sweep, or one side of a CI gate run.
ROLES = ("plain", "base", "candidate")


def new_sweep_id(now: datetime | None = None) -> str:
    """UTC time plus a random suffix, e.g. ``20261122T210500Z-3f9a``."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def one_line(text: str) -> str:
    """``text`` collapsed to one line and capped at :data:`MAX_ERROR_CHARS`."""
    flat = " ".join(str(text).split())
    return flat[:MAX_ERROR_CHARS]


# --- the spec ------------------------------------------------------------------------

@dataclass(frozen=True)
class MeasureSettings:
    """The ``[measure]`` table; every field optional with these defaults.

    Numbers are checked against ``spec.MEASURE_RANGES``, ``clock`` against
    ``spec.CLOCKS``. ``repeats`` is the number of blocks per group (each in its
    own worker process); ``clock`` what the samples measure (DESIGN.md,
    "Measurement").
    """

    threads: int = 1
    min_time_s: float = 0.01
    samples: int = SAMPLES
    repeats: int = REPEATS
    clock: str = "cpu"
    max_warmups: int = 10
    memory: bool = True
    profile: bool = False
    clip_value: float = 1.0
    clip_norm: float = 5.0
    seed: int = 0
    timeout_s: float = 300.0
    memory_budget_mb: float = 4096.0
    profile_seconds: float = 2.0
    profile_variants: tuple[str, ...] = ()
    carry_loops: bool = True


@dataclass(frozen=True)
class Grid:
    """One ``[[grid]]`` table, validated against its kernel."""

    kernel: str
    dtypes: tuple[str, ...]
    variants: tuple[tuple[str, tuple[str, ...]], ...]
    peers: tuple[str, ...]
    shape: tuple[tuple[str, tuple[int, ...]], ...]
    exclude: tuple[tuple[tuple[str, Any], ...], ...] = ()


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep spec."""

    name: str
    path: str
    plugins: tuple[str, ...]
    measure: MeasureSettings
    grids: tuple[Grid, ...]
    text: str = field(repr=False, default="")
    spec_hash: str = ""



# --- cells ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """What one measurement measures; its identity is :attr:`cell_id`."""

    kernel: str
    variant: str
    shape: tuple[tuple[str, int], ...]
    dtype: str
    threads: int
    seed: int
    clip_value: float
    clip_norm: float

    @property
    def dims(self) -> dict[str, int]:
        """Every dim by name, in the kernel's dim order."""
        return dict(self.shape)

    @property
    def shape_text(self) -> str:
        """Canonical text, e.g. ``N=16,T=32,D=32,H=64``."""
        return ",".join(f"{k}={v}" for k, v in self.shape)

    @property
    def cell_id(self) -> str:
        """First 16 hex digits of sha256 over the canonical JSON of the fields."""
        return cell_id_of(self)

    @property
    def group_id(self) -> str:
        """The cell's group: the same hash over every field but the variant."""
        return _digest({**_fields_of(self), "variant": None})


@dataclass(frozen=True)
class Group:
    """Every member (variant or peer) of one kernel, shape, dtype, threads, seed and clip
    settings: the unit of timing. Its members are sampled side by side, in rounds."""

    members: tuple[Cell, ...]

    @property
    def group_id(self) -> str:
        """The members' shared :attr:`Cell.group_id`."""
        return self.members[0].group_id

    @property
    def label(self) -> str:
        """``kernel shape dtype`` for messages."""
        first = self.members[0]
        return f"{first.kernel} {first.shape_text} {first.dtype}"


def groups_of(cells: Sequence[Cell]) -> tuple[Group, ...]:
    """``cells`` grouped by :attr:`Cell.group_id`, in order of first appearance."""
    by_id: dict[str, list[Cell]] = {}
    for cell in cells:
        by_id.setdefault(cell.group_id, []).append(cell)
    return tuple(Group(tuple(members)) for members in by_id.values())


@dataclass(frozen=True)
class BlockTask:
    """One block of a group: its members measured in one worker process.

    ``block`` numbers the group's blocks (0 .. repeats - 1); ``seed`` drives the
    block's shuffled round order and layout offsets. ``loops`` holds ``(cell_id,
    loops)`` for the members an earlier block of the group calibrated: they take
    that loop count instead of calibrating again (pyperf calibrates in its first
    process and passes the count on to the others). ``carried`` holds ``(cell_id,
    loops)`` an earlier sweep in the results store calibrated: a member checks it
    with one sample and keeps it unless its time per call has moved too far
    (:func:`gradsweep.measure.loops_hold`), so reruns time with the same counts.
    """

    group: Group
    block: int
    seed: int
    loops: tuple[tuple[str, int], ...] = ()
    carried: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Dropped:
    """A combination the kernel's ``check`` refused, with the reason."""

    grid: int
    kernel: str
    shape: str
    reason: str


@dataclass(frozen=True)
class Expansion:
    """The cells of a spec (a union over its grids) and what was dropped."""

    cells: tuple[Cell, ...]
    dropped: tuple[Dropped, ...]


def _fields_of(cell: Cell) -> dict[str, Any]:
    record = {f.name: getattr(cell, f.name) for f in fields(cell)}
    record["shape"] = dict(cell.shape)
    return record


def _digest(record: dict[str, Any]) -> str:
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:CELL_ID_HEX]


def cell_id_of(cell: Cell) -> str:
    """sha256 of ``json.dumps(fields, sort_keys=True, separators=(",", ":"))``."""
    return _digest(_fields_of(cell))



# --- rows of the store ----------------------------------------------------------------


@dataclass(frozen=True)
class CellResult:
    """One row of the ``cells`` table (see ``gradsweep.store.CELLS``)."""

    cell_id: str
    kernel: str
    variant: str
    axes: dict[str, str]
    shape: str
    dims: dict[str, int]
    dtype: str
    threads: int
    seed: int
    clip_value: float
    clip_norm: float
    status: str
    error: str | None = None
    max_rel_err: float | None = None
    samples_ns: tuple[float, ...] = ()
    loops: int | None = None
    warmups: int | None = None
    first_ns: float | None = None
    median_ns: float | None = None
    mad_ns: float | None = None
    ci_low_ns: float | None = None
    ci_high_ns: float | None = None
    warnings: tuple[str, ...] = ()
    peak_bytes: int | None = None
    retained_bytes: int | None = None
    alloc_count: int | None = None
    flops: int | None = None
    gflops: float | None = None
    peak_fraction: float | None = None
    node: str | None = None
    host: str | None = None
    cpu: str | None = None
    cores: int | None = None
    blas: str | None = None
    numpy_version: str | None = None
    python_version: str | None = None
    openblas_coretype: str | None = None
    load_avg: float | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    attempts: int = 1
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration_s: float | None = None
    group_id: str | None = None
    clock: str | None = None
    cpu_ns: tuple[float, ...] = ()
    wall_ns: tuple[float, ...] = ()
    sample_block: tuple[int, ...] = ()
    sample_round: tuple[int, ...] = ()
    blocks: int | None = None
    pids: tuple[int, ...] = ()
    descheduled: int | None = None

    def row(self) -> dict[str, Any]:
        """The record for ``store``: the dataclass plus built-in axis/dim columns.

        ``samples_ns`` are per-call times on ``clock`` (``cpu`` or ``wall``);
        ``cpu_ns`` and ``wall_ns`` both clocks of the same samples; sample i
        was taken in block ``sample_block[i]``, round ``sample_round[i]``, so
        two members' samples with equal block and round are a pair.
        """
        record = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for name in ("samples_ns", "warnings", "cpu_ns", "wall_ns", "sample_block",
                     "sample_round", "pids"):
            record[name] = list(getattr(self, name))
        record["axes"] = list(self.axes.items())
        record["dims"] = list(self.dims.items())
        return {**self.axes, **self.dims, **record}


def skeleton(cell: Cell, status: str, error: str | None = None, **extra: Any) -> CellResult:
    """A result for ``cell`` with identity fields filled and no measurement."""
    return CellResult(
        cell_id=cell.cell_id, kernel=cell.kernel, variant=cell.variant,
        axes=parse_variant(cell.variant)[1], shape=cell.shape_text, dims=cell.dims,
        dtype=cell.dtype, threads=cell.threads, seed=cell.seed, clip_value=cell.clip_value,
        clip_norm=cell.clip_norm, status=status, group_id=cell.group_id,
        error=None if error is None else one_line(error), **extra)


@dataclass(frozen=True)
class SweepOutcome:
    """What a finished (or interrupted) sweep did.

    ``loops_carried``: cells offered the loop count an earlier sweep in the store
    calibrated (``[measure] carry_loops``); ``loops_kept``: ``ok`` cells that ran at it.
    """

    sweep_id: str
    status: str
    counts: dict[str, int]
    dropped: int = 0
    wall_s: float = 0.0
    task_s: float = 0.0
    workers: int = 1
    profile_errors: tuple[str, ...] = ()
    loops_carried: int = 0
    loops_kept: int = 0

    @property
    def failed(self) -> int:
        """Cells whose status counts as a failure."""
        return sum(self.counts.get(s, 0) for s in FAILED)

    @property
    def cells(self) -> int:
        """Results stored by this run (skipped cells included)."""
        return sum(self.counts.values())

    def overhead_s_per_cell(self) -> float | None:
        """Harness time per cell: worker-seconds of wall time not spent inside a cell.

        ``(wall_s * workers - task_s) / cells``: scheduling, transfer and
        storing, spread over the cells (idle workers at the tail count too).
        """
        return (self.wall_s * self.workers - self.task_s) / self.cells if self.cells else None


@dataclass(frozen=True)
class BlockProgress:
    """How far a sweep's blocks have come, reported as each block finishes.

    A sweep's cells are stored only when their group's last block is in, and the
    blocks run pass by pass (every group's first block, then every second, ...), so
    the cells of a window finish together near its end: counting cells would show
    nothing for most of the sweep and then a burst. Blocks finish at a steady pace.

    Attributes
    ----------
    done, total : int
        Blocks finished, and blocks this run will run (groups x ``repeats``).
    elapsed_s : float
        Wall seconds since the first block was handed out.
    """

    done: int
    total: int
    elapsed_s: float

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace so far; None before the first block finished."""
        if self.done <= 0:
            return None
        return self.elapsed_s / self.done * max(0, self.total - self.done)



@dataclass(frozen=True)
class ProfileLine:
    """One profiled source line: a row of the ``profiles`` table (``store.PROFILES``)."""

    cell_id: str
    variant: str
    file: str
    line: int
    function: str
    code: str
    cpu_percent_python: float
    cpu_percent_native: float
    cpu_percent_system: float
    peak_mb: float
    alloc_mb: float

    @property
    def cpu_percent(self) -> float:
        """Python + native + system share of the profiled CPU time."""
        return self.cpu_percent_python + self.cpu_percent_native + self.cpu_percent_system



@dataclass(frozen=True)
class SweepEvent:
    """One row of ``sweeps``: a sweep started, resumed, finished, failed or was cancelled.

    The latest row per sweep wins. ``role`` is ``plain`` or one side of a CI
    gate run (``base``/``candidate``, sharing one ``ci_run`` id).
    """

    name: str
    event: str
    status: str
    spec: str
    spec_hash: str | None
    spec_path: str | None
    cells_total: int
    git_commit: str | None
    git_dirty: bool | None
    host: str | None
    role: str = "plain"
    ci_run: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class NodeProbe:
    """One row of ``nodes``: a node of a sweep and its GEMM peaks at 1 BLAS thread."""

    node: str
    host: str
    cpu: str
    cores: int
    blas: str
    gemm_gflops_float32: float
    gemm_gflops_float64: float

    def peaks(self) -> dict[str, float]:
        """GFLOP/s per dtype."""
        return {"float32": self.gemm_gflops_float32, "float64": self.gemm_gflops_float64}


def peaks_of(nodes: list[NodeProbe]) -> dict[str, dict[str, float]]:
    """``{node: {dtype: GFLOP/s}}`` from node probes."""
    return {n.node: n.peaks() for n in nodes}


@dataclass(frozen=True)
class BlockOutcome:
    """What one block gave: a row per member of its group (in member order)."""

    task: BlockTask
    rows: tuple[CellResult, ...]
