"""Reproducibility metrics of repeated sweeps: claims, reversals, ratio spreads.

Pure functions over the rankings of K runs of one spec (each run a sequence of
:class:`Standing`), used by ``reproducibility.py`` and unit-tested in
``tests/test_repro_metrics.py``. The definitions (issue 14, item 7):

- A **claim** of a run: in one group, member a holds a better (smaller)
  place than member b ("a ahead of b"), or, where the ranking gives letters (a
  compact letter display), a and b share no letter and a is the faster. Members
  sharing a place and a letter claim nothing.
- A claim of run i is **reversed** when another run j placed b strictly ahead
  of a. Counted per run (a claim made by three runs and reversed counts three
  times) and per distinct claim.
- A member's **ratio spread**: the largest over the smallest of its time
  relative to its group's fastest member, across the runs that measured it.
- A **pair ratio**: time(b) / time(a) of two members of one group, as pyperf's
  ``compare_to`` reports the ratio of two benchmarks' means.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

#: A group: everything of a cell but its member (kernel, shape, dtype).
Group = tuple[str, ...]


@dataclass(frozen=True)
class Standing:
    """One member's result in one run's ranking.

    Attributes
    ----------
    group : tuple of str
        (kernel, shape, dtype).
    member : str
        The variant or peer, e.g. ``rnn/buffers=list,wgrad=step,clip=none``.
    place : int
        1-based; members sharing a place are not shown to differ.
    ratio : float
        Time relative to the group's fastest member (>= 1).
    letters : str
        The ranking's compact letter display ("" where it has none): members
        sharing no letter were shown apart.
    """

    group: Group
    member: str
    place: int
    ratio: float
    letters: str = ""


def ahead(a: Standing, b: Standing) -> bool:
    """Whether a run's ranking claims ``a`` ahead of ``b`` (two members of one group):
    a better place, or letters shared with none of b's and a smaller ratio."""
    apart = bool(a.letters and b.letters and not set(a.letters) & set(b.letters))
    return a.place < b.place or (apart and a.ratio < b.ratio)


@dataclass(frozen=True)
class Claim:
    """In ``group``, ``ahead`` holds a better place than ``behind``."""

    group: Group
    ahead: str
    behind: str

    @property
    def opposite(self) -> Claim:
        return Claim(self.group, self.behind, self.ahead)


@dataclass(frozen=True)
class Reversals:
    """Claims of K runs and how many another run reversed.

    Attributes
    ----------
    per_run : tuple of int, length K
        Claims each run made.
    reversed_per_run : tuple of int, length K
        Of those, the claims some other run reversed.
    distinct : int
        Distinct claims over all runs (a claim and its opposite count as two).
    reversed_distinct : int
        Distinct claims whose opposite another run made.
    """

    per_run: tuple[int, ...]
    reversed_per_run: tuple[int, ...]
    distinct: int
    reversed_distinct: int

    @property
    def made(self) -> int:
        """Claims made, summed over runs."""
        return sum(self.per_run)

    @property
    def reversed(self) -> int:
        """Claims reversed by another run, summed over runs."""
        return sum(self.reversed_per_run)

    @property
    def reversed_fraction(self) -> float:
        """``reversed / made`` (0 when no run claims anything)."""
        return self.reversed / self.made if self.made else 0.0

    @property
    def held_per_run(self) -> tuple[int, ...]:
        """Claims each run made that no other run reversed: the fair count to set against
        code whose rankings reverse (more claims, some of them wrong)."""
        return tuple(m - r for m, r in zip(self.per_run, self.reversed_per_run, strict=True))


@dataclass(frozen=True)
class Spreads:
    """Each member's ratio spread across runs, and their median and maximum.

    Attributes
    ----------
    by_member : mapping of (group, member) to float
        Max over min of the member's ratio to its group's fastest, across the
        runs that measured it (members measured by one run only are left out).
    median, max : float
        Over ``by_member`` (NaN when it is empty).
    worst : (group, member) or None
        The member with the widest spread.
    """

    by_member: Mapping[tuple[Group, str], float]
    median: float
    max: float
    worst: tuple[Group, str] | None


