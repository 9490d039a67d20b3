"""Robust statistics for benchmark samples: medians, MADs, intervals, tests, the gate's rule.

Every function is pure, takes array-likes of float, and raises ``ValueError`` on
empty input. Times are positive numbers (nanoseconds per call); ratios compare
``a`` against ``b`` as ``a / b``, so a ratio above 1 means ``a`` is slower.

Measurements with blocks and rounds (DESIGN.md, Statistics): a group runs as
several blocks (one process each); inside a block, rounds in which every member
takes one sample. :func:`block_estimate` reduces one block's paired rounds to a
log-ratio and its sampling variance, :func:`combine_blocks` combines blocks by
random effects so that the between-process variance is part of the interval,
:func:`paired_estimate` does both for (blocks, rounds) arrays, and
:func:`gate_verdict` / :func:`needs_more` / :func:`gate_verdicts` are the CI
gate's sequential decision over process pairs with a false discovery rate
across cells.

References
----------
Benjamini, Y. & Hochberg, Y. (1995). Controlling the false discovery rate. JRSS B 57(1), 289-300.
Chen, J. & Revels, J. (2016). Robust benchmarking in noisy environments. arXiv:1608.04295.
DerSimonian, R. & Laird, N. (1986). Meta-analysis in clinical trials. Control. Clin. Trials
    7(3), 177-188.
Efron, B. & Tibshirani, R. J. (1993). *An Introduction to the Bootstrap*. Chapman & Hall.
Bauer, D. F. (1972). Constructing confidence sets using rank statistics. J. Am. Stat.
    Assoc. 67(339), 687-690.
Geary, R. C. (1935). The ratio of the mean deviation to the standard deviation as a test of
    normality. Biometrika 27(3/4), 310-332.
Hartung, J. & Knapp, G. (2001). A refined method for the meta-analysis of controlled clinical
    trials with binary outcome. Stat. Med. 20(24), 3875-3889.
Hodges, J. L. & Lehmann, E. L. (1963). Estimates of location based on rank tests. Ann.
    Math. Statist. 34(2), 598-611.
Hollander, M., Wolfe, D. A. & Chicken, E. (2014). *Nonparametric Statistical Methods*, 3rd
    ed., Wiley, section 3.2 (the signed-rank confidence interval from Walsh averages).
Iglewicz, B. & Hoaglin, D. C. (1993). *How to Detect and Handle Outliers*. ASQC.
IntHout, J., Ioannidis, J. P. A. & Borm, G. F. (2014). The Hartung-Knapp-Sidik-Jonkman method
    for random effects meta-analysis is straightforward and considerably outperforms the
    standard DerSimonian-Laird method. BMC Med. Res. Methodol. 14, 25.
Knapp, G. & Hartung, J. (2003). Improved tests for a random effects meta-regression with a
    single covariate. Stat. Med. 22(17), 2693-2710.
Mann, H. B. & Whitney, D. R. (1947). Ann. Math. Statist. 18(1), 50-60.
Rousseeuw, P. J. & Croux, C. (1993). Alternatives to the median absolute deviation.
    J. Am. Stat. Assoc. 88(424), 1273-1283.
Röver, C., Knapp, G. & Friede, T. (2015). Hartung-Knapp-Sidik-Jonkman approach and its
    modification for random-effects meta-analysis with few studies. BMC Med. Res. Methodol.
    15, 99.
Satterthwaite, F. E. (1946). An approximate distribution of estimates of variance
    components. Biometrics Bull. 2(6), 110-114.
Schuirmann, D. J. (1987). A comparison of the two one-sided tests procedure and the power
    approach for assessing the equivalence of average bioavailability. J. Pharmacokinet.
    Biopharm. 15(6), 657-680.
Sidik, K. & Jonkman, J. N. (2002). A simple confidence interval for meta-analysis.
    Stat. Med. 21(21), 3153-3159.
Stuart, A. & Ord, J. K. (1994). *Kendall's Advanced Theory of Statistics*, vol. 1, 6th ed.,
    section 10.10 (the large-sample variance of a sample median).
Wilcoxon, F. (1945). Individual comparisons by ranking methods. Biometrics Bull. 1(6), 80-83.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from gradsweep.defaults import ALPHA, CONFIDENCE, MIN_EFFECT  # noqa: F401 - part of the API

#: Scale factor turning the MAD into a consistent estimator of a normal sigma,
#: 1 / Phi^-1(3/4) (Iglewicz & Hoaglin 1993).
MAD_TO_SIGMA = 1.4826
#: The 0.75 quantile of the standard normal, Phi^-1(3/4): the factor in the
#: modified z-score 0.6745 * (x - median) / MAD (Iglewicz & Hoaglin 1993).
MODIFIED_Z_FACTOR = 0.6745
#: Bootstrap resamples for the percentile intervals.
BOOTSTRAP_RESAMPLES = 2000
#: sqrt(pi/2) = 1.2533: the large-sample standard error of the median of n normal
#: values is sqrt(pi/2) * sigma / sqrt(n) (Stuart & Ord 1994, 10.10).
MEDIAN_SE_FACTOR = math.sqrt(math.pi / 2.0)
#: sqrt(pi/2) also turns a mean absolute deviation into a normal sigma, since
#: E|x - mu| = sigma * sqrt(2/pi) (Geary 1935); used where the MAD is 0.
MEAN_AD_TO_SIGMA = math.sqrt(math.pi / 2.0)
#: Gaussian efficiency of the MAD as a scale estimator, 0.5 / 1.3605 (Rousseeuw &
#: Croux 1993): a sigma from the MAD of R values is about as variable as a
#: standard deviation on 0.3675 * (R - 1) degrees of freedom (matching the
#: variance of the scale estimate, Satterthwaite 1946).
MAD_EFFICIENCY = 0.3675
#: Floor of a block estimate's standard error on the log scale (0.1% in ratio):
#: a block whose paired log-ratios do not spread (a coarse clock, a mock) still
#: gets a finite inverse-variance weight. 50x under :data:`MIN_EFFECT`, so it
#: never makes a difference look significant on its own.
BLOCK_SE_FLOOR = 1e-3
#: Fewest complete paired rounds a block needs to give an estimate.
MIN_ROUNDS = 3
#: A block in which a group's members ran, by their median, this much slower than in the
#: group's typical block was disturbed (:func:`disturbed_blocks`). Measured on these
#: machines (docs/noise.md, "Disturbed blocks"): quiet blocks of ``jobs/quick.toml`` lie
#: within about 10% of their group's median block, disturbed ones 20-65% above it.
DISTURBED_SLOWDOWN = 0.15
#: A block estimate of one pair more than this many modified z-scores from the pair's
#: median block estimate is left out of the ranking's combination (:func:`outlying_blocks`).
#: Iglewicz & Hoaglin's candidate-outlier cut-off is 3.5; 5 leaves out about 2% of the
#: blocks of ``jobs/quick.toml`` (docs/noise.md, "Outlying blocks").
OUTLYING_BLOCK_Z = 5.0
#: Fewer block estimates than this are never screened: the MAD of four says little.
SCREEN_MIN_BLOCKS = 5
#: ``RatioEstimate.method`` of one block: the within-block paired interval.
WITHIN_BLOCK = "within-block"
#: ``RatioEstimate.method`` of several blocks: DerSimonian-Laird tau^2 with the
#: (modified) Hartung-Knapp-Sidik-Jonkman t interval on k - 1 degrees of freedom.
RANDOM_EFFECTS = "random-effects"
#: ``RatioEstimate.method`` of the ranking's robust combination of blocks: the
#: Hodges-Lehmann estimate with its Wilcoxon signed-rank interval (:func:`hodges_lehmann`).
HODGES_LEHMANN = "hodges-lehmann"
#: Fewest block estimates the ranking combines by :func:`hodges_lehmann`: with 6 the
#: signed-rank interval's widest choice (min to max of the Walsh averages) covers
#: 1 - 2/2^6 = 96.9%, with 5 only 93.8%, so fewer keep the random-effects mean (as does
#: a level no interval of k blocks reaches: 99% needs k >= 8).
MIN_ROBUST_BLOCKS = 6
#: Verdicts of the CI gate (:func:`gate_verdict`).
REGRESSION, IMPROVEMENT, UNCHANGED = "regression", "improvement", "unchanged"
INCONCLUSIVE, UNDECIDED = "inconclusive", "undecided"


def _as_1d(x: ArrayLike, name: str = "x") -> np.ndarray:
    """Return ``x`` as a flat float64 array of shape (n,), n >= 1.

    Raises
    ------
    ValueError
        If ``x`` is empty or holds a NaN or infinity.
    """
    arr = np.asarray(x, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{name} is empty: need at least one sample")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return arr


def _as_positive(x: ArrayLike, name: str = "x") -> np.ndarray:
    """Return ``x`` as by :func:`_as_1d`, requiring every value > 0 (for logs and ratios)."""
    arr = _as_1d(x, name)
    if np.any(arr <= 0):
        raise ValueError(f"{name} must be positive (times), got min {arr.min():g}")
    return arr


def median(x: ArrayLike) -> float:
    """Sample median.

    Parameters
    ----------
    x : array_like, shape (n,)

    Returns
    -------
    float
        The middle order statistic, the mean of the two middle ones for even n.
    """
    return _middle(np.sort(_as_1d(x)))


def _middle(ordered: np.ndarray) -> float:
    """The median of sorted values, shape (n,): :func:`numpy.median`'s value (NaN for n = 0)
    without its per-call cost (~25 us, a third of a ranking's time in four calls per
    pair of members; the ranking of a sweep of 10k groups makes a million)."""
    n = ordered.size
    if not n:
        return math.nan
    if n % 2:
        return float(ordered[n // 2])
    return float((ordered[n // 2 - 1] + ordered[n // 2]) / 2)


def nanmedian_rows(arr: ArrayLike) -> np.ndarray:
    """Each row's median ignoring NaN, NaN for a row without a value (``np.nanmedian(axis=1)``).

    The same values as :func:`numpy.nanmedian`, which for small arrays goes through
    masked arrays and takes ~0.2 ms a call; a ranking takes thousands. Sorting puts NaN
    last, so a row's median is the mean of its middle finite order statistics.

    Parameters
    ----------
    arr : array_like, shape (rows, n)
        Finite values or NaN (an infinity counts as a value).

    Returns
    -------
    numpy.ndarray of float, shape (rows,)
    """
    ordered = np.sort(np.asarray(arr, dtype=float), axis=1)
    if not ordered.shape[1]:
        return np.full(ordered.shape[0], np.nan)
    n = np.count_nonzero(~np.isnan(ordered), axis=1)
    rows = np.arange(ordered.shape[0])
    with np.errstate(invalid="ignore"):  # -inf and inf in the middle: NaN, as numpy's
        middle = (ordered[rows, np.maximum(n - 1, 0) // 2] + ordered[rows, n // 2]) / 2
    return np.where(n > 0, middle, np.nan)


def mad(x: ArrayLike) -> float:
    """Median absolute deviation, unscaled: ``median(|x - median(x)|)``.

    Hampel (1974); see Iglewicz & Hoaglin (1993). Multiply by
    :data:`MAD_TO_SIGMA` (or use :func:`scaled_mad`) to estimate a normal sigma.

    Parameters
    ----------
    x : array_like, shape (n,)

    Returns
    -------
    float
        0.0 for n = 1 or when more than half the values are equal.
    """
    arr = np.sort(_as_1d(x))
    return _middle(np.sort(np.abs(arr - _middle(arr))))


def scaled_mad(x: ArrayLike) -> float:
    """MAD scaled by :data:`MAD_TO_SIGMA`, a consistent estimator of sigma under normality.

    Parameters
    ----------
    x : array_like, shape (n,)

    Returns
    -------
    float
    """
    return MAD_TO_SIGMA * mad(x)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _percentile_interval(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates ``stats`` of shape (resamples,)."""
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return float(low), float(high)


