"""Run one cell: build its case, verify the variant, then time and measure it.

No variant is timed until its gradients agree with the float64 reference
(DESIGN.md, Correctness before speed). Any failure becomes a result row with
its status and a one-line error; nothing here raises for a bad cell.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from gradsweep import env, measure
from gradsweep.impls.base import Case, SkipCell, forward_for, is_peer, reference_for
from gradsweep.impls.gradcheck import TOLERANCE, max_rel_err
from gradsweep.impls.registry import load
from gradsweep.records import Cell, CellResult, MeasureSettings, skeleton


def error_text(exc: BaseException) -> str:
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


def _measured(cell: Cell, settings: MeasureSettings, plugins: tuple[str, ...],
              peaks: dict[str, float] | None) -> CellResult:
    prepared, err = prepare(cell, plugins)
    wrong = correctness_error(err, cell.dtype)
    if wrong:
        return skeleton(cell, "incorrect", wrong, max_rel_err=err)
    load_before = env.load_avg()
    timing = measure.time_call(prepared.call, min_time_s=settings.min_time_s,
                               samples=settings.samples, max_warmups=settings.max_warmups)
    load = max(load_before, env.load_avg())
    # tracemalloc sees numpy's buffers but not torch's allocator: no peer memory
    memory = (measure.memory_pass(prepared.call)
              if settings.memory and not is_peer(cell.variant) else None)
    return ok_result(cell, err, timing, flops=prepared.flops, memory=memory, load=load,
                     peak=(peaks or {}).get(cell.dtype))


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
        result = skeleton(cell, "error", error_text(exc))
    return stamped(result, started, t0)
