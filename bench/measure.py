"""Timing, memory and BLAS-thread control for one callable (DESIGN.md, Measurement).

``time_call`` times a zero-argument callable the way pyperf does: the first call
alone, then loops calibrated by doubling until one sample lasts ``min_time_s``,
then warmup samples until the timings stop falling, then ``samples`` timed
samples, each stored as nanoseconds per call. ``memory_pass`` runs the callable
once more, untimed, under tracemalloc. ``set_threads`` pins the BLAS thread
count with threadpoolctl and reports what is in effect. ``rematerialise`` copies
a case and its cache to fresh buffers at random offsets, outside the clock, so
data placement becomes noise rather than a bias (docs/noise.md).

References
----------
pyperf (V. Stinner), ``pyperf/_worker.py``: loop calibration by doubling and
warmup calibration by comparing the means of two halves of the warmup values.
Barrett, E. et al. (2017). Virtual machine warmup blows hot and cold. OOPSLA:
warmup length varies, so it is measured, not fixed.
hyperfine (D. Peter): outlier and first-run warnings.
Curtsinger, C. & Berger, E. D. (2013). STABILIZER: statistically sound
performance evaluation. ASPLOS: layout randomisation.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import ModuleType

import numpy as np

from gradsweep import stats

#: Loop calibration stops doubling here (pyperf uses 2**32; a callable this fast
#: is far below what the timer can resolve anyway, and is flagged).
MAX_LOOPS = 2**20
#: Warmup compares the median of the newest WARMUP_WINDOW warmup samples with the
#: median of the WARMUP_WINDOW before them; a window of 3 tolerates one spike.
WARMUP_WINDOW = 3
#: Warmup is over once the newer window is no more than this fraction faster than
#: the older one: the timings have stopped falling (pyperf uses 10% on means).
WARMUP_TOLERANCE = 0.10
#: Fewer samples than this cannot reach p < 0.01 in a Mann-Whitney test
#: (5 vs 5 gives at best p = 2/252 = 0.0079).
MIN_SAMPLES = 5
#: MAD/median above this is "high dispersion" (these machines show ~0.09).
MAX_DISPERSION = 0.10
#: Modified z-score above which a sample is an outlier (hyperfine's 10 sigma).
OUTLIER_Z = 10.0
#: First call slower than this multiple of the median is reported.
SLOW_FIRST_FACTOR = 2.0
#: A sample (all its loops) shorter than this multiple of the clock resolution
#: carries more than 0.1% quantisation error.
RESOLUTION_FACTOR = 1000.0
NS_PER_S = 1_000_000_000
#: A loop count carried over from an earlier sweep (:func:`loops_hold`) is kept while one
#: sample at it lasts within this factor of the band calibration lands in, ``[min_time,
#: 2 min_time)``: calibration's own doubling flips a count whenever a member's time per
#: call sits near a boundary, and a flipped count moves a torch peer's time per call by
#: 1.5-2.3% (docs/noise.md, "The torch peers between runs"); a carried count flips only
#: when the time per call has moved by more than this factor.
CARRIED_LOOPS_SLACK = 2 ** 0.5

Clock = Callable[[], int]


@dataclass(frozen=True)
class Timing:
    """Result of :func:`time_call`; every time is in nanoseconds per call.

    Attributes
    ----------
    samples_ns : tuple of float, shape (samples,)
        Each timed sample's elapsed time divided by ``loops``.
    loops : int
        Calls per sample.
    warmups : int
        Discarded warmup samples (after loop calibration).
    first_ns : float
        The very first call, timed alone.
    median_ns, mad_ns : float
        Median and unscaled MAD of ``samples_ns``.
    ci_low_ns, ci_high_ns : float
        95% percentile-bootstrap interval of the median.
    warnings : tuple of str
        ``"code: detail"`` strings, see :func:`timing_warnings`.
    warmup_settled : bool
        Whether warmup met its criterion before ``max_warmups``.
    """

    samples_ns: tuple[float, ...]
    loops: int
    warmups: int
    first_ns: float
    median_ns: float
    mad_ns: float
    ci_low_ns: float
    ci_high_ns: float
    warnings: tuple[str, ...] = ()
    warmup_settled: bool = True


@contextmanager
def gc_paused() -> Iterator[None]:
    """Collect garbage, then keep the cyclic GC disabled; restore its prior state after."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def run_sample(fn: Callable[[], object], loops: int, clock: Clock) -> int:
    """Call ``fn`` ``loops`` times back to back; return the elapsed clock ticks (ns)."""
    start = clock()
    for _ in range(loops):
        fn()
    return clock() - start


