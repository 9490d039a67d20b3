"""Tests for bench.measure: a fake clock makes loop counts and warmup decisions exact."""

import dataclasses
import gc
import tracemalloc

import numpy as np
import pytest

from gradsweep import measure
from gradsweep.measure import Timing

MS = 1_000_000


class FakeWork:
    """A callable whose i-th call advances a fake nanosecond clock by ``costs(i)``."""

    def __init__(self, costs):
        self.costs = costs
        self.now = 0
        self.calls = 0

    def __call__(self):
        self.now += int(self.costs(self.calls))
        self.calls += 1

    def clock(self):
        return self.now


def fake_time(costs, **kwargs):
    work = FakeWork(costs)
    kwargs.setdefault("timer_resolution_ns", 1.0)
    return measure.time_call(work, clock=work.clock, **kwargs), work


def codes(timing):
    return measure.warning_codes(timing.warnings)


def test_constant_cost_exact_loops_and_warmups():
    timing, work = fake_time(lambda i: MS, min_time_s=0.01, samples=15, max_warmups=10)
    # calibration: 1, 2, 4, 8 calls (< 10 ms), 16 calls = 16 ms >= 10 ms
    assert timing.loops == 16
    # settled at the first check: two windows of WARMUP_WINDOW samples
    assert timing.warmups == 2 * measure.WARMUP_WINDOW
    assert timing.warmup_settled
    assert timing.samples_ns == (float(MS),) * 15
    assert timing.first_ns == MS
    assert timing.median_ns == MS and timing.mad_ns == 0.0
    assert (timing.ci_low_ns, timing.ci_high_ns) == (MS, MS)
    assert timing.warnings == ()
    assert work.calls == 1 + (1 + 2 + 4 + 8 + 16) + 16 * (6 + 15)


@pytest.mark.parametrize(("cost_ns", "holds"), [
    (MS, True),  # what calibration gives: 16 calls = 16 ms in [10, 20)
    (0.45 * MS, True), (1.75 * MS, True),  # within the slack: calibration would flip
    (0.43 * MS, False), (1.8 * MS, False),  # beyond it: calibrate again
])
def test_a_carried_loop_count_holds_until_the_time_per_call_moves_beyond_the_slack(
        cost_ns, holds):
    """16 calls carried at min_time 10 ms hold while one sample lasts [7.07, 28.3) ms."""
    work = FakeWork(lambda i: cost_ns)
    assert measure.loops_hold(work, 16, 10 * MS, work.clock) is holds
    assert work.calls == 16


def test_a_count_calibration_gives_always_holds_and_odd_counts_never_do():
    for cost_ns in np.geomspace(3e3, 3e7, 200):
        work = FakeWork(lambda i, c=cost_ns: c)
        loops = measure.calibrate_loops(work, 10 * MS, work.clock)
        assert measure.loops_hold(work, loops, 10 * MS, work.clock), cost_ns
    work = FakeWork(lambda i: MS)
    for loops in (0, 3, 12, 2 * measure.MAX_LOOPS):
        assert not measure.loops_hold(work, loops, 10 * MS, work.clock)
    assert work.calls == 0  # refused before any call
    tiny = FakeWork(lambda i: 1)
    assert measure.loops_hold(tiny, measure.MAX_LOOPS, 10 * MS, tiny.clock)  # calibration's cap
    slow = FakeWork(lambda i: 100 * MS)
    assert measure.loops_hold(slow, 1, 10 * MS, slow.clock)  # one call, however long


def test_loops_exact_power_of_two_boundary():
    timing, _ = fake_time(lambda i: 2500, min_time_s=0.00001, samples=3, max_warmups=0)
    # 10_000 ns needed: 1, 2 calls too short, 4 calls = 10_000 ns reaches it
    assert timing.loops == 4


def test_warmup_continues_while_getting_faster():
    # each call 5% faster than the last: every window is >10% faster than the one before
    timing, _ = fake_time(lambda i: 100 * MS * 0.95**i, min_time_s=0.01, samples=5,
                          max_warmups=20)
    assert timing.loops == 1  # the first calibration call already lasts 95 ms
    assert timing.warmups == 20
    assert not timing.warmup_settled
    assert "warmup-unsettled" in codes(timing)