def _resample_medians(x: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of ``resamples`` bootstrap resamples of ``x``; returns shape (resamples,)."""
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    return np.median(x[idx], axis=1)


def bootstrap_ci_median(
    x: ArrayLike,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median (Efron & Tibshirani 1993, ch. 13).

    Draws ``resamples`` resamples of size n with replacement (one (resamples, n)
    index array, vectorised), takes each one's median and returns the
    (1-confidence)/2 and (1+confidence)/2 quantiles of those medians.

    Parameters
    ----------
    x : array_like, shape (n,)
    confidence : float in (0, 1)
    resamples : int >= 1
    seed : int
        Seed of ``numpy.random.default_rng``: the interval is deterministic.

    Returns
    -------
    (low, high) : tuple of float
        ``(x[0], x[0])`` for n = 1.
    """
    _check_confidence(confidence)
    arr = _as_1d(x)
    if arr.size == 1:
        return float(arr[0]), float(arr[0])
    rng = np.random.default_rng(seed)
    return _percentile_interval(_resample_medians(arr, resamples, rng), confidence)


def modified_z_scores(x: ArrayLike) -> np.ndarray:
    """Modified z-scores ``0.6745 * (x - median) / MAD`` (Iglewicz & Hoaglin 1993).

    Iglewicz & Hoaglin suggest |score| > 3.5 as a candidate outlier; hyperfine
    flags scores above 10 (its threshold 14.826 on (x - median)/MAD).

    Parameters
    ----------
    x : array_like, shape (n,)

    Returns
    -------
    numpy.ndarray, shape (n,)
        When MAD = 0, values equal to the median score 0 and all others
        score +inf or -inf (any deviation is infinitely many MADs away); no
        division warning is raised.
    """
    arr = _as_1d(x)
    dev = arr - _middle(np.sort(arr))
    scale = _middle(np.sort(np.abs(dev)))
    if scale > 0:
        return MODIFIED_Z_FACTOR * dev / scale
    return np.where(dev == 0, 0.0, np.copysign(np.inf, dev))


def mann_whitney(a: ArrayLike, b: ArrayLike) -> float:
    """Two-sided Mann-Whitney U test p-value (Mann & Whitney 1947), unpaired samples.

    Uses ``scipy.stats.mannwhitneyu(a, b, alternative="two-sided")`` (exact for
    small samples without ties, normal approximation with tie correction
    otherwise). Note with n = 5 per side the smallest p is 2/252 = 0.0079, so
    alpha = 0.01 needs at least 5 samples each.

    Parameters
    ----------
    a : array_like, shape (n,)
    b : array_like, shape (m,)

    Returns
    -------
    float
        p in [0, 1]; 1.0 when every value of both samples is equal.
    """
    xa, xb = _as_1d(a, "a"), _as_1d(b, "b")
    if np.all(np.concatenate([xa, xb]) == xa[0]):
        return 1.0
    from scipy.stats import mannwhitneyu  # lazily: scipy loads its own OpenBLAS

    return float(mannwhitneyu(xa, xb, alternative="two-sided").pvalue)


def wilcoxon_signed_rank(d: ArrayLike) -> float:
    """Two-sided Wilcoxon signed-rank test p-value on paired differences (Wilcoxon 1945).

    Zero differences are dropped first (Wilcoxon's original treatment,
    scipy's ``zero_method="wilcox"``), then ``scipy.stats.wilcoxon`` runs on
    the rest (exact distribution for small n without ties).

    Parameters
    ----------
    d : array_like, shape (n,)
        Paired differences, e.g. :func:`paired_log_ratios`.

    Returns
    -------
    float
        p in [0, 1]; 1.0 when every difference is zero; for one nonzero
        difference the exact p is 1.0.
    """
    arr = _as_1d(d, "d")
    nonzero = arr[arr != 0]
    if nonzero.size == 0:
        return 1.0
    from scipy.stats import wilcoxon

    return float(wilcoxon(nonzero, alternative="two-sided").pvalue)


def ratio_of_medians(a: ArrayLike, b: ArrayLike) -> float:
    """``median(a) / median(b)``: above 1 means ``a`` is slower than ``b``.

    Parameters
    ----------
    a : array_like, shape (n,)
    b : array_like, shape (m,)

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If a sample is empty or ``median(b)`` is zero.
    """
    mb = median(_as_1d(b, "b"))
    if mb == 0:
        raise ValueError("median of b is zero: the ratio is undefined")
    return median(_as_1d(a, "a")) / mb


def paired_log_ratios(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Natural logs of the paired ratios, ``log(a[i] / b[i])``.

    Parameters
    ----------
    a, b : array_like, shape (n,)
        Positive paired samples (sample i of each taken in the same round).

    Returns
    -------
    numpy.ndarray, shape (n,)
    """
    xa, xb = _as_positive(a, "a"), _as_positive(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(f"paired samples differ in length: {xa.size} vs {xb.size}")
    return np.log(xa) - np.log(xb)


def paired_ratio(a: ArrayLike, b: ArrayLike) -> float:
    """Paired ratio estimate ``exp(median(log(a[i] / b[i])))`` (DESIGN.md, the CI gate).

    Parameters
    ----------
    a, b : array_like, shape (n,)

    Returns
    -------
    float
    """
    return float(np.exp(np.median(paired_log_ratios(a, b))))


def _bootstrap_paired_ratio(
    logs: np.ndarray, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Replicates of exp(median of resampled pairs' log-ratios); shape (resamples,)."""
    return np.exp(_resample_medians(logs, resamples, rng))


def _bootstrap_unpaired_ratio(
    a: np.ndarray, b: np.ndarray, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Replicates of median(a*) / median(b*), a and b resampled independently."""
    return _resample_medians(a, resamples, rng) / _resample_medians(b, resamples, rng)


def bootstrap_ci_ratio(
    a: ArrayLike,
    b: ArrayLike,
    paired: bool,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the ratio a / b (Efron & Tibshirani 1993, ch. 13).

    Unpaired: ``a`` and ``b`` are resampled independently and each replicate
    is ``median(a*) / median(b*)`` (the statistic of :func:`ratio_of_medians`).
    Paired: the pairs (a[i], b[i]) are resampled together and each replicate
    is ``exp(median(log(a*/b*)))`` (the statistic of :func:`paired_ratio`).

    Parameters
    ----------
    a : array_like, shape (n,)
    b : array_like, shape (m,); m == n when ``paired``
    paired : bool
    confidence : float in (0, 1)
    resamples : int >= 1
    seed : int

    Returns
    -------
    (low, high) : tuple of float
    """
    _check_confidence(confidence)
    xa, xb = _as_positive(a, "a"), _as_positive(b, "b")
    rng = np.random.default_rng(seed)
    if paired:
        reps = _bootstrap_paired_ratio(paired_log_ratios(xa, xb), resamples, rng)
    else:
        reps = _bootstrap_unpaired_ratio(xa, xb, resamples, rng)
    return _percentile_interval(reps, confidence)


def geometric_mean(x: ArrayLike) -> float:
    """Geometric mean ``exp(mean(log x))`` of positive values (Fleming & Wallace 1986).

    The right mean for normalised ratios: it is independent of the reference.

    Parameters
    ----------
    x : array_like, shape (n,)

    Returns
    -------
    float
    """
    return float(np.exp(np.mean(np.log(_as_positive(x)))))


def differs(
    a: ArrayLike, b: ArrayLike, *, alpha: float = ALPHA, min_effect: float = MIN_EFFECT
) -> bool:
    """Unpaired decision (DESIGN.md): Mann-Whitney p < alpha and |median ratio - 1| >= effect.

    Parameters
    ----------
    a : array_like, shape (n,)
    b : array_like, shape (m,)
    alpha : float
    min_effect : float

    Returns
    -------
    bool
    """
    effect = abs(ratio_of_medians(a, b) - 1.0) >= min_effect
    return effect and mann_whitney(a, b) < alpha


def paired_differs(
    a: ArrayLike, b: ArrayLike, *, alpha: float = ALPHA, min_effect: float = MIN_EFFECT
) -> bool:
    """Paired decision: Wilcoxon on the log-ratios p < alpha and |paired ratio - 1| >= effect.

    Parameters
    ----------
    a, b : array_like, shape (n,)
    alpha : float
    min_effect : float

    Returns
    -------
    bool
    """
    effect = abs(paired_ratio(a, b) - 1.0) >= min_effect
    return effect and wilcoxon_signed_rank(paired_log_ratios(a, b)) < alpha


# ----------------------------------------------------------------------------------------
# Blocks (processes) and rounds: paired log-ratios combined by random effects


@dataclass(frozen=True)
class BlockEstimate:
    """One block's paired estimate of ``log(t_a / t_b)``.

    Attributes
    ----------
    log_ratio : float
        Median of the block's paired log-ratios.
    variance : float
        Its sampling variance, at least ``BLOCK_SE_FLOOR ** 2``.
    rounds : int
        Complete paired rounds used (>= :data:`MIN_ROUNDS`).
    """

    log_ratio: float
    variance: float
    rounds: int


def _as_blocks(times: ArrayLike, name: str) -> np.ndarray:
    """``times`` as a float array of shape (blocks, rounds); a 1-d array is one block."""
    arr = np.asarray(times, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{name}: expected times of shape (blocks, rounds), got {arr.shape}")
    return arr


def _robust_sigma(deviations: np.ndarray) -> float:
    """Normal-consistent spread of ``deviations`` (from a median), shape (n,).

    ``MAD_TO_SIGMA * MAD`` (Iglewicz & Hoaglin 1993); when more than half the
    deviations are 0 (MAD = 0), ``sqrt(pi/2) * mean |deviation|`` (Geary 1935).
    """
    absdev = np.abs(deviations)
    sigma = MAD_TO_SIGMA * _middle(np.sort(absdev))
    return sigma if sigma > 0 else MEAN_AD_TO_SIGMA * float(np.mean(absdev))


def _log_ratio_blocks(t_a: ArrayLike, t_b: ArrayLike) -> np.ndarray:
    """Paired log-ratios ``log(t_a / t_b)`` of shape (blocks, rounds), NaN where a side is missing.

    Raises
    ------
    ValueError
        Shapes differ or a (finite) time is not positive.
    """
    xa, xb = _as_blocks(t_a, "t_a"), _as_blocks(t_b, "t_b")
    if xa.shape != xb.shape:
        raise ValueError(f"paired times differ in shape: {xa.shape} vs {xb.shape}")
    complete = np.isfinite(xa) & np.isfinite(xb)
    if np.any(xa[complete] <= 0) or np.any(xb[complete] <= 0):
        raise ValueError("paired times must be positive (NaN marks a missing sample)")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(complete, np.log(np.where(complete, xa / xb, 1.0)), np.nan)


def pooled_block_estimates(t_a: ArrayLike, t_b: ArrayLike) -> list[BlockEstimate]:
    """Paired estimates of ``log(t_a / t_b)``, one per block, the spread pooled over blocks.

    Each block (row) with at least :data:`MIN_ROUNDS` complete rounds gives
    the median of its paired log-ratios ``d_r = log(t_a[r] / t_b[r])``; the
    median, not the mean, so that one preempted sample moves it little
    (breakdown point 1/2). Its standard error is the large-sample one of a
    median, ``sqrt(pi/2) * sigma / sqrt(R)`` (Stuart & Ord 1994, 10.10), floored
    at :data:`BLOCK_SE_FLOOR`. sigma is robust (:func:`_robust_sigma`: the
    scaled MAD, or ``sqrt(pi/2)`` times the mean absolute deviation when the
    MAD is 0) and pooled: taken over every usable block's log-ratios around
    that block's own median. Blocks of one pair of members differ by their
    process bias (a location, which the random-effects model of
    :func:`combine_blocks` carries), not by their noise; pooling gives sigma
    k times the rounds, so blocks with equal rounds get equal weights and a
    block whose few rounds happen to agree cannot dominate the combination
    (with per-block MADs, R = 3 and k = 5 the combined 95% interval covered
    only ~0.88 in simulation; pooled, 0.95-0.98).

    Parameters
    ----------
    t_a, t_b : array_like, shape (blocks, rounds) or (rounds,)
        ``t_a[j, r]`` and ``t_b[j, r]`` were taken in round r of block j; NaN
        marks a missing sample and drops its round.

    Returns
    -------
    list of BlockEstimate
        One per usable block, in block order; empty when none is usable.
    """
    d = _log_ratio_blocks(t_a, t_b)
    rounds = np.count_nonzero(np.isfinite(d), axis=1)
    d, rounds = d[rounds >= MIN_ROUNDS], rounds[rounds >= MIN_ROUNDS]
    if not rounds.size:
        return []
    full = bool(np.all(np.isfinite(d)))
    centres = nanmedian_rows(d)  # np.median(d, axis=1) where every round is complete
    deviations = (d - centres[:, None]).ravel()
    sigma = _robust_sigma(deviations if full else deviations[np.isfinite(deviations)])
    se = np.maximum(MEDIAN_SE_FACTOR * sigma / np.sqrt(rounds), BLOCK_SE_FLOOR)
    return [BlockEstimate(log_ratio=float(c), variance=float(e * e), rounds=int(r))
            for c, e, r in zip(centres, se, rounds)]


def block_estimate(t_a: ArrayLike, t_b: ArrayLike) -> BlockEstimate:
    """Paired estimate of ``log(t_a / t_b)`` from one block's rounds (DESIGN.md, Statistics).

    The median of the paired log-ratios and its sampling variance
    ``(sqrt(pi/2) * sigma / sqrt(R))^2``, sigma the block's own robust spread,
    the standard error floored at :data:`BLOCK_SE_FLOOR` (0.001 on the log
    scale) so that identical samples still give a finite weight; see
    :func:`pooled_block_estimates` (this is it for a single block). With few
    rounds a block's own sigma is noisy (R = 3: the smaller of two gaps):
    combine the blocks of a group from :func:`pooled_block_estimates`.

    Parameters
    ----------
    t_a, t_b : array_like, shape (R,)
        Times of the two members in the block's R rounds; NaN marks a missing
        sample and drops its round.

    Returns
    -------
    BlockEstimate

    Raises
    ------
    ValueError
        Shapes differ, a time is not positive, or fewer than :data:`MIN_ROUNDS`
        complete rounds remain.
    """
    found = pooled_block_estimates(np.ravel(t_a), np.ravel(t_b))
    if not found:
        complete = np.count_nonzero(np.isfinite(_log_ratio_blocks(np.ravel(t_a), np.ravel(t_b))))
        raise ValueError(f"a block needs at least {MIN_ROUNDS} complete paired rounds, "
                         f"got {complete}")
    return found[0]


def _t_quantile(confidence: float, df: float) -> float:
    """Two-sided Student t critical value, ``t_{df, (1+confidence)/2}`` (normal for df = inf)."""
    from scipy.special import stdtrit  # a ufunc: ~40x cheaper than scipy.stats.t.ppf

    return float(stdtrit(df, 0.5 + confidence / 2.0))


@dataclass(frozen=True)
class RatioEstimate:
    """A ratio ``a / b`` with its interval, from paired blocks and rounds.

    Attributes
    ----------
    ratio, low, high : float
        ``exp`` of the log-scale estimate and of its interval bounds.
    log_ratio, se : float
        Estimate and standard error on the log scale.
    tau2 : float
        Between-block variance (DerSimonian-Laird); 0.0 for one block.
    blocks : int
        Blocks combined.
    method : str
        :data:`RANDOM_EFFECTS`, :data:`HODGES_LEHMANN` (the ranking's robust
        combination: ``se`` is then the interval's normal-equivalent standard
        error and ``df`` infinite) or :data:`WITHIN_BLOCK` (one block: the
        interval does not include between-process variance; say so when reporting).
    df : float
        Degrees of freedom of the t interval: blocks - 1, or for one block
        ``max(1, MAD_EFFICIENCY * (rounds - 1))`` (``inf`` when rounds are
        unknown: a normal interval).
    confidence : float
        Two-sided level of ``low`` and ``high``.
    """

    ratio: float
    low: float
    high: float
    log_ratio: float
    se: float
    tau2: float
    blocks: int
    method: str
    df: float
    confidence: float

    def interval(self, confidence: float) -> tuple[float, float]:
        """The ratio's two-sided interval at another ``confidence``, same se and df."""
        _check_confidence(confidence)
        half = _t_quantile(confidence, self.df) * self.se
        return math.exp(self.log_ratio - half), math.exp(self.log_ratio + half)

    @property
    def p_value(self) -> float:
        """Two-sided t-test p-value of ``log_ratio = 0`` with :attr:`df` (the test
        that matches the interval: ``p < 1 - c`` exactly when the level-c interval
        excludes 1)."""
        if self.se == 0:
            return 1.0 if self.log_ratio == 0 else 0.0
        from scipy.special import stdtr

        return float(2.0 * stdtr(self.df, -abs(self.log_ratio) / self.se))

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 1."""
        return self.low > 1.0 or self.high < 1.0


def _ratio_estimate(mu: float, se: float, tau2: float, blocks: int, method: str, df: float,
                    confidence: float) -> RatioEstimate:
    half = _t_quantile(confidence, df) * se
    return RatioEstimate(ratio=math.exp(mu), low=math.exp(mu - half), high=math.exp(mu + half),
                         log_ratio=mu, se=se, tau2=tau2, blocks=blocks, method=method,
                         df=float(df), confidence=confidence)


def _as_variances(estimates: ArrayLike, variances: ArrayLike) -> tuple[list, list]:
    """Validated estimates and positive variances as Python lists of equal length k >= 1.

    Lists, not arrays: k is a handful of blocks, where Python sums beat numpy's call cost.
    """
    y, v = _as_1d(estimates, "estimates"), _as_1d(variances, "variances")
    if y.shape != v.shape:
        raise ValueError(f"{y.size} estimates but {v.size} variances")
    if np.any(v <= 0):
        raise ValueError("variances must be positive (block estimates floor them)")
    return y.tolist(), v.tolist()


def _dl_tau2(y: list, v: list) -> float:
    """DerSimonian-Laird tau^2 of validated lists (see :func:`dersimonian_laird_tau2`)."""
    w = [1.0 / vi for vi in v]
    s1 = math.fsum(w)
    mean = math.fsum(wi * yi for wi, yi in zip(w, y)) / s1
    q = math.fsum(wi * (yi - mean) ** 2 for wi, yi in zip(w, y))
    return max(0.0, (q - (len(y) - 1)) / (s1 - math.fsum(wi * wi for wi in w) / s1))


def dersimonian_laird_tau2(estimates: ArrayLike, variances: ArrayLike) -> float:
    """Between-study variance by the method of moments (DerSimonian & Laird 1986).

    ``tau2 = max(0, (Q - (k - 1)) / (S1 - S2 / S1))`` with weights ``w = 1/v``,
    ``S1 = sum w``, ``S2 = sum w^2`` and Cochran's ``Q = sum w (y - y_w)^2``
    around the inverse-variance mean ``y_w``.

    Parameters
    ----------
    estimates, variances : array_like, shape (k,), k >= 2
        Per-block estimates and their (positive) sampling variances.

    Returns
    -------
    float
    """
    y, v = _as_variances(estimates, variances)
    if len(y) < 2:
        raise ValueError("tau^2 needs at least 2 estimates")
    return _dl_tau2(y, v)


def combine_blocks(estimates: ArrayLike, variances: ArrayLike, *, rounds: int | None = None,
                   confidence: float = CONFIDENCE, modified: bool = True) -> RatioEstimate:
    """Random-effects combination of k block log-ratios, in ratio space.

    tau^2 by DerSimonian & Laird (1986); the mean ``mu`` weighted by ``w =
    1/(v + tau^2)``; its interval ``mu +- t_{k-1} * se`` by Hartung & Knapp
    (2001) and Sidik & Jonkman (2002) with ``se^2 = q / sum w``, ``q = sum w
    (y - mu)^2 / (k - 1)``. A z interval with the DerSimonian-Laird variance
    ``1 / sum w`` undercovers badly with few studies; HKSJ keeps close to the
    nominal level (IntHout et al. 2014). ``modified`` (default) uses ``max(q,
    1)`` (Knapp & Hartung 2003; Röver et al. 2015), so the interval is never
    narrower than the one from the DerSimonian-Laird variance when the k
    estimates happen to agree closely. It is conservative (simulated coverage
    0.98-1.0 at k = 3, 0.96 at k = 10, against 0.95 unmodified) and it is what
    keeps the gate's sequential looks within alpha (see :func:`gate_verdict`).
    k = 2 gives a t interval on 1 degree of freedom (12.7 standard errors each
    side at 95%): two blocks can only show large effects.

    One block (k = 1) falls back to its within-block interval ``y +- t * sqrt(v)``,
    marked ``method = WITHIN_BLOCK``: it ignores the between-process variance.
    Its t has ``max(1, MAD_EFFICIENCY * (rounds - 1))`` degrees of freedom, as
    many as a MAD-based sigma is worth (Satterthwaite 1946; Rousseeuw & Croux
    1993); with ``rounds - 1`` the interval covered the block's own ratio only
    0.84 (R = 3) to 0.93 (R = 15) in simulation, with these 0.94-0.98. Normal
    when ``rounds`` is None.

    Parameters
    ----------
    estimates, variances : array_like, shape (k,)
        Block log-ratios and their sampling variances (positive), e.g. from
        :func:`pooled_block_estimates`.
    rounds : int, optional
        Rounds behind the single block's sigma (only used when k = 1).
    confidence : float in (0, 1)
    modified : bool

    Returns
    -------
    RatioEstimate
    """
    _check_confidence(confidence)
    y, v = _as_variances(estimates, variances)
    return _combine(y, v, rounds, confidence, modified)


def _combine(y: list, v: list, rounds: int | None, confidence: float,
             modified: bool) -> RatioEstimate:
    """:func:`combine_blocks` on validated lists (k >= 1, v > 0)."""
    k = len(y)
    if k == 1:
        df = math.inf if rounds is None else max(MAD_EFFICIENCY * (rounds - 1), 1.0)
        return _ratio_estimate(y[0], math.sqrt(v[0]), 0.0, 1, WITHIN_BLOCK, df, confidence)
    tau2 = _dl_tau2(y, v)
    w = [1.0 / (vi + tau2) for vi in v]
    s1 = math.fsum(w)
    mu = math.fsum(wi * yi for wi, yi in zip(w, y)) / s1
    q = math.fsum(wi * (yi - mu) ** 2 for wi, yi in zip(w, y)) / (k - 1)
    se = math.sqrt((max(q, 1.0) if modified else q) / s1)
    return _ratio_estimate(mu, se, tau2, k, RANDOM_EFFECTS, k - 1, confidence)


def signed_rank_cdf(k: int) -> np.ndarray:
    """Exact null distribution of Wilcoxon's signed-rank statistic T+ for k values.

    Under the null each of ranks 1..k carries a + sign with probability 1/2
    independently (Wilcoxon 1945); the count of sign patterns with each total
    is built rank by rank (a subset-sum recursion).

    Returns
    -------
    numpy.ndarray, shape (k (k + 1) / 2 + 1,)
        ``P(T+ <= t)`` for t = 0, 1, ..., k (k + 1) / 2.
    """
    if k < 1:
        raise ValueError(f"the signed-rank statistic needs k >= 1 values, got {k}")
    counts = np.zeros(k * (k + 1) // 2 + 1)
    counts[0] = 1.0
    for r in range(1, k + 1):
        counts[r:] = counts[r:] + counts[:-r].copy()
    return np.cumsum(counts) / 2.0**k


def hodges_lehmann(y: ArrayLike, confidence: float = CONFIDENCE
                   ) -> tuple[float, float, float] | None:
    """Hodges-Lehmann estimate of the centre of k values and its signed-rank interval.

    The estimate is the median of the ``k (k + 1) / 2`` Walsh averages
    ``(y_i + y_j) / 2, i <= j`` (Hodges & Lehmann 1963): 95% as efficient as the
    mean for normal values, and one far-off value (a block a neighbour disturbed)
    moves it little (breakdown point 0.29). The interval runs from the C-th
    smallest to the C-th largest Walsh average, C the largest count with
    ``P(T+ <= C - 1) <= (1 - confidence) / 2`` under the exact null distribution
    (:func:`signed_rank_cdf`; Bauer 1972; Hollander, Wolfe & Chicken 2014, 3.2):
    for independent values symmetric about their centre it covers at least
    ``confidence``, whatever their distribution (e.g. 96.1% at k = 8, 95%).

    Parameters
    ----------
    y : array_like, shape (k,)
        E.g. the block log-ratios of one pair.
    confidence : float in (0, 1)

    Returns
    -------
    (estimate, low, high) or None
        None when k values cannot give an interval at ``confidence``.
    """
    _check_confidence(confidence)
    values = np.sort(_as_1d(y, "y"))
    if not np.isfinite(values).all():
        raise ValueError("y must be finite")
    i, j = np.triu_indices(values.size)
    walsh = np.sort((values[i] + values[j]) / 2.0)
    c = int(np.searchsorted(signed_rank_cdf(values.size), (1.0 - confidence) / 2.0,
                            side="right"))
    if c < 1:
        return None
    return float(np.median(walsh)), float(walsh[c - 1]), float(walsh[walsh.size - c])


def _robust_combination(y: list, v: list, confidence: float) -> RatioEstimate | None:
    """:func:`hodges_lehmann` of the block estimates as a RatioEstimate (None when k
    blocks give no interval at ``confidence``): ``se`` is the interval's
    normal-equivalent standard error (half its log width over z), ``df`` infinite,
    ``tau2`` DerSimonian-Laird's for reference."""
    found = hodges_lehmann(y, confidence)
    if found is None:
        return None
    mu, low, high = found
    se = (high - low) / (2.0 * _t_quantile(confidence, math.inf))
    return RatioEstimate(ratio=math.exp(mu), low=math.exp(low), high=math.exp(high),
                         log_ratio=mu, se=se, tau2=_dl_tau2(y, v), blocks=len(y),
                         method=HODGES_LEHMANN, df=math.inf, confidence=confidence)


def outlying_blocks(log_ratios: ArrayLike, z: float = OUTLYING_BLOCK_Z) -> np.ndarray:
    """Block estimates that lie more than ``z`` modified z-scores from their median.

    The modified z-score is ``0.6745 * (y - median) / MAD`` (Iglewicz & Hoaglin
    1993, who call 3.5 a candidate outlier; :data:`OUTLYING_BLOCK_Z` is stricter).
    Fewer than :data:`SCREEN_MIN_BLOCKS` estimates, or a MAD of 0, flag none.

    Parameters
    ----------
    log_ratios : array_like, shape (blocks,)

    Returns
    -------
    numpy.ndarray of bool, shape (blocks,)
    """
    scores = np.abs(modified_z_scores(log_ratios))
    if scores.size < SCREEN_MIN_BLOCKS or not np.isfinite(scores).all():  # MAD 0: inf
        return np.zeros(scores.size, dtype=bool)
    return scores > z


def paired_estimate(t_a: ArrayLike, t_b: ArrayLike, *, confidence: float = CONFIDENCE,
                    modified: bool = True, screen: bool = False,
                    robust: bool = False) -> RatioEstimate | None:
    """The ratio ``a / b`` of two members of a group measured in blocks and rounds.

    Each block with at least :data:`MIN_ROUNDS` complete paired rounds gives an
    estimate (:func:`pooled_block_estimates`: the median of its paired
    log-ratios, the spread pooled over blocks); the blocks are combined by
    :func:`combine_blocks` (random effects, modified HKSJ by default; one
    usable block: the within-block interval on rounds - 1 degrees of freedom).
    With ``screen``, block estimates far outside the others (:func:`outlying_blocks`:
    one process in which a member alone ran twice as slow) are left out of the
    combination first. With ``robust`` and at least :data:`MIN_ROBUST_BLOCKS` blocks,
    the blocks are combined by :func:`hodges_lehmann` instead (method
    :data:`HODGES_LEHMANN`): a block whose few rounds were mostly disturbed pulls
    the mean of the blocks by 1/k of its error, the Hodges-Lehmann estimate far
    less. The ranking screens and is robust; the CI gate and ``compare`` are
    neither (their sequential rule needs the t interval).

    Parameters
    ----------
    t_a, t_b : array_like, shape (blocks, rounds)
        ``t_a[j, r]`` and ``t_b[j, r]`` were taken in round r of block j; NaN
        marks a missing sample.
    confidence : float in (0, 1)
    modified : bool
        See :func:`combine_blocks`.

    Returns
    -------
    RatioEstimate or None
        None when no block has :data:`MIN_ROUNDS` complete paired rounds.
    """
    found = pooled_block_estimates(t_a, t_b)
    if screen and found:
        out = outlying_blocks([e.log_ratio for e in found])
        found = [e for e, o in zip(found, out) if not o]
    if not found:
        return None
    _check_confidence(confidence)
    y, v = [e.log_ratio for e in found], [e.variance for e in found]
    robustly = _robust_combination(y, v, confidence) if (
        robust and len(y) >= MIN_ROBUST_BLOCKS) else None
    return robustly or _combine(y, v, found[0].rounds, confidence, modified)


def _block_medians(arr: np.ndarray) -> np.ndarray:
    """Each block's median of one member's (blocks, rounds) times, NaN where it has none."""
    finite = np.isfinite(arr)
    out = np.full(arr.shape[0], np.nan)
    rows = finite.any(axis=1)
    out[rows] = nanmedian_rows(np.where(finite[rows], arr[rows], np.nan))
    return out


def block_slowdowns(times: Sequence[ArrayLike]) -> np.ndarray:
    """How much slower each block ran than the group's typical block, shape (blocks,).

    For each member, the log of each block's median over the member's median of
    them; then, per block, the median of that over the members: a block in which
    every member ran 30% slower has ``log 1.3``. A block no member has is NaN.

    Parameters
    ----------
    times : sequence of array_like, each shape (blocks, rounds)
        One group's members on one grid (NaN = missing sample).

    Returns
    -------
    numpy.ndarray of float, shape (blocks,)
    """
    arrays = [_as_blocks(t, "times") for t in times]
    if not arrays:
        raise ValueError("times: expected at least one member, got none")
    if len({a.shape for a in arrays}) > 1:
        raise ValueError("times: expected members of one shape (blocks, rounds), got "
                         f"{sorted({a.shape for a in arrays})}")
    logs = []
    for arr in arrays:
        if np.any(arr[np.isfinite(arr)] <= 0):
            raise ValueError("times must be positive (NaN marks a missing sample)")
        medians = _block_medians(arr)
        if np.isfinite(medians).any():
            logs.append(np.log(medians) - nanmedian_rows(np.log(medians)[None])[0])
    if not logs:
        return np.full(arrays[0].shape[0], np.nan)
    stacked = np.array(logs)
    seen = np.isfinite(stacked).any(axis=0)
    out = np.full(stacked.shape[1], np.nan)
    out[seen] = nanmedian_rows(stacked[:, seen].T)
    return out


def disturbed_blocks(times: Sequence[ArrayLike],
                     slowdown: float = DISTURBED_SLOWDOWN) -> np.ndarray:
    """Blocks the machine slowed: every member (their median) ran at least ``slowdown``
    slower than in the group's typical block (:func:`block_slowdowns`). The typical
    block is the median one, so at most half the blocks are found.

    The ranking counts them and keeps them (docs/statistics.md, "Blocks the machine
    slowed are kept"): its combination over blocks (Hodges-Lehmann, outlying pair
    blocks screened) is robust to a minority of shifted blocks, and setting them
    aside, as it once did in the spirit of Chen & Revels (2016), left noisy hosts
    fewer blocks than that combination needs and made reruns agree less
    (docs/noise.md, "Set aside, or kept?").

    Returns
    -------
    numpy.ndarray of bool, shape (blocks,)
        True for a disturbed block.
    """
    if slowdown <= 0:
        raise ValueError(f"slowdown must be > 0, got {slowdown}")
    slow = block_slowdowns(times)
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(slow, nan=-np.inf) > math.log1p(slowdown)


def block_time(times: ArrayLike) -> float:
    """A member's estimated time: the geometric mean over blocks of its block medians.

    DESIGN.md, Statistics: the order of places. Each block's median ignores NaN
    (missing samples); blocks without a sample are skipped.

    Parameters
    ----------
    times : array_like, shape (blocks, rounds)

    Returns
    -------
    float

    Raises
    ------
    ValueError
        No finite sample, or a time is not positive.
    """
    medians = _block_medians(_as_blocks(times, "times"))
    if not np.isfinite(medians).any():
        raise ValueError("times hold no finite sample")
    return geometric_mean(medians[np.isfinite(medians)])


def significant_effect(estimate: RatioEstimate, min_effect: float = MIN_EFFECT) -> bool:
    """Places' rule: the interval excludes 1 and the ratio is at least ``min_effect`` from 1.

    Parameters
    ----------
    estimate : RatioEstimate
    min_effect : float

    Returns
    -------
    bool
    """
    return estimate.significant and abs(estimate.ratio - 1.0) >= min_effect


# ----------------------------------------------------------------------------------------
# The CI gate: process pairs, sequential, a false discovery rate across cells


def gate_verdict(estimate: RatioEstimate, threshold: float = MIN_EFFECT, final: bool = False,
                 *, alpha: float = ALPHA, p_value: float | None = None) -> str:
    """The CI gate's verdict on candidate / base from process pairs (DESIGN.md, Statistics).

    With ``p`` the random-effects t-test p-value (:attr:`RatioEstimate.p_value`,
    or ``p_value``, e.g. adjusted across cells by :func:`gate_verdicts`) and
    ``[low, high]`` the estimate's two-sided ``1 - alpha`` interval:

    - ``regression``: ``p < alpha`` and ``ratio > 1 + threshold``;
    - ``improvement``: ``p < alpha`` and ``ratio < 1 - threshold``;
    - ``unchanged``: ``1 - threshold < low`` and ``high < 1 + threshold``
      (equivalence by two one-sided tests at alpha / 2 each, Schuirmann 1987);
    - otherwise ``inconclusive`` when ``final`` (the budget of pairs is
      spent), else ``undecided`` (add a pair: :func:`needs_more`).

    Why significance plus the point estimate, not the whole interval beyond
    the threshold: when candidate and base are the same (A/A), a false alarm
    needs the interval to exclude 1, which happens with probability at most
    alpha at one look (alpha / 2 each way) whatever the threshold, while a
    true change of the threshold is flagged about half the time and one of
    twice the threshold nearly always once enough pairs are in. Requiring
    ``low > 1 + threshold`` instead would flag a true change of exactly the
    threshold with probability at most alpha / 2. The price: a true change
    just under the threshold is flagged up to about half the time, as it is in
    the places of a ranking (the same rule, :func:`significant_effect`).
    The thresholds ``1 +- threshold`` match ``gradsweep.regress.decide``.

    Sequential use (start with a few process pairs, add one while
    :func:`needs_more`, up to a budget) looks at the data repeatedly; with the
    modified HKSJ interval of :func:`combine_blocks` (the default) simulated A/A
    cells (3 to 10 pairs of 15 rounds, per-pair bias sd 1.5%, per-sample noise
    5-15%, heavy tails) raised 0 to 0.2% false alarms at alpha = 0.01, while the
    unmodified interval raised 2.2%, over alpha. Power at 5 pairs of 15 rounds
    and 5% noise: +10% flagged 100%, +5% (the threshold) 68%, called unchanged
    0.3%.

    Parameters
    ----------
    estimate : RatioEstimate
        Candidate over base, e.g. :func:`paired_estimate` over process pairs.
    threshold : float
        The smallest change that matters (fraction of the base time).
    final : bool
        Whether no more pairs will be added.
    alpha : float
        Significance level; also sets the interval (1 - alpha).
    p_value : float, optional
        Replaces the estimate's own p-value in the significance test.

    Returns
    -------
    str
        One of :data:`REGRESSION`, :data:`IMPROVEMENT`, :data:`UNCHANGED`,
        :data:`INCONCLUSIVE`, :data:`UNDECIDED`.
    """
    p = estimate.p_value if p_value is None else p_value
    if p < alpha and estimate.ratio > 1.0 + threshold:
        return REGRESSION
    if p < alpha and estimate.ratio < 1.0 - threshold:
        return IMPROVEMENT
    low, high = estimate.interval(1.0 - alpha)
    if 1.0 - threshold < low and high < 1.0 + threshold:
        return UNCHANGED
    return INCONCLUSIVE if final else UNDECIDED


def needs_more(estimate: RatioEstimate, threshold: float = MIN_EFFECT, *, alpha: float = ALPHA,
               p_value: float | None = None) -> bool:
    """Whether a cell is still undecided by :func:`gate_verdict` (add a process pair).

    The interval straddles a decision boundary: it neither lies inside
    ``1 +- threshold`` nor is significant with the estimate beyond the threshold.

    Returns
    -------
    bool
    """
    return gate_verdict(estimate, threshold, False, alpha=alpha, p_value=p_value) == UNDECIDED


def fdr_adjusted(p_values: ArrayLike) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (Benjamini & Hochberg 1995).

    ``scipy.stats.false_discovery_control(p, method="bh")``: rejecting cells
    whose adjusted p is below q controls the false discovery rate at q for
    independent (or positively dependent) tests; when every cell is unchanged
    (A/A) it is also the chance of any false alarm.

    Parameters
    ----------
    p_values : array_like, shape (m,)

    Returns
    -------
    numpy.ndarray, shape (m,)
    """
    from scipy.stats import false_discovery_control

    return np.asarray(false_discovery_control(_as_1d(p_values, "p_values"), method="bh"))


def gate_verdicts(estimates: Sequence[RatioEstimate], threshold: float = MIN_EFFECT,
                  final: bool = False, *, alpha: float = ALPHA) -> list[str]:
    """:func:`gate_verdict` for many cells with the false discovery rate held at alpha.

    Each cell's significance test uses its Benjamini-Hochberg adjusted p-value
    (:func:`fdr_adjusted`) over all cells given; the ``unchanged`` rule keeps
    each cell's own interval (calling a cell unchanged is not an alarm).

    Parameters
    ----------
    estimates : sequence of RatioEstimate, length m
    threshold, final, alpha
        As in :func:`gate_verdict`.

    Returns
    -------
    list of str, length m
    """
    if not estimates:
        return []
    adjusted = fdr_adjusted([e.p_value for e in estimates])
    return [gate_verdict(e, threshold, final, alpha=alpha, p_value=float(p))
            for e, p in zip(estimates, adjusted)]


def time_estimate(times: ArrayLike, *, confidence: float = CONFIDENCE) -> RatioEstimate | None:
    """A member's time (ns) with an interval that includes the between-block variance.

    :func:`paired_estimate` of ``times`` against a constant 1 ns: each block's
    median log time and its standard error, combined over blocks by the same
    random-effects rule (DerSimonian & Laird 1986, HKSJ interval), so a process
    that ran fast or slow widens the interval instead of moving it unseen.

    Parameters
    ----------
    times : array_like, shape (blocks, rounds)
        Positive times; NaN marks a missing sample.

    Returns
    -------
    RatioEstimate or None
        ``ratio`` is the time in the units of ``times``; None without a usable block.
    """
    t = np.asarray(times, dtype=float)
    return paired_estimate(t, np.where(np.isnan(t), np.nan, 1.0), confidence=confidence)