def calibrate_loops(fn: Callable[[], object], min_time_ns: float, clock: Clock) -> int:
    """Double the loop count from 1 until one sample lasts at least ``min_time_ns`` (pyperf).

    Returns
    -------
    int
        The first power of two whose sample reached ``min_time_ns``, capped at
        :data:`MAX_LOOPS`.
    """
    loops = 1
    while run_sample(fn, loops, clock) < min_time_ns and loops < MAX_LOOPS:
        loops *= 2
    return loops


def loops_hold(fn: Callable[[], object], loops: int, min_time_ns: float,
               clock: Clock) -> bool:
    """Whether ``loops`` (a count an earlier sweep calibrated) still suits ``fn``: one
    sample at it lasts at least ``min_time_ns / slack`` and less than ``2 min_time_ns
    slack`` (slack :data:`CARRIED_LOOPS_SLACK`), and it is a count calibration could give.

    The hysteresis pyperf gets from ``--loops``: a rerun keeps the count unless the time
    per call has moved by more than the slack, so reruns compare like with like.
    """
    if not 1 <= loops <= MAX_LOOPS or loops & (loops - 1):
        return False
    elapsed = run_sample(fn, loops, clock)
    short_ok = loops == MAX_LOOPS  # calibration stops here however short the sample
    return ((short_ok or elapsed >= min_time_ns / CARRIED_LOOPS_SLACK)
            and (loops == 1 or elapsed < 2 * min_time_ns * CARRIED_LOOPS_SLACK))


def warmup_settled(
    history: Sequence[float], window: int = WARMUP_WINDOW, tolerance: float = WARMUP_TOLERANCE
) -> bool:
    """Whether warmup samples have stopped getting faster (no downward trend).

    Adapted from pyperf's warmup calibration (two halves' means within 10%),
    one-sided and on medians: true once there are ``2 * window`` samples and
    the median of the newest ``window`` is at least ``(1 - tolerance)`` times
    the median of the ``window`` before them.

    Parameters
    ----------
    history : sequence of float, shape (k,)
        Warmup samples in ns per call, oldest first.
    window : int
    tolerance : float

    Returns
    -------
    bool
    """
    if len(history) < 2 * window:
        return False
    older = float(np.median(history[-2 * window : -window]))
    newer = float(np.median(history[-window:]))
    return newer >= (1.0 - tolerance) * older


def warm_up(
    fn: Callable[[], object], loops: int, max_warmups: int, clock: Clock
) -> tuple[int, bool]:
    """Run warmup samples until :func:`warmup_settled` or ``max_warmups``.

    Returns
    -------
    (count, settled) : tuple of (int, bool)
    """
    history: list[float] = []
    while len(history) < max_warmups:
        history.append(run_sample(fn, loops, clock) / loops)
        if warmup_settled(history):
            return len(history), True
    return len(history), False


def _validate(min_time_s: float, samples: int, max_warmups: int) -> None:
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if min_time_s < 0:
        raise ValueError(f"min_time_s must be >= 0, got {min_time_s}")
    if max_warmups < 0:
        raise ValueError(f"max_warmups must be >= 0, got {max_warmups}")


def summarise(
    samples_ns: Sequence[float], *, loops: int, warmups: int, first_ns: float,
    warmup_settled: bool = True,
) -> Timing:
    """Build a :class:`Timing` (median, MAD, bootstrap CI) from raw per-call samples."""
    low, high = stats.bootstrap_ci_median(samples_ns)
    return Timing(
        samples_ns=tuple(float(s) for s in samples_ns),
        loops=loops,
        warmups=warmups,
        first_ns=float(first_ns),
        median_ns=stats.median(samples_ns),
        mad_ns=stats.mad(samples_ns),
        ci_low_ns=low,
        ci_high_ns=high,
        warmup_settled=warmup_settled,
    )