def claims(run: Iterable[Standing]) -> frozenset[Claim]:
    """Every claim of one run: ordered pairs (a, b) of a group's members with a
    :func:`ahead` of b."""
    by_group: dict[Group, list[Standing]] = defaultdict(list)
    for s in run:
        by_group[s.group].append(s)
    return frozenset(Claim(g, a.member, b.member) for g, members in by_group.items()
                     for a in members for b in members if ahead(a, b))


def reversals(runs: Sequence[Iterable[Standing]]) -> Reversals:
    """Claims of each run and those another run reversed (see the module docstring).

    Parameters
    ----------
    runs : sequence of K rankings

    Returns
    -------
    Reversals
    """
    made = [claims(run) for run in runs]
    reversed_per_run = []
    for i, mine in enumerate(made):
        others = frozenset().union(*(c for j, c in enumerate(made) if j != i))
        reversed_per_run.append(sum(c.opposite in others for c in mine))
    union = frozenset().union(*made)
    return Reversals(tuple(len(c) for c in made), tuple(reversed_per_run), len(union),
                     sum(c.opposite in union for c in union))


def spread(values: Sequence[float]) -> float:
    """Largest over smallest of positive ``values`` (1 for a single value)."""
    v = np.asarray(values, dtype=float)
    if not v.size or np.any(~np.isfinite(v)) or np.any(v <= 0):
        raise ValueError(f"spread needs positive finite values, got {list(values)!r}")
    return float(v.max() / v.min())


def ratio_spreads(runs: Sequence[Iterable[Standing]]) -> Spreads:
    """Each member's spread of its ratio to the group's fastest across ``runs``.

    Members seen by fewer than two runs are left out; median and max are taken
    over the rest (NaN when none is left).
    """
    seen: dict[tuple[Group, str], list[float]] = defaultdict(list)
    for run in runs:
        for s in run:
            seen[(s.group, s.member)].append(s.ratio)
    by_member = {key: spread(v) for key, v in seen.items() if len(v) >= 2}
    if not by_member:
        return Spreads({}, float("nan"), float("nan"), None)
    worst = max(by_member, key=by_member.__getitem__)
    values = list(by_member.values())
    return Spreads(by_member, float(np.median(values)), float(max(values)), worst)


def pair_ratio(run: Iterable[Standing], group: Group, a: str, b: str) -> float | None:
    """time(b) / time(a) in ``group`` of one run (None when either is missing)."""
    ratio = {s.member: s.ratio for s in run if s.group == group}
    if a not in ratio or b not in ratio:
        return None
    return ratio[b] / ratio[a]


def ratios_to_fastest(times: Sequence[float]) -> list[float]:
    """Each time over the smallest (today's rankings have times, not ratios)."""
    t = np.asarray(times, dtype=float)
    return list(t / t.min()) if t.size else []


# --- do a run's intervals hold another run's estimate? ------------------------------------

#: Where a 95% interval holds an independent replication's estimate of the same quantity,
#: on average, when both are normal with equal standard errors: P(|Z| < 1.96 / sqrt 2)
#: (Cumming & Maillardet 2006, "Confidence intervals and replication: where will the next
#: mean fall?", Psychological Methods 11(3)).
CAPTURE_EXPECTED = 0.834


@dataclass(frozen=True)
class Capture:
    """How often one run's interval held another run's estimate of the same member.

    Attributes
    ----------
    held : int
        Ordered pairs of runs (i, j) and members where run j's ratio lay in run i's
        interval.
    pairs : int
        Ordered pairs counted: both runs ranked the member and run i gave it a
        proper interval (the group's fastest, at 1 by definition, has none).
    """

    held: int
    pairs: int

    @property
    def rate(self) -> float:
        """``held / pairs`` (NaN without pairs: a ranking without intervals)."""
        return self.held / self.pairs if self.pairs else float("nan")