def test_warmup_settles_after_trend_ends():
    def costs(i):
        return MS * (4 if i < 20 else 1)

    timing, _ = fake_time(costs, min_time_s=0.01, samples=5, max_warmups=20)
    # first call + calibration (loops 1, 2, then 4 calls = 16 ms) use 8 calls; warmup
    # samples of 4 calls: 3 slow (4 ms) then fast (1 ms). At 6 and 7 warmups the newer
    # window is 75% faster than the older; at 8 the older window's median is fast too.
    assert timing.loops == 4
    assert timing.warmups == 8
    assert timing.warmup_settled
    assert timing.samples_ns == (float(MS),) * 5


def test_constant_slow_warmup_settles_at_first_check():
    timing, _ = fake_time(lambda i: 4 * MS, min_time_s=0.01, samples=5, max_warmups=20)
    assert timing.warmups == 2 * measure.WARMUP_WINDOW


def test_warmup_settled_criterion():
    w = measure.WARMUP_WINDOW
    assert not measure.warmup_settled([1.0] * (2 * w - 1))
    assert measure.warmup_settled([1.0] * (2 * w))
    assert measure.warmup_settled([1.0] * w + [1.5] * w)  # slower is not warming up
    assert not measure.warmup_settled([1.0] * w + [0.8] * w)  # 20% faster: still warming
    assert measure.warmup_settled([1.0] * w + [0.95] * w)  # within the 10% tolerance


def test_zero_warmups_allowed():
    timing, _ = fake_time(lambda i: MS, min_time_s=0.001, samples=4, max_warmups=0)
    assert timing.warmups == 0
    assert len(timing.samples_ns) == 4


def test_gc_disabled_inside_and_restored():
    seen = []

    def fn():
        seen.append(gc.isenabled())

    assert gc.isenabled()
    measure.time_call(fn, min_time_s=0.0, samples=2, max_warmups=0)
    assert seen and not any(seen)
    assert gc.isenabled()
    gc.disable()
    try:
        measure.time_call(fn, min_time_s=0.0, samples=2, max_warmups=0)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_gc_restored_after_exception():
    def boom():
        raise RuntimeError("kernel failed")

    with pytest.raises(RuntimeError):
        measure.time_call(boom)
    assert gc.isenabled()


def test_invalid_arguments():
    with pytest.raises(ValueError, match="samples"):
        measure.time_call(lambda: None, samples=0)
    with pytest.raises(ValueError, match="max_warmups"):
        measure.time_call(lambda: None, max_warmups=-1)


class ColdFirstCall(FakeWork):
    """Each call costs ``warm`` ns, plus ``cold`` ns when another callable ran since
    this one's last call (``evict()``): caches a shuffled round's other members took."""

    def __init__(self, warm, cold):
        super().__init__(lambda i: warm)
        self.warm, self.cold, self.evicted = warm, cold, True

    def __call__(self):
        self.now += self.cold if self.evicted else 0
        self.evicted = False
        super().__call__()

    def evict(self):
        self.evicted = True


@pytest.mark.parametrize("loops", [1, 2, 4, 16])
def test_a_primed_sample_times_warm_calls_whatever_its_loops(loops):
    work = ColdFirstCall(warm=MS, cold=400_000)
    primed, unprimed = [], []
    for _ in range(3):
        work.evict()
        primed.append(measure.timed_sample(work, loops, work.clock, primed=True)[0])
        work.evict()
        unprimed.append(measure.timed_sample(work, loops, work.clock)[0])
    assert primed == [float(MS)] * 3  # the untimed first call took the cold cost
    assert unprimed == [MS + 400_000 / loops] * 3  # falls with loops: c / loops
    assert work.calls == 3 * (2 * loops + 1)