def time_call(
    fn: Callable[[], object],
    *,
    min_time_s: float = 0.01,
    samples: int = 15,
    max_warmups: int = 10,
    clock: Clock = time.perf_counter_ns,
    load_avg: float | None = None,
    cores: int | None = None,
    timer_resolution_ns: float | None = None,
) -> Timing:
    """Time ``fn()``: first call, loop calibration, measured warmup, then timed samples.

    The cyclic GC is collected once and disabled for the whole measurement
    (as ``timeit`` does), then restored. The first call is timed alone; loops
    double from 1 until a sample lasts ``min_time_s`` (pyperf); warmup samples
    run until :func:`warmup_settled` (at most ``max_warmups``); then
    ``samples`` samples of ``loops`` calls each are kept, as ns per call.

    Parameters
    ----------
    fn : callable with no arguments
    min_time_s : float
        Minimum duration of one sample.
    samples : int
        Timed samples kept.
    max_warmups : int
        Cap on warmup samples.
    clock : callable returning int nanoseconds
        Injectable for tests.
    load_avg, cores, timer_resolution_ns
        Passed to :func:`timing_warnings`.

    Returns
    -------
    Timing
        With ``warnings`` filled by :func:`timing_warnings`.
    """
    _validate(min_time_s, samples, max_warmups)
    with gc_paused():
        first_ns = run_sample(fn, 1, clock)
        loops = calibrate_loops(fn, min_time_s * NS_PER_S, clock)
        warmups, settled = warm_up(fn, loops, max_warmups, clock)
        raw = [run_sample(fn, loops, clock) / loops for _ in range(samples)]
    timing = summarise(raw, loops=loops, warmups=warmups, first_ns=first_ns,
                       warmup_settled=settled)
    found = timing_warnings(timing, load_avg=load_avg, cores=cores,
                            timer_resolution_ns=timer_resolution_ns)
    return replace(timing, warnings=found)


def perf_counter_resolution_ns() -> float:
    """Resolution of ``time.perf_counter`` in ns, from ``time.get_clock_info``."""
    return time.get_clock_info("perf_counter").resolution * NS_PER_S


def _sample_warnings(timing: Timing) -> list[str]:
    """Warnings about the samples themselves: count, dispersion, outliers, first run."""
    out: list[str] = []
    n = len(timing.samples_ns)
    if n < MIN_SAMPLES:
        out.append(f"too-few-samples: {n} < {MIN_SAMPLES}")
    if timing.median_ns > 0:
        spread = timing.mad_ns / timing.median_ns
        if spread > MAX_DISPERSION:
            out.append(f"high-dispersion: MAD/median {spread:.2f} > {MAX_DISPERSION:.2f}")
        ratio = timing.first_ns / timing.median_ns
        if ratio > SLOW_FIRST_FACTOR:
            out.append(f"slow-first-run: first call {ratio:.1f}x the median > "
                       f"{SLOW_FIRST_FACTOR:g}x")
    outliers = int(np.sum(np.abs(stats.modified_z_scores(timing.samples_ns)) > OUTLIER_Z))
    if outliers:
        out.append(f"outliers: {outliers} of {n} samples with modified z-score > {OUTLIER_Z:g}")
    return out


def _setup_warnings(
    timing: Timing, load_avg: float | None, cores: int | None, resolution_ns: float
) -> list[str]:
    """Warnings about the conditions: warmup, timer resolution, machine load."""
    out: list[str] = []
    if not timing.warmup_settled:
        out.append(f"warmup-unsettled: still getting faster after {timing.warmups} warmups")
    shortest = min(timing.samples_ns) * timing.loops
    if shortest < RESOLUTION_FACTOR * resolution_ns:
        out.append(f"short-samples: {shortest:.0f} ns per sample < {RESOLUTION_FACTOR:g}x "
                   f"timer resolution {resolution_ns:g} ns")
    if load_avg is not None and cores is not None and load_avg > cores:
        out.append(f"high-load: load average {load_avg:.2f} > {cores} cores")
    return out