Estimate = tuple[float, float | None, float | None]


def rerun_capture(runs: Sequence[Mapping[tuple[Group, str], Estimate]]) -> Capture:
    """How often each run's interval for a member's ratio held every other run's ratio.

    Intervals that carry all the variance between runs hold a rerun's estimate about
    :data:`CAPTURE_EXPECTED` of the time at 95%; intervals that leave the
    between-process variance out hold it far less often.

    Parameters
    ----------
    runs : sequence of mappings, one per run
        (group, member) -> (ratio, low, high); low and high None or NaN when the run
        gave no interval.
    """
    held = pairs = 0
    for i, mine in enumerate(runs):
        for key, (_, low, high) in mine.items():
            if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)) \
                    or low >= high:
                continue
            for j, other in enumerate(runs):
                if j != i and key in other:
                    pairs += 1
                    held += bool(low <= other[key][0] <= high)
    return Capture(held, pairs)


def shared_shift(runs: Sequence[Mapping[tuple[Group, str], float]],
                 members: Iterable[tuple[Group, str]]) -> float | None:
    """How far a run moves ``members`` together: the sd across runs of the mean, over
    the members, of each one's log ratio minus its median log ratio over the runs.

    Each member's own level drops out (its median), and noise of its own averages
    down over the members, so what is left is the part of a run's shift they share
    (a one-way random-effects reading of runs as the factor). A member missing from
    a run, or with a ratio that is not positive and finite, is left out of every run.

    Parameters
    ----------
    runs : sequence of mappings, one per run
        (group, member) -> ratio to the group's fastest.
    members : iterable of (group, member)

    Returns
    -------
    float or None
        The sd (ddof 1) in log units (≈ a fraction); None with fewer than 2 runs or
        no member in every run.
    """
    keys = [k for k in members
            if all(k in r and r[k] > 0 and math.isfinite(r[k]) for r in runs)]
    if len(runs) < 2 or not keys:
        return None
    logs = np.log([[r[k] for k in keys] for r in runs])  # runs x members
    shift = (logs - np.median(logs, axis=0)).mean(axis=1)
    return float(np.std(shift, ddof=1))


# --- drift of one process's ratios over time (ratio_drift.py) ----------------------------

def stretch_means(x: Sequence[float], per: int) -> list[float]:
    """Means of consecutive, non-overlapping stretches of ``per`` values of ``x``.

    A last stretch shorter than ``per`` is left out (it would be a shorter sweep).
    """
    if per < 1:
        raise ValueError(f"a stretch needs at least one value, got per={per}")
    v = np.asarray(x, dtype=float)
    whole = v.size // per
    return [float(m) for m in v[:whole * per].reshape(whole, per).mean(axis=1)]


def consecutive_spreads(log_values: Sequence[float], runs: int) -> list[float]:
    """exp(max - min) of every ``runs`` consecutive ``log_values``: what back-to-back
    runs reporting those log-ratios would spread by (:func:`spread` of their ratios)."""
    if runs < 2:
        raise ValueError(f"a spread needs at least two runs, got runs={runs}")
    v = np.asarray(log_values, dtype=float)
    return [float(np.exp(v[i:i + runs].max() - v[i:i + runs].min()))
            for i in range(v.size - runs + 1)]


def autocorrelation(x: Sequence[float], lag: int) -> float:
    """The lag-``lag`` sample autocorrelation of ``x`` (Box & Jenkins' estimator: the
    lagged autocovariance about the overall mean over the variance); NaN when the
    series is shorter than ``lag + 2`` or constant."""
    v = np.asarray(x, dtype=float)
    if lag < 1 or v.size < lag + 2:
        return float("nan")
    d = v - v.mean()
    denom = float(d @ d)
    return float(d[:-lag] @ d[lag:] / denom) if denom > 0 else float("nan")


# --- how noisy the host was (reproducibility.py prints it beside the targets) ------------

