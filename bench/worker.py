"""Run one cell: build its case, verify the variant, then time and measure it.

No variant is timed until its gradients agree with the float64 reference
(DESIGN.md, Correctness before speed). Any failure becomes a result row with
its status and a one-line error; nothing here raises for a bad cell.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from bench import env, measure
from bench.spec import Cell, MeasureSettings
from impls.base import Case, SkipCell, forward_for, is_peer, parse_variant, reference_for
from impls.gradcheck import TOLERANCE, max_rel_err
from impls.registry import load

#: Longest error text stored with a cell.
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class CellResult:
    """One row of the ``cells`` table (see ``bench.store.CELLS``)."""

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

    def row(self) -> dict[str, Any]:
        """The record for ``store``: the dataclass plus built-in axis/dim columns."""
        record = {k: getattr(self, k) for k in self.__dataclass_fields__}
        record["samples_ns"] = list(self.samples_ns)
        record["warnings"] = list(self.warnings)
        record["axes"] = list(self.axes.items())
        record["dims"] = list(self.dims.items())
        return {**self.axes, **self.dims, **record}


def skeleton(cell: Cell, status: str, error: str | None = None, **extra: Any) -> CellResult:
    """A result for ``cell`` with identity fields filled and no measurement."""
    return CellResult(
        cell_id=cell.cell_id, kernel=cell.kernel, variant=cell.variant,
        axes=parse_variant(cell.variant)[1], shape=cell.shape_text, dims=cell.dims,
        dtype=cell.dtype, threads=cell.threads, seed=cell.seed, clip_value=cell.clip_value,
        clip_norm=cell.clip_norm, status=status,
        error=None if error is None else one_line(error), **extra)


def one_line(text: str) -> str:
    """``text`` collapsed to one line and capped at :data:`MAX_ERROR_CHARS`."""
    flat = " ".join(str(text).split())
    return flat[:MAX_ERROR_CHARS]


def _error_text(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


@dataclass(frozen=True)
class Prepared:
    """A cell ready to time: its backward, case and (prepared) cache."""

    backward: Any
    case: Case
    state: Any
    flops: int

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
    return Prepared(backward, case, state, kernel.flops(cell.dims)), err


def _measured(cell: Cell, settings: MeasureSettings, plugins: tuple[str, ...],
              peaks: dict[str, float] | None) -> CellResult:
    prepared, err = prepare(cell, plugins)
    tolerance = TOLERANCE[cell.dtype]
    if not math.isfinite(err) or err > tolerance:
        return skeleton(cell, "incorrect",
                        f"max_rel_err {err:.3g} exceeds the {cell.dtype} tolerance {tolerance:g}",
                        max_rel_err=err)
    load_before = env.load_avg()
    timing = measure.time_call(prepared.call, min_time_s=settings.min_time_s,
                               samples=settings.samples, max_warmups=settings.max_warmups)
    load = max(load_before, env.load_avg())
    # tracemalloc sees numpy's buffers but not torch's allocator: no peer memory
    memory = (measure.memory_pass(prepared.call)
              if settings.memory and not is_peer(cell.variant) else None)
    gflops = prepared.flops / timing.median_ns if timing.median_ns else None
    peak = (peaks or {}).get(cell.dtype)
    machine = env.collect()
    warnings = measure.timing_warnings(timing, load_avg=load, cores=machine.cores)
    return skeleton(
        cell, "ok", max_rel_err=err, samples_ns=tuple(timing.samples_ns), loops=timing.loops,
        warmups=timing.warmups, first_ns=timing.first_ns, median_ns=timing.median_ns,
        mad_ns=timing.mad_ns, ci_low_ns=timing.ci_low_ns, ci_high_ns=timing.ci_high_ns,
        warnings=tuple(warnings), load_avg=load,
        peak_bytes=memory.peak_bytes if memory else None,
        retained_bytes=memory.retained_bytes if memory else None,
        alloc_count=memory.alloc_count if memory else None,
        flops=prepared.flops, gflops=gflops,
        peak_fraction=gflops / peak if gflops and peak else None)


def _with_environment(result: CellResult, started: datetime, t0: float) -> CellResult:
    machine = env.collect()
    return replace(
        result, node=env.ray_node_id() or machine.host, host=machine.host, cpu=machine.cpu,
        cores=machine.cores, blas=machine.blas, numpy_version=machine.numpy_version,
        python_version=machine.python_version, openblas_coretype=machine.openblas_coretype,
        git_commit=machine.git_commit, git_dirty=machine.git_dirty,
        load_avg=result.load_avg if result.load_avg is not None else env.load_avg(),
        started_at=started, duration_s=time.perf_counter() - t0)


def run_cell(cell: Cell, settings: MeasureSettings, plugins: tuple[str, ...] = (),
             peaks: dict[str, float] | None = None) -> CellResult:
    """Verify, time and measure one cell; every failure is a row, never a raise.

    Parameters
    ----------
    peaks : dict[str, float], optional
        This node's GEMM peak in GFLOP/s per dtype, for ``peak_fraction``.
    """
    started, t0 = datetime.now(UTC), time.perf_counter()
    try:
        with measure.set_threads(cell.threads):
            result = _measured(cell, settings, plugins, peaks)
    except SkipCell as exc:
        result = skeleton(cell, "skipped", str(exc))
    except MemoryError as exc:
        result = skeleton(cell, "error", f"MemoryError: {exc or 'out of memory'}")
    except Exception as exc:  # a failing cell is a row, never the end of a sweep
        result = skeleton(cell, "error", _error_text(exc))
    return _with_environment(result, started, t0)