def test_real_clock_smoke():
    timing = measure.time_call(lambda: sum(range(100)), min_time_s=0.001, samples=5)
    assert len(timing.samples_ns) == 5 and timing.loops >= 1
    assert all(s > 0 for s in timing.samples_ns)
    assert timing.ci_low_ns <= timing.median_ns <= timing.ci_high_ns


def make_timing(samples, *, loops=1000, first=None, warmups=3, settled=True):
    t = measure.summarise(samples, loops=loops, warmups=warmups,
                          first_ns=samples[0] if first is None else first,
                          warmup_settled=settled)
    return t


def test_warnings_clean_timing_has_none():
    t = make_timing([100.0, 101.0, 99.0, 100.0, 100.5, 99.5])
    assert measure.timing_warnings(t, load_avg=0.5, cores=2, timer_resolution_ns=1.0) == ()


def test_warnings_each_code():
    w = measure.timing_warnings(make_timing([100.0, 101.0, 99.0]), timer_resolution_ns=1.0)
    assert measure.warning_codes(w) == ("too-few-samples",)
    assert w[0] == "too-few-samples: 3 < 5"

    spread = make_timing([100.0, 80.0, 120.0, 70.0, 130.0, 100.0])
    w = measure.timing_warnings(spread, timer_resolution_ns=1.0)
    assert w == ("high-dispersion: MAD/median 0.20 > 0.10",)

    outlier = make_timing([100.0, 101.0, 99.0, 100.0, 100.0, 100.5, 99.5, 200.0])
    assert measure.warning_codes(measure.timing_warnings(outlier, timer_resolution_ns=1.0)) == (
        "outliers",)

    first = make_timing([100.0] * 6, first=350.0)
    w = measure.timing_warnings(first, timer_resolution_ns=1.0)
    assert w == ("slow-first-run: first call 3.5x the median > 2x",)

    short = make_timing([100.0] * 6, loops=2)
    w = measure.timing_warnings(short, timer_resolution_ns=1.0)
    assert measure.warning_codes(w) == ("short-samples",)

    unsettled = make_timing([100.0] * 6, settled=False)
    assert measure.warning_codes(measure.timing_warnings(
        unsettled, timer_resolution_ns=1.0)) == ("warmup-unsettled",)


def test_warnings_load_above_cores():
    t = make_timing([100.0] * 6)
    w = measure.timing_warnings(t, load_avg=3.1, cores=2, timer_resolution_ns=1.0)
    assert w == ("high-load: load average 3.10 > 2 cores",)
    assert measure.timing_warnings(t, load_avg=2.0, cores=2, timer_resolution_ns=1.0) == ()
    assert measure.timing_warnings(t, load_avg=None, cores=2, timer_resolution_ns=1.0) == ()


def test_time_call_passes_load_to_warnings():
    timing, _ = fake_time(lambda i: MS, samples=5, max_warmups=6, load_avg=9.0, cores=2)
    assert codes(timing) == ("high-load",)


def test_timing_is_frozen():
    t = make_timing([1.0])
    assert isinstance(t, Timing)
    with pytest.raises(AttributeError):
        t.loops = 2


SCRATCH_BYTES = 64 * 1024 * 1024


