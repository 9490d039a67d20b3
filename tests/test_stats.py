"""Tests for bench.stats against hand-computed values and scipy."""

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from gradsweep import stats


def test_median_and_mad_hand_computed():
    x = [1.0, 2.0, 3.0, 4.0, 100.0]
    assert stats.median(x) == 3.0
    # |x - 3| = 2, 1, 0, 1, 97 -> median 1
    assert stats.mad(x) == 1.0
    assert stats.scaled_mad(x) == pytest.approx(stats.MAD_TO_SIGMA)
    assert stats.median([4.0, 1.0, 3.0, 2.0]) == 2.5


def test_single_sample():
    assert stats.median([7.0]) == 7.0
    assert stats.mad([7.0]) == 0.0
    assert stats.bootstrap_ci_median([7.0]) == (7.0, 7.0)
    assert stats.modified_z_scores([7.0]).tolist() == [0.0]
    assert stats.geometric_mean([7.0]) == pytest.approx(7.0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: stats.median([]),
        lambda: stats.mad([]),
        lambda: stats.bootstrap_ci_median([]),
        lambda: stats.modified_z_scores([]),
        lambda: stats.mann_whitney([], [1.0]),
        lambda: stats.mann_whitney([1.0], []),
        lambda: stats.wilcoxon_signed_rank([]),
        lambda: stats.ratio_of_medians([], [1.0]),
        lambda: stats.paired_log_ratios([], []),
        lambda: stats.bootstrap_ci_ratio([1.0], [], paired=False),
        lambda: stats.geometric_mean([]),
    ],
)
def test_empty_input_raises_clear_error(call):
    with pytest.raises(ValueError, match="empty"):
        call()


def test_nan_rejected():
    with pytest.raises(ValueError, match="NaN"):
        stats.median([1.0, float("nan")])


def test_modified_z_scores_hand_computed():
    x = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    z = stats.modified_z_scores(x)
    np.testing.assert_allclose(z, 0.6745 * (x - 3.0) / 1.0)


def test_modified_z_scores_mad_zero_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = stats.modified_z_scores([5.0, 5.0, 5.0, 9.0, 1.0])
    assert z.tolist() == [0.0, 0.0, 0.0, math.inf, -math.inf]


def test_bootstrap_ci_median_brackets_and_is_deterministic():
    x = np.random.default_rng(1).normal(100.0, 5.0, size=40)
    low, high = stats.bootstrap_ci_median(x)
    assert low <= stats.median(x) <= high
    assert (low, high) == stats.bootstrap_ci_median(x)
    narrow = stats.bootstrap_ci_median(x, confidence=0.5)
    assert low <= narrow[0] <= narrow[1] <= high


def test_bootstrap_ci_median_constant_sample():
    assert stats.bootstrap_ci_median([3.0] * 10) == (3.0, 3.0)


def test_bootstrap_ci_median_rejects_bad_confidence():
    with pytest.raises(ValueError, match="confidence"):
        stats.bootstrap_ci_median([1.0, 2.0], confidence=1.0)


def test_bootstrap_matches_a_loop_reference():
    """The vectorised resampling equals the textbook loop with the same draws."""
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    rng = np.random.default_rng(0)
    idx = rng.integers(0, x.size, size=(stats.BOOTSTRAP_RESAMPLES, x.size))
    meds = [np.median(x[row]) for row in idx]
    expected = tuple(np.quantile(meds, [0.025, 0.975]))
    assert stats.bootstrap_ci_median(x, seed=0) == pytest.approx(expected)


def test_mann_whitney_matches_scipy():
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    b = [6.0, 7.0, 8.0, 9.0, 10.0]
    # exact: the most extreme of C(10,5) = 252 arrangements, two-sided
    assert stats.mann_whitney(a, b) == pytest.approx(2 / 252)
    c = [1.0, 2.0, 2.0, 3.0, 7.0, 8.0]
    d = [2.0, 3.0, 3.0, 5.0, 9.0]
    want = sps.mannwhitneyu(c, d, alternative="two-sided").pvalue
    assert stats.mann_whitney(c, d) == pytest.approx(want)


def test_mann_whitney_all_equal_and_tiny():
    assert stats.mann_whitney([2.0, 2.0], [2.0, 2.0, 2.0]) == 1.0
    assert stats.mann_whitney([1.0], [2.0]) == 1.0


def test_wilcoxon_matches_scipy_and_drops_zeros():
    d = [0.5, -0.2, 0.9, 1.3, 0.7, 0.0, 1.1]
    want = sps.wilcoxon([0.5, -0.2, 0.9, 1.3, 0.7, 1.1]).pvalue
    assert stats.wilcoxon_signed_rank(d) == pytest.approx(want)
    # exact: all 6 positive -> 2 / 2**6
    assert stats.wilcoxon_signed_rank([1.0, 2, 3, 4, 5, 6]) == pytest.approx(2 / 64)


