"""A cell's history across the sweeps of a dataset, and step detection on it.

:func:`cell_history` lists, for one ``cell_id``, each sweep's median in time
order. :func:`detect_steps` finds where that series jumps: it fits a piecewise
constant function to the log medians by *optimal partitioning* (Jackson et al.
2005), an exact dynamic programme minimising

    sum over segments of sum_i |log y_i - median(segment)| / s  +  penalty x (steps)

the L1 ("Laplace noise") Potts functional that asv's ``step_detect`` solves
(Friedrich et al. 2008). Differences from asv: the noise scale ``s`` is
estimated robustly from successive differences (a MAD, Iglewicz & Hoaglin
1993) instead of choosing the penalty by an information criterion, the penalty
is a Schwarz-style ``beta * log(n)`` per step (Yao 1988), working on logs makes
the fit scale-free, and steps smaller than a minimum effect are merged away.
Dashboards can call :func:`detect_steps` and :func:`cell_history` directly.

References
----------
Jackson, B. et al. (2005). An algorithm for optimal partitioning of data on an
interval. IEEE Signal Processing Letters 12(2), 105-108.
Friedrich, F. et al. (2008). Complexity penalized M-estimation: fast computation.
J. Comput. Graph. Statist. 17(1), 201-224.
Yao, Y.-C. (1988). Estimating the number of change-points via Schwarz' criterion.
Statist. Probab. Lett. 6, 181-189.
asv (airspeed velocity), ``asv/step_detect.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from gradsweep import stats, store
from gradsweep.errors import BadInput

#: Penalty per step is PENALTY_BETA * log(n), in units of the noise scale.
PENALTY_BETA = 3.0
#: Shortest segment: one odd sweep is an outlier, two in a row a level (as asv's min_size).
MIN_SEGMENT = 2
#: Steps whose ratio is within this of 1 are merged away (DESIGN.md's minimum effect).
MIN_EFFECT = stats.MIN_EFFECT
#: Floor of the noise scale of the log medians (0.5%): identical values are not infinitely
#: precise.
NOISE_FLOOR = 0.005
#: Columns of :func:`cell_history`.
HISTORY_COLUMNS = ("sweep_id", "cell_id", "started_at", "name", "role", "ci_run", "git_commit",
                   "status", "median_ns", "ci_low_ns", "ci_high_ns", "variant", "shape", "dtype",
                   "host")


@dataclass(frozen=True)
class Segment:
    """Points ``start`` to ``stop`` (exclusive) of a series at one level (their median)."""

    start: int
    stop: int
    level: float


@dataclass(frozen=True)
class Step:
    """A jump between two segments.

    Attributes
    ----------
    index : int
        Position of the first point after the step.
    before, after : float
        Levels (medians) of the segments either side.
    ratio : float
        ``after / before``: above 1 is slower.
    """

    index: int
    before: float
    after: float
    ratio: float


def noise_scale(logs: np.ndarray) -> float:
    """Robust sigma of the noise: scaled MAD of successive differences / sqrt(2).

    Differences cancel the levels, so steps are a few outliers among them; the
    MAD ignores those (Iglewicz & Hoaglin 1993). Floored at :data:`NOISE_FLOOR`.
    """
    if logs.size < 3:
        return NOISE_FLOOR
    return max(stats.scaled_mad(np.diff(logs)) / math.sqrt(2.0), NOISE_FLOOR)


def _segment_costs(logs: np.ndarray, min_segment: int) -> np.ndarray:
    """``cost[i, j]``: sum of |x - median| over ``logs[i:j]``; inf when shorter than allowed."""
    n = logs.size
    cost = np.full((n + 1, n + 1), np.inf)
    for i in range(n):
        for j in range(i + min_segment, n + 1):
            part = logs[i:j]
            cost[i, j] = float(np.abs(part - np.median(part)).sum())
    return cost


def _optimal_partition(cost: np.ndarray, penalty: float) -> list[int]:
    """Segment starts minimising total cost + penalty per segment (Jackson et al. 2005)."""
    n = cost.shape[0] - 1
    best = np.full(n + 1, np.inf)
    best[0] = -penalty
    last = np.zeros(n + 1, dtype=int)
    for j in range(1, n + 1):
        totals = best[:j] + penalty + cost[:j, j]
        last[j] = int(np.argmin(totals))
        best[j] = totals[last[j]]
    starts, j = [], n
    while j > 0:
        starts.append(int(last[j]))
        j = starts[-1]
    return sorted(starts)


def _levels(logs: np.ndarray, starts: Sequence[int]) -> list[Segment]:
    bounds = [*starts, logs.size]
    return [Segment(a, b, float(np.median(logs[a:b]))) for a, b in zip(bounds, bounds[1:])]


def _merge_small(logs: np.ndarray, starts: list[int], min_effect: float) -> list[int]:
    """Drop the smallest step below ``min_effect`` and refit, until none is left."""
    limit = math.log1p(min_effect)
    while len(starts) > 1:
        segs = _levels(logs, starts)
        jumps = [abs(b.level - a.level) for a, b in zip(segs, segs[1:])]
        smallest = int(np.argmin(jumps))
        if jumps[smallest] >= limit:
            break
        del starts[smallest + 1]
    return starts


def segments(series: ArrayLike, *, penalty_beta: float = PENALTY_BETA,
             min_segment: int = MIN_SEGMENT, min_effect: float = MIN_EFFECT) -> tuple[Segment, ...]:
    """Piecewise constant fit of a positive series (see the module docstring).

    Parameters
    ----------
    series : array_like, shape (n,)
        Positive values in time order (a cell's median per sweep).
    penalty_beta : float
        Penalty per step is ``penalty_beta * log(n)`` noise scales.
    min_segment : int
        Shortest segment.
    min_effect : float
        Adjacent segments whose levels differ by less than this ratio are merged.

    Returns
    -------
    tuple of Segment
        Covering 0..n; levels are medians in the series' units. Empty for n = 0.
    """
    y = np.asarray(series, dtype=np.float64).ravel()
    if y.size == 0:
        return ()
    logs = np.log(stats._as_positive(y, "series"))
    if logs.size < 2 * min_segment:
        starts = [0]
    else:
        scaled = logs / noise_scale(logs)
        penalty = penalty_beta * math.log(logs.size)
        starts = _optimal_partition(_segment_costs(scaled, min_segment), penalty)
    starts = _merge_small(logs, starts, min_effect)
    return tuple(Segment(s.start, s.stop, math.exp(s.level)) for s in _levels(logs, starts))


def detect_steps(series: ArrayLike, **kwargs) -> tuple[Step, ...]:
    """The steps of :func:`segments`' fit: where the level changes, and by what ratio.

    Parameters
    ----------
    series : array_like, shape (n,)
    **kwargs
        Passed to :func:`segments`.

    Returns
    -------
    tuple of Step
    """
    segs = segments(series, **kwargs)
    return tuple(Step(b.start, a.level, b.level, b.level / a.level)
                 for a, b in zip(segs, segs[1:]))


def cell_history(dataset: store.Dataset, cell_id: str) -> pd.DataFrame:
    """One row per sweep holding ``cell_id``, oldest first (columns :data:`HISTORY_COLUMNS`).

    Raises
    ------
    BadInput
        When no sweep of the dataset holds the cell.
    """
    wanted = ["cell_id", "status", "median_ns", "ci_low_ns", "ci_high_ns", "variant", "shape",
              "dtype", "host", "git_commit"]
    cells = store.read(dataset, "cells", columns=wanted)
    cells = cells[cells["cell_id"] == cell_id]
    if not len(cells):
        raise BadInput(f"no sweep in {dataset.uri} holds cell {cell_id!r}")
    sweeps = store.sweeps(dataset)[[store.PARTITION, "started_at", "name", "role", "ci_run"]]
    merged = cells.merge(sweeps, on=store.PARTITION, how="left")
    merged = merged.sort_values(["started_at", store.PARTITION], kind="stable")
    return merged[list(HISTORY_COLUMNS)].reset_index(drop=True)


def history_steps(history: pd.DataFrame, **kwargs) -> tuple[Step, ...]:
    """Steps of the ok sweeps' medians; each ``index`` is a row of ``history``."""
    ok = history[(history["status"] == "ok") & history["median_ns"].notna()]
    found = detect_steps(ok["median_ns"].to_numpy(), **kwargs)
    rows = ok.index.to_numpy()
    return tuple(Step(int(rows[s.index]), s.before, s.after, s.ratio) for s in found)