#: Complete paired rounds a block needs to count (as ``gradsweep.stats.MIN_ROUNDS``).
BLOCK_MIN_ROUNDS = 3


def block_spread(t_a: np.ndarray, t_b: np.ndarray) -> float | None:
    """The standard deviation (ddof 1) across blocks of a pair's block estimate, the
    median of the block's paired ``log(t_a / t_b)``: what one block's process, its
    moment and its rounds' noise move a pair's ratio by, together (a run of k blocks
    then has about this over sqrt(k)). None with fewer than two usable blocks.

    Parameters
    ----------
    t_a, t_b : ndarray, shape (blocks, rounds)
        Paired times (NaN: missing); blocks with fewer than ``BLOCK_MIN_ROUNDS``
        complete rounds are left out.
    """
    y = usable_block_log_ratios(t_a, t_b)
    return float(np.std(y, ddof=1)) if len(y) >= 2 else None


def usable_block_log_ratios(t_a: np.ndarray, t_b: np.ndarray) -> np.ndarray:
    """The finite :func:`block_log_ratios` of the blocks with at least
    ``BLOCK_MIN_ROUNDS`` complete rounds, shape (usable blocks,)."""
    y = block_log_ratios(t_a, t_b, min_rounds=BLOCK_MIN_ROUNDS)
    return y[np.isfinite(y)]


def block_log_ratios(t_a: np.ndarray, t_b: np.ndarray, min_rounds: int = 1) -> np.ndarray:
    """Each block's estimate of ``log(a / b)``: the median of its paired log-ratios.

    Parameters
    ----------
    t_a, t_b : ndarray, shape (blocks, rounds)
        Paired times (NaN: missing).
    min_rounds : int
        Blocks with fewer complete pairs get NaN.

    Returns
    -------
    ndarray, shape (blocks,)
    """
    d = np.log(np.asarray(t_a, dtype=float) / np.asarray(t_b, dtype=float))
    usable = np.count_nonzero(np.isfinite(d), axis=1) >= max(1, min_rounds)
    out = np.full(d.shape[0], np.nan)
    out[usable] = np.nanmedian(d[usable], axis=1)
    return out


def unit_share(sets: Sequence[Sequence[Sequence[float]]]) -> dict[str, float | tuple[int, int]]:
    """One-way analysis of variance of units within sets (Snedecor's F).

    ``sets[s][u][b]`` is block b of unit u in set s: a unit is what the blocks may
    share a bias through (a fork server, a run), a set a batch of units measured
    together. Each set's mean is taken out (drift between sets is not the units'),
    so the between-unit mean square has sets x (units - 1) degrees of freedom and
    the within-unit one sets x units x (blocks - 1).

    Returns
    -------
    dict
        ``sd_within`` (a block's sd within its unit), ``sd_unit`` (the units' own
        sd, the method-of-moments estimate ``sqrt((MSB - MSW) / blocks)``, 0 when
        negative), ``F``, ``df`` (between, within) and ``p`` (upper tail of F).
    """
    x = np.asarray(sets, dtype=float)  # (sets, units, blocks)
    n_sets, n_units, n_blocks = x.shape
    unit_means = x.mean(axis=2)
    centred = unit_means - unit_means.mean(axis=1, keepdims=True)
    df_between, df_within = n_sets * (n_units - 1), n_sets * n_units * (n_blocks - 1)
    ms_between = n_blocks * float((centred ** 2).sum()) / df_between
    ms_within = float(((x - unit_means[..., None]) ** 2).sum()) / df_within
    f = ms_between / ms_within if ms_within > 0 else float("nan")
    return {"sd_within": ms_within ** 0.5,
            "sd_unit": max((ms_between - ms_within) / n_blocks, 0.0) ** 0.5,
            "F": f, "df": (df_between, df_within),
            "p": float(sps.f.sf(f, df_between, df_within)) if ms_within > 0 else float("nan")}