def timing_warnings(
    timing: Timing,
    *,
    load_avg: float | None = None,
    cores: int | None = None,
    timer_resolution_ns: float | None = None,
) -> tuple[str, ...]:
    """Warnings for a timing, each ``"code: detail"`` with a stable code.

    Codes: ``too-few-samples`` (< :data:`MIN_SAMPLES`), ``high-dispersion``
    (MAD/median > :data:`MAX_DISPERSION`), ``slow-first-run`` (first call >
    :data:`SLOW_FIRST_FACTOR` x median), ``outliers`` (modified z-score >
    :data:`OUTLIER_Z`, Iglewicz & Hoaglin 1993), ``warmup-unsettled``,
    ``short-samples`` (a sample under :data:`RESOLUTION_FACTOR` x the timer
    resolution), ``high-load`` (1-minute load average above ``cores``).

    Parameters
    ----------
    timing : Timing
    load_avg : float or None
        Skips the load check when None (or when ``cores`` is None).
    cores : int or None
    timer_resolution_ns : float or None
        Defaults to :func:`perf_counter_resolution_ns`.

    Returns
    -------
    tuple of str
    """
    resolution = (perf_counter_resolution_ns() if timer_resolution_ns is None
                  else timer_resolution_ns)
    found = _sample_warnings(timing) + _setup_warnings(timing, load_avg, cores, resolution)
    return tuple(found)


def warning_codes(warnings: Sequence[str]) -> tuple[str, ...]:
    """The stable codes of ``"code: detail"`` warnings, e.g. ``("high-load",)``."""
    return tuple(w.split(":", 1)[0] for w in warnings)


@dataclass(frozen=True)
class Memory:
    """Result of :func:`memory_pass`.

    Attributes
    ----------
    peak_bytes : int
        Traced peak during the call, above the level before it.
    retained_bytes : int
        Traced memory still held after the call (the result kept alive), above
        the level before it.
    alloc_count : int
        Net traced memory blocks the call left allocated (its result's blocks
        and anything else it kept); tracemalloc cannot count blocks that were
        allocated and freed within the call.
    """

    peak_bytes: int
    retained_bytes: int
    alloc_count: int


_SNAPSHOT_FILTER = (tracemalloc.Filter(False, tracemalloc.__file__),)


def _block_count(snapshot: tracemalloc.Snapshot) -> int:
    """Traced blocks in ``snapshot``, leaving out tracemalloc's own snapshot objects."""
    return len(snapshot.filter_traces(_SNAPSHOT_FILTER).traces)


def memory_pass(fn: Callable[[], object]) -> Memory:
    """Run ``fn()`` once, untimed, under tracemalloc and measure its memory.

    numpy reports its data buffers to tracemalloc, so array scratch space is
    seen; BLAS-internal buffers are not. Starts tracemalloc if it is not
    tracing and stops it afterwards only in that case. Sequence: snapshot and
    traced level before, ``tracemalloc.reset_peak()``, call keeping the
    result, read current and peak, snapshot after, then drop the result.

    Parameters
    ----------
    fn : callable with no arguments

    Returns
    -------
    Memory
    """
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        gc.collect()
        before_snap = tracemalloc.take_snapshot()
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        result = fn()
        current, peak = tracemalloc.get_traced_memory()
        after_snap = tracemalloc.take_snapshot()
        count = _block_count(after_snap) - _block_count(before_snap)
        del result
    finally:
        if started:
            tracemalloc.stop()
    return Memory(peak_bytes=max(peak - before, 0), retained_bytes=max(current - before, 0),
                  alloc_count=count)


@dataclass(frozen=True)
class ThreadInfo:
    """What :func:`set_threads` put in effect, for the record.

    Attributes
    ----------
    requested : int
        Threads asked for.
    blas : str
        numpy's BLAS, e.g. ``"openblas 0.3.31 Haswell"`` (``"none"``).
    blas_threads : tuple of int
        Each loaded BLAS library's thread count in effect (numpy's and others').
    """

    requested: int
    blas: str
    blas_threads: tuple[int, ...]


def blas_libraries() -> list[dict]:
    """threadpoolctl's info dicts of the loaded BLAS libraries (``user_api == "blas"``)."""
    from threadpoolctl import threadpool_info

    return [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]


def numpy_blas(libs: Sequence[dict]) -> list[dict]:
    """The BLAS libraries numpy itself loaded (path under ``numpy.libs`` or ``numpy/``).

    scipy and others bundle their own OpenBLAS; numpy's is the one the kernels use.
    Falls back to every library in ``libs`` when none is recognisably numpy's.
    """
    own = [lib for lib in libs if "numpy" in str(lib.get("filepath", ""))]
    return own or list(libs)