def test_wilcoxon_edge_cases():
    assert stats.wilcoxon_signed_rank([0.0, 0.0, 0.0]) == 1.0
    assert stats.wilcoxon_signed_rank([0.0, 0.3]) == 1.0
    p = stats.wilcoxon_signed_rank([0.1, 0.1, -0.1])  # ties in |d|
    assert 0.0 <= p <= 1.0


def test_ratio_of_medians_and_paired():
    assert stats.ratio_of_medians([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == 2.0
    with pytest.raises(ValueError, match="zero"):
        stats.ratio_of_medians([1.0], [0.0, 0.0])
    logs = stats.paired_log_ratios([2.0, 3.0], [1.0, 3.0])
    np.testing.assert_allclose(logs, [math.log(2.0), 0.0])
    assert stats.paired_ratio([2.0, 4.0, 8.0], [1.0, 2.0, 2.0]) == pytest.approx(2.0)


def test_paired_log_ratios_rejects_mismatch_and_nonpositive():
    with pytest.raises(ValueError, match="length"):
        stats.paired_log_ratios([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        stats.paired_log_ratios([1.0, -2.0], [1.0, 1.0])


def test_bootstrap_ci_ratio_brackets_point_estimate():
    rng = np.random.default_rng(3)
    b = rng.normal(100.0, 3.0, size=30)
    a = b * 1.2 * rng.normal(1.0, 0.01, size=30)
    low, high = stats.bootstrap_ci_ratio(a, b, paired=True)
    assert low <= stats.paired_ratio(a, b) <= high
    assert low > 1.15 and high < 1.25
    low_u, high_u = stats.bootstrap_ci_ratio(a, b, paired=False)
    assert low_u <= stats.ratio_of_medians(a, b) <= high_u
    # pairing removes the shared noise: the paired interval is narrower
    assert high - low < high_u - low_u


def test_bootstrap_ci_ratio_identical_is_one():
    x = [1.0, 2.0, 3.0]
    assert stats.bootstrap_ci_ratio(x, x, paired=True) == (1.0, 1.0)


def test_geometric_mean():
    assert stats.geometric_mean([1.0, 4.0]) == pytest.approx(2.0)
    assert stats.geometric_mean([2.0, 8.0, 4.0]) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="positive"):
        stats.geometric_mean([1.0, 0.0])


def test_differs_decisions():
    fast = [10.0, 10.1, 9.9, 10.2, 9.8, 10.0, 10.1, 9.95, 10.05, 10.15]
    slow = [x * (1.3 + 0.01 * i) for i, x in enumerate(fast)]
    close = [x * 1.01 for x in fast]
    assert stats.differs(slow, fast)
    assert not stats.differs(close, fast)  # below the 5% effect
    assert not stats.differs(slow[:3], fast[:3])  # too few samples for alpha = 0.01
    assert stats.paired_differs(slow, fast)
    assert not stats.paired_differs(fast, fast)


def test_nanmedian_rows_equals_numpys_on_many_random_grids():
    """Odd and even counts, rows with some, all or no NaN, ties, infinities, and any shape:
    the same values as np.nanmedian(axis=1), bit for bit."""
    rng = np.random.default_rng(11)
    for _ in range(300):
        rows, cols = rng.integers(1, 9), rng.integers(1, 12)
        arr = rng.choice([rng.normal(size=(rows, cols)), rng.integers(0, 3, (rows, cols))])
        arr = np.asarray(arr, dtype=float)
        arr[rng.random((rows, cols)) < rng.random()] = np.nan
        arr[rng.random((rows, cols)) < 0.05] = np.inf
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy: all-NaN rows
            expected = np.nanmedian(arr, axis=1)
        np.testing.assert_array_equal(stats.nanmedian_rows(arr), expected)
    assert stats.nanmedian_rows(np.empty((3, 0))).shape == (3,)
    assert np.isnan(stats.nanmedian_rows(np.empty((3, 0)))).all()


def test_median_mad_and_z_scores_equal_numpys_formulas_on_many_random_samples():
    """The sort-based median (no np.median per-call cost) gives numpy's values bit for bit:
    odd and even sizes, ties, one value, large and tiny magnitudes."""
    rng = np.random.default_rng(12)
    for _ in range(500):
        n = int(rng.integers(1, 60))
        x = rng.choice([rng.normal(size=n), rng.integers(0, 3, n), rng.lognormal(0, 20, n)])
        x = np.asarray(x, dtype=float)
        assert stats.median(x) == np.median(x)
        assert stats.mad(x) == np.median(np.abs(x - np.median(x)))
        dev = x - np.median(x)
        scale = np.median(np.abs(dev))
        want = (stats.MODIFIED_Z_FACTOR * dev / scale if scale > 0
                else np.where(dev == 0, 0.0, np.copysign(np.inf, dev)))
        np.testing.assert_array_equal(stats.modified_z_scores(x), want)
