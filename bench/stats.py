"""Robust statistics for benchmark samples: medians, MADs, bootstrap intervals, tests.

Every function is pure, takes array-likes of float, and raises ``ValueError`` on
empty input. Times are positive numbers (nanoseconds per call); ratios compare
``a`` against ``b`` as ``a / b``, so a ratio above 1 means ``a`` is slower.

References
----------
Efron, B. & Tibshirani, R. J. (1993). *An Introduction to the Bootstrap*. Chapman & Hall.
Iglewicz, B. & Hoaglin, D. C. (1993). *How to Detect and Handle Outliers*. ASQC.
Mann, H. B. & Whitney, D. R. (1947). Ann. Math. Statist. 18(1), 50-60.
Wilcoxon, F. (1945). Individual comparisons by ranking methods. Biometrics Bull. 1(6), 80-83.
"""

from __future__ import annotations

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
    return float(np.median(_as_1d(x)))


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
    arr = _as_1d(x)
    return float(np.median(np.abs(arr - np.median(arr))))


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
    dev = arr - np.median(arr)
    scale = np.median(np.abs(dev))
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