def describe_blas(libs: Sequence[dict]) -> str:
    """``"internal_api version architecture"`` per library, joined by ``"; "``."""
    names = [" ".join(str(lib[k]) for k in ("internal_api", "version", "architecture")
                      if lib.get(k)) for lib in libs]
    return "; ".join(names) or "none"


@contextmanager
def set_threads(n: int) -> Iterator[ThreadInfo]:
    """Limit BLAS/OpenMP thread pools to ``n`` threads (threadpoolctl) inside the block.

    Parameters
    ----------
    n : int >= 1

    Yields
    ------
    ThreadInfo
        The BLAS libraries and their thread counts in effect inside the block.
    """
    from threadpoolctl import threadpool_limits

    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    with threadpool_limits(limits=n):
        libs = blas_libraries()
        yield ThreadInfo(requested=n, blas=describe_blas(numpy_blas(libs)),
                         blas_threads=tuple(int(lib["num_threads"]) for lib in libs))


#: glibc malloc settings for every measuring process. By default glibc raises its mmap threshold
#: after the first large free, so whether a big temporary is a fresh mmap (page faults
#: every call) or reused heap depends on each process's history: two processes running
#: identical im2col code differed by 21% (p < 1e-5). Fixed thresholds (which also turn
#: the dynamic adjustment off) make both sides allocate alike (mallopt(3)).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**30)}


# --------------------------------------------------------------------------- layout

#: Bytes in a base page on x86-64 (and most aarch64 Linux kernels): copies made by
#: :func:`rematerialise` start at a random offset within one page of a page boundary.
PAGE_BYTES = 4096
#: Bytes in a cache line on x86-64.
CACHE_LINE_BYTES = 64

Offset = Callable[[np.ndarray], int]


def copy_at(a: np.ndarray, offset: int, *, boundary: int = PAGE_BYTES) -> np.ndarray:
    """A copy of ``a`` whose lowest byte lies ``offset`` bytes past a ``boundary``-byte boundary.

    The copy lives in a freshly allocated, over-allocated raw byte buffer (kept
    alive as its ``base``) and has ``a``'s dtype, shape and strides, so a
    C-contiguous array stays C-contiguous, a Fortran-ordered one Fortran-ordered
    and a strided view keeps its access pattern (its copy spans as many bytes as
    the view does). Values are equal; ``writeable`` is as in ``a``.

    Parameters
    ----------
    a : np.ndarray
        Any shape; not object dtype.
    offset : int >= 0
        Bytes past the boundary; a multiple of ``a.itemsize`` keeps elements aligned.
    boundary : int >= 1

    Returns
    -------
    np.ndarray
    """
    if offset < 0 or boundary < 1:
        raise ValueError(f"offset must be >= 0 and boundary >= 1, got {offset}, {boundary}")
    if a.dtype.hasobject:
        raise ValueError("copy_at: object arrays hold references, not data; share them")
    if a.size == 0:
        out = np.empty_like(a)
    else:
        low, high = byte_bounds(a)
        raw = np.empty(high - low + offset + boundary, dtype=np.uint8)
        start = (-raw.ctypes.data) % boundary + offset
        out = np.ndarray(a.shape, a.dtype, buffer=raw, offset=start + a.ctypes.data - low,
                         strides=a.strides)
        np.copyto(out, a)
    out.flags.writeable = bool(a.flags.writeable)
    return out


def byte_bounds(a: np.ndarray) -> tuple[int, int]:
    """``(low, high)``: the first and one-past-last byte addresses ``a`` touches (numpy's)."""
    from numpy.lib.array_utils import byte_bounds as bounds

    return bounds(a)