def scratch_then_small():
    scratch = np.ones(SCRATCH_BYTES // 8)  # 64 MiB float64, freed before returning
    total = scratch.sum()
    del scratch
    return np.full(1000, total)  # 8000 bytes of data kept by the caller


def test_memory_pass_peak_and_retained():
    mem = measure.memory_pass(scratch_then_small)
    assert mem.peak_bytes == pytest.approx(SCRATCH_BYTES, rel=0.05)
    assert 8000 <= mem.retained_bytes < 8000 + 4096
    assert mem.alloc_count >= 1
    assert not tracemalloc.is_tracing()


def test_memory_pass_leaves_running_tracemalloc_on():
    tracemalloc.start()
    try:
        mem = measure.memory_pass(lambda: None)
        assert tracemalloc.is_tracing()
        assert mem.retained_bytes < 4096
    finally:
        tracemalloc.stop()


def test_memory_pass_stops_tracing_on_error():
    def boom():
        raise MemoryError("too big")

    with pytest.raises(MemoryError):
        measure.memory_pass(boom)
    assert not tracemalloc.is_tracing()


def test_set_threads_reports_blas():
    from threadpoolctl import threadpool_info

    before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    with measure.set_threads(1) as info:
        assert info.requested == 1
        assert isinstance(info.blas, str) and info.blas
        assert all(n == 1 for n in info.blas_threads)
    after = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert after == before
    with pytest.raises(ValueError), measure.set_threads(0):
        pass


def test_numpy_blas_prefers_numpys_library():
    scipy_lib = {"internal_api": "openblas", "version": "0.3.30", "architecture": "Haswell",
                 "filepath": "/x/site-packages/scipy.libs/libscipy_openblas.so"}
    numpy_lib = {"internal_api": "openblas", "version": "0.3.31", "architecture": "Haswell",
                 "filepath": "/x/site-packages/numpy.libs/libscipy_openblas64_.so"}
    assert measure.numpy_blas([scipy_lib, numpy_lib]) == [numpy_lib]
    assert measure.numpy_blas([scipy_lib]) == [scipy_lib]
    assert measure.describe_blas([numpy_lib]) == "openblas 0.3.31 Haswell"
    assert measure.describe_blas([]) == "none"


# --------------------------------------------------------------------------- layout

def _offset_in_page(a: np.ndarray) -> int:
    return measure.byte_bounds(a)[0] % measure.PAGE_BYTES


def _arrays(obj):
    """Every ndarray in a case/cache-like structure, depth first."""
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _arrays(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _arrays(v)
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _arrays(getattr(obj, f.name))


@pytest.mark.parametrize("offset", [0, 8, 72, 4088])
def test_copy_at_places_exactly_and_keeps_layout(offset):
    base = np.arange(6 * 7, dtype=np.float64).reshape(6, 7)
    for a in (base, base.T, np.asfortranarray(base), base[::2, 1::3], base[::-1]):
        out = measure.copy_at(a, offset)
        assert _offset_in_page(out) == offset
        assert out.ctypes.data != a.ctypes.data
        assert not np.shares_memory(out, base)
        assert np.array_equal(out, a) and out.dtype == a.dtype and out.strides == a.strides
        assert out.flags.c_contiguous == a.flags.c_contiguous
        assert out.flags.f_contiguous == a.flags.f_contiguous
        assert out.flags.writeable


def test_copy_at_keeps_read_only_and_empty_and_refuses_objects():
    ro = np.ones(5, dtype=np.float32)
    ro.flags.writeable = False
    out = measure.copy_at(ro, 12)
    assert not out.flags.writeable and _offset_in_page(out) == 12
    empty = measure.copy_at(np.zeros((0, 3)), 8)
    assert empty.shape == (0, 3)
    with pytest.raises(ValueError, match="object"):
        measure.copy_at(np.array([None, 1], dtype=object), 0)
    with pytest.raises(ValueError, match="offset"):
        measure.copy_at(ro, -8)


def test_random_offset_covers_the_range_uniformly():
    rng = np.random.default_rng(0)
    draws = np.array([measure.random_offset(rng, 8, 4096) for _ in range(51_200)])
    assert np.all(draws % 8 == 0) and draws.min() == 0 and draws.max() == 4096 - 8
    counts = np.bincount(draws // 8, minlength=512)
    # 100 expected per offset: a chi-square test of uniformity at the 1% level
    from scipy.stats import chisquare
    assert chisquare(counts).pvalue > 0.01
    assert measure.random_offset(rng, 16, 8) == 0


@dataclasses.dataclass(frozen=True)
class Holder:
    a: np.ndarray
    label: str
    derived: np.ndarray = dataclasses.field(init=False, default=None)

    def __post_init__(self):
        object.__setattr__(self, "derived", self.a * 2)


class Plain:
    def __init__(self, a):
        self.a = a
        self.name = "plain"


def test_relocate_keeps_structure_aliasing_and_leaves():
    from collections import namedtuple

    Pair = namedtuple("Pair", "x y")
    shared = np.arange(10.0)
    tag = object()
    obj = {"h": Holder(shared, "h"), "l": [shared, tag], "p": Pair(np.ones(3), 1.5),
           "o": Plain(np.zeros(4, dtype=np.int32)), "s": {"N": 3}, "fn": len}
    new = measure.relocate(obj, lambda a: 3 * a.itemsize)
    assert type(new["p"]) is Pair and type(new["o"]) is Plain and type(new["h"]) is Holder
    assert new["h"].a is new["l"][0]  # one array reached twice is copied once
    assert new["h"].derived is not obj["h"].derived
    assert np.array_equal(new["h"].derived, shared * 2)
    assert new["l"][1] is tag and new["fn"] is len and new["s"] is obj["s"]
    assert new["h"].label == "h" and new["p"].y == 1.5 and new["o"].name == "plain"
    for old, arr in zip(_arrays(obj), _arrays(new), strict=True):
        assert np.array_equal(old, arr) and arr.ctypes.data != old.ctypes.data
        assert _offset_in_page(arr) == 3 * arr.itemsize
    assert _offset_in_page(new["o"].a) == 12
    assert measure.relocate(obj["s"], lambda a: 0) is obj["s"]


def test_rematerialise_moves_every_array_to_varying_offsets():
    from gradsweep.impls import lstm

    case = lstm.make_case({"N": 2, "T": 3, "D": 4, "H": 5}, "float64", seed=1)
    _, cache = lstm.forward(case)
    rng = np.random.default_rng(7)
    seen = set()
    for _ in range(20):
        new_case, new_cache = measure.rematerialise((case, cache), rng)
        assert type(new_case) is type(case) and new_case.shape is case.shape
        assert new_cache.keys() == cache.keys() and new_cache["reverse"] is cache["reverse"]
        pairs = list(zip(_arrays((case, cache)), _arrays((new_case, new_cache)), strict=True))
        for old, arr in pairs:
            assert arr.ctypes.data != old.ctypes.data and np.array_equal(arr, old)
            assert arr.flags.c_contiguous and arr.flags.writeable == old.flags.writeable
            assert _offset_in_page(arr) % arr.itemsize == 0
        seen.update(_offset_in_page(arr) for _, arr in pairs)
    assert len(seen) > 50  # 11 distinct arrays x 20 calls over 512 possible offsets


@pytest.mark.parametrize("variant", ["buffers=prealloc,wgrad=batched,clip=none",
                                     "buffers=list,wgrad=step,clip=norm"])
def test_rematerialised_lstm_gradients_are_identical(variant):
    from gradsweep.impls import lstm

    case = lstm.make_case({"N": 4, "T": 5, "D": 6, "H": 7}, "float64", seed=3)
    _, cache = lstm.forward(case)
    backward = lstm.KERNEL.variants[f"lstm/{variant}"]
    want = backward(case, cache)
    new_case, new_cache = measure.rematerialise((case, cache), np.random.default_rng(0))
    got = backward(new_case, new_cache)
    assert want.keys() == got.keys()
    for name in want:
        assert np.array_equal(want[name], got[name]), name


def test_rematerialised_deconv2d_keeps_read_only_views_and_gradients():
    from gradsweep.impls import deconv2d

    kernel = deconv2d.KERNEL
    case = kernel.make_case(kernel.full_shape({"N": 2, "Hin": 5, "Win": 4}), "float64", 2)
    _, cache = kernel.forward(case)
    new_case, new_cache = measure.rematerialise((case, cache), np.random.default_rng(1))
    assert not new_cache["X2"].flags.writeable and new_cache["X"] is new_case.X
    for method in ("im2col", "gather"):
        backward = kernel.variants[f"deconv2d/method={method}"]
        want, got = backward(case, cache), backward(new_case, new_cache)
        for name in want:
            assert np.array_equal(want[name], got[name]), (method, name)