# --- the spread the blocks' own noise allows (reproducibility.py's "floor" line) ---------

#: Monte Carlo draws of K runs behind :func:`spread_floor`.
FLOOR_DRAWS = 2000
#: Central band of the predicted median and max spread that :func:`spread_floor` reports.
FLOOR_BAND = 0.90


def block_standard_error(t_a: np.ndarray, t_b: np.ndarray) -> float | None:
    """The standard error of a run's ``log(a / b)`` from its blocks alone: the sd
    (ddof 1) of the block estimates (:func:`block_log_ratios`) over sqrt(blocks).

    What a run's estimate would move by between runs if blocks were its only noise
    (nothing shared by a run's blocks). None with fewer than two usable blocks;
    ``t_a``, ``t_b`` as for :func:`block_spread`.
    """
    y = usable_block_log_ratios(t_a, t_b)
    return float(np.std(y, ddof=1) / np.sqrt(len(y))) if len(y) >= 2 else None


@dataclass(frozen=True)
class Floor:
    """The ratio spreads K runs would show if the blocks' own noise were all there was.

    Attributes
    ----------
    median, max : float
        Median over the draws of the median, and of the max, over members of the
        members' spreads (max / min of K ratios).
    median_band, max_band : tuple of float
        Their central :data:`FLOOR_BAND` ranges over the draws: where a benchmark of
        K runs lands when nothing but the blocks' noise moves it.
    members, runs : int
    """

    median: float
    median_band: tuple[float, float]
    max: float
    max_band: tuple[float, float]
    members: int
    runs: int


def spread_floor(standard_errors: Sequence[float], runs: int, *, draws: int = FLOOR_DRAWS,
                 seed: int = 0) -> Floor:
    """Predict the ratio spreads of ``runs`` runs from each member's standard error.

    Each member's log-ratio in a run is drawn as normal about its truth with its
    standard error, independently between runs and members; a member's spread is
    exp(range) of its ``runs`` draws, whose mean is ``d2(runs)`` standard errors
    (2.326 for 5 runs: Tippett 1925, "On the extreme individuals and the range of
    samples taken from a normal population", Biometrika 17). Monte Carlo, seeded,
    over ``draws`` benchmarks: the median and max over members, with their bands.

    Parameters
    ----------
    standard_errors : sequence of float, shape (members,)
        Per member, its log-ratio's standard error in one run
        (:func:`block_standard_error`, pooled over the runs).
    runs : int
        Runs per benchmark (K >= 2).
    """
    se = np.asarray(standard_errors, dtype=float)
    if runs < 2 or not se.size or np.any(~np.isfinite(se)) or np.any(se < 0):
        raise ValueError(f"a floor needs runs >= 2 and finite standard errors >= 0, got "
                         f"runs={runs}, {se.size} errors")
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((draws, se.size, runs)) * se[None, :, None]
    spreads = np.exp(np.ptp(z, axis=2))  # (draws, members)
    med, top = np.median(spreads, axis=1), spreads.max(axis=1)
    tail = (1.0 - FLOOR_BAND) / 2.0

    def band(x: np.ndarray) -> tuple[float, float]:
        low, high = np.quantile(x, [tail, 1.0 - tail])
        return float(low), float(high)

    return Floor(float(np.median(med)), band(med), float(np.median(top)), band(top),
                 int(se.size), int(runs))


def samples_for(spread: float, goal: float) -> float:
    """How many times the samples a spread of ``spread`` needs to shrink to ``goal``.

    A run's standard error falls as 1 / sqrt(samples) when blocks are its only noise,
    and a spread is exp(range), the range a fixed multiple of the standard error, so
    the factor is ``(log spread / log goal) ** 2`` (1 when already within the goal).
    """
    if not (spread >= 1.0 and goal > 1.0):
        raise ValueError(f"spread must be >= 1 and goal > 1, got {spread!r}, {goal!r}")
    return max(1.0, (math.log(spread) / math.log(goal)) ** 2)