def random_offset(rng: np.random.Generator, itemsize: int, max_offset: int) -> int:
    """A multiple of ``itemsize`` drawn uniformly from ``[0, max_offset)`` (0 if none fit)."""
    if max_offset < 1 or itemsize < 1:
        raise ValueError(f"max_offset and itemsize must be >= 1, got {max_offset}, {itemsize}")
    choices = max(max_offset // itemsize, 1)
    return int(rng.integers(choices)) * itemsize


def _unchanged(new: Sequence[object], old: Sequence[object]) -> bool:
    return all(n is o for n, o in zip(new, old, strict=True))


def _walks_into(obj: object) -> bool:
    """Whether ``obj`` is a plain object whose attributes :class:`_Relocator` visits."""
    return (hasattr(obj, "__dict__") and not callable(obj)
            and not isinstance(obj, (type, ModuleType)))


class _Relocator:
    """Copies a structure with every ndarray moved by :func:`copy_at` (see :func:`relocate`).

    ``memo`` maps ``id`` of a visited object to ``(original, copy)``, so an
    object reached twice is copied once (aliasing is kept); an object still
    being copied when reached again (a reference cycle) is shared.
    """

    def __init__(self, offset_of: Offset, boundary: int):
        self.offset_of, self.boundary = offset_of, boundary
        self.memo: dict[int, tuple[object, object]] = {}

    def copy(self, obj: object) -> object:
        key = id(obj)
        if key in self.memo:
            return self.memo[key][1]
        self.memo[key] = (obj, obj)
        new = self._copy(obj)
        self.memo[key] = (obj, new)
        return new

    def _copy(self, obj: object) -> object:
        if type(obj) is np.ndarray:
            if obj.dtype.hasobject:
                return obj
            return copy_at(obj, self.offset_of(obj), boundary=self.boundary)
        if isinstance(obj, dict):
            return self._items(obj, list(obj), [obj[k] for k in obj])
        if isinstance(obj, list):
            return self._items(obj, range(len(obj)), obj)
        if isinstance(obj, tuple):
            items = [self.copy(v) for v in obj]
            if _unchanged(items, obj):
                return obj
            return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return self._dataclass(obj)
        if _walks_into(obj):
            return self._attributes(obj)
        return obj

    def _items(self, obj, keys, values):
        """A dict or list (or subclass) with its items copied; ``obj`` if none changed."""
        items = [self.copy(v) for v in values]
        if _unchanged(items, values):
            return obj
        new = copy.copy(obj)
        for k, v in zip(keys, items, strict=True):
            new[k] = v
        return new

    def _dataclass(self, obj):
        """``dataclasses.replace`` with the copied fields (works for frozen ones)."""
        fields = dataclasses.fields(obj)
        olds = [getattr(obj, f.name) for f in fields]
        news = [self.copy(v) for v in olds]
        if _unchanged(news, olds):
            return obj
        new = dataclasses.replace(obj, **{f.name: v for f, v in zip(fields, news, strict=True)
                                          if f.init})
        for f, v in zip(fields, news, strict=True):
            if not f.init:
                object.__setattr__(new, f.name, v)
        return new

    def _attributes(self, obj):
        """A shallow copy of a plain object with its ``__dict__`` values copied."""
        attrs = vars(obj)
        news = {k: self.copy(v) for k, v in attrs.items()}
        if _unchanged(list(news.values()), list(attrs.values())):
            return obj
        new = copy.copy(obj)
        for k, v in news.items():
            object.__setattr__(new, k, v)
        return new


def relocate(obj: object, offset_of: Offset, *, boundary: int = PAGE_BYTES) -> object:
    """A structurally identical copy of ``obj`` with every ndarray moved by :func:`copy_at`.

    Walks dicts, lists, tuples (named tuples too), dataclass instances (frozen
    ones through ``dataclasses.replace``) and plain objects' ``__dict__``. Each
    ``np.ndarray`` (exact type, not object dtype) is copied to
    ``offset_of(array)`` bytes past a ``boundary``; an array reached twice is
    copied once, so aliasing between, say, a case and its cache is kept (views
    of one buffer become separate copies). Everything else is shared, and a
    container holding no array is returned as is.

    Parameters
    ----------
    obj : object
        E.g. a ``Case``, a forward's cache, or the tuple ``(case, cache)``.
    offset_of : callable ``(array) -> int``
    boundary : int

    Returns
    -------
    object
        Same type and structure as ``obj``.
    """
    return _Relocator(offset_of, boundary).copy(obj)


def rematerialise(obj: object, rng: np.random.Generator, *,
                  max_offset: int = PAGE_BYTES) -> object:
    """``obj`` with every array copied to a fresh buffer at a random offset (Stabilizer).

    Each array gets its own offset, a multiple of its itemsize drawn uniformly
    from ``[0, max_offset)`` bytes past a page boundary (:func:`random_offset`),
    in a freshly allocated buffer (:func:`relocate`). Called outside the clock
    every few rounds, it turns the data alignment and relative placement of the
    case and cache that one process happened to get into noise that repeated
    rounds average, instead of a bias (Curtsinger & Berger, "STABILIZER:
    statistically sound performance evaluation", ASPLOS 2013; their heap
    randomisation re-places objects at random; docs/noise.md measures which
    placement matters here).

    Parameters
    ----------
    obj : object
        A case, a cache, or both as ``(case, cache)`` (to keep their aliasing).
    rng : np.random.Generator
    max_offset : int >= 1
        Offsets lie in ``[0, max_offset)``; one page by default.

    Returns
    -------
    object
        Equal values, same structure, dtypes, shapes, strides and writeable flags.
    """
    return relocate(obj, lambda a: random_offset(rng, a.itemsize, max_offset))


# --- blocks: both clocks, interleaved shuffled rounds (DESIGN.md, Measurement) ----------

#: A sample whose wall time exceeds its CPU time by more than this factor was
#: descheduled (the timing thread waited for a core): flagged, kept.
DESCHEDULED_RATIO = 1.1
#: What ``[measure] clock`` may name.
CLOCK_NAMES = ("cpu", "wall")


def cpu_clock(threads: int) -> Clock:
    """CPU time of the timing thread (one BLAS thread runs in it) or, with several
    threads, of the whole process."""
    return time.thread_time_ns if threads <= 1 else time.process_time_ns


def ranking_clock(name: str, threads: int) -> Clock:
    """The clock a block calibrates and ranks on: ``cpu`` (:func:`cpu_clock`) or ``wall``."""
    if name not in CLOCK_NAMES:
        raise ValueError(f"clock must be one of {CLOCK_NAMES}, got {name!r}")
    return cpu_clock(threads) if name == "cpu" else time.perf_counter_ns


def timed_sample(fn: Callable[[], object], loops: int, cpu: Clock, *,
                 primed: bool = False) -> tuple[float, float]:
    """``loops`` back-to-back calls of ``fn``: (CPU ns, wall ns) per call.

    The wall clock brackets the CPU clock, so ``wall >= cpu`` unless the CPU
    clock is coarser than the wall clock. ``primed``: one untimed call first, so
    every timed call follows a call of ``fn`` itself, whatever ran before (in
    shuffled rounds, another member). Unprimed, the first call of a sample pays
    for caches and allocator state the previous member left, and the per-call
    time falls with ``loops`` (``c / loops`` of that cost); loops are calibrated
    per block, and a member near a doubling boundary gets 2 in one run and 4 in
    the next (docs/noise.md, "Primed samples").
    """
    if primed:
        fn()
    wall0 = time.perf_counter_ns()
    cpu0 = cpu()
    for _ in range(loops):
        fn()
    cpu1 = cpu()
    wall1 = time.perf_counter_ns()
    return (cpu1 - cpu0) / loops, (wall1 - wall0) / loops


def descheduled(cpu_ns: Sequence[float], wall_ns: Sequence[float]) -> int:
    """How many samples spent more than :data:`DESCHEDULED_RATIO` x their CPU time on
    the wall clock."""
    cpu = np.asarray(cpu_ns, dtype=float)
    wall = np.asarray(wall_ns, dtype=float)
    return int(np.sum(wall > DESCHEDULED_RATIO * np.maximum(cpu, 1.0)))


def interleaved_rounds(members: int, rounds: int, rng: np.random.Generator,
                       take: Callable[[int, int], bool],
                       before_round: Callable[[int], None] = lambda r: None) -> None:
    """Randomised multiple interleaved trials (Abedi & Brecht, ICPE 2017).

    Each round visits every member still alive once, in a freshly shuffled
    order, calling ``take(member, round)`` for one sample; a member whose
    ``take`` returns False is dropped from later rounds. ``before_round(r)``
    runs first in each round, outside any sample (layout randomisation).
    Drift and interference over time then hit every member alike, and the
    samples of one round form a pair for any two members.

    Parameters
    ----------
    members : int
        Members, numbered 0 .. members - 1.
    rounds : int
    rng : numpy.random.Generator
        Drives the order (seeded per block, so a block is reproducible).
    """
    alive = list(range(members))
    for r in range(rounds):
        if not alive:
            return
        before_round(r)
        for m in rng.permutation(alive):
            if not take(int(m), r):
                alive.remove(int(m))
