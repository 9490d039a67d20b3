"""Rank variants per kernel, shape and dtype (DESIGN.md, Statistics).

Sort by estimated time; a variant joins the current place unless it differs
from that place's first member, in which case it opens the next place. With
blocks and rounds (:func:`block_places`) the sort is by paired ratio to the
member of least time and "differs" is a paired interval over blocks (screened,
Hodges-Lehmann with 6 blocks or more, else random effects) showing
it slower than every member of the place, beyond the minimum effect
(:func:`gradsweep.stats.significant_effect`);
for old unpaired sweeps (:func:`places`) it is the Mann-Whitney U test at alpha
and the minimum effect (:func:`gradsweep.stats.differs`). Beside the places, letters
(:func:`compact_letters`) show every pair shown apart, within a place too. Also here: memory places,
the Pareto front of time against memory, and the overall ranking across shapes
by the geometric mean of normalised times. Every function is pure.
"""

from __future__ import annotations

import functools
import math
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradsweep import stats
from gradsweep.impls.base import PEER_AXIS, baseline_for
from gradsweep.impls.registry import Registry
from gradsweep.stats import RatioEstimate

GROUP_KEYS = ("kernel", "shape", "dtype")
OVERALL_KEYS = ("kernel", "dtype")
RANK_COLUMNS = [*GROUP_KEYS, "place", "letters", "variant", "median_ns", "ci_low_ns", "ci_high_ns",
                "ratio_fastest", "ratio_low", "ratio_high", "speedup", "speedup_low",
                "speedup_high", "speedup_peer", "speedup_peer_low", "speedup_peer_high",
                "paired", "blocks_slowed", "answer", "peak_bytes", "memory_place",
                "pareto", "flops", "gflops", "peak_fraction", "warnings", "cell_id"]
#: Columns of one interval: (point, low, high) for each ratio a ranking reports.
RATIO_COLUMNS = {"fastest": ("ratio_fastest", "ratio_low", "ratio_high"),
                 "baseline": ("speedup", "speedup_low", "speedup_high"),
                 "peer": ("speedup_peer", "speedup_peer_low", "speedup_peer_high")}
#: Columns of the ``cells`` table :func:`rank` and :func:`overall` read (not the other
#: clocks' samples, the machine or the git state): half the bytes of a whole row.
READ_COLUMNS = [*GROUP_KEYS, "variant", "status", "median_ns", "ci_low_ns", "ci_high_ns",
                "peak_bytes", "flops", "gflops", "peak_fraction", "warnings", "samples_ns",
                "sample_block", "sample_round"]
OVERALL_COLUMNS = [*OVERALL_KEYS, "place", "variant", "geomean", "shapes", "total_shapes"]
#: The peer speed-ups are measured against (``KERNEL/peer=torch``).
PEER = "torch"
#: Letters of a compact letter display, in the order they are given out.
LETTERS = string.ascii_lowercase + string.ascii_uppercase


def places(samples: Sequence[np.ndarray], *, alpha: float = stats.ALPHA,
           min_effect: float = stats.MIN_EFFECT) -> list[int]:
    """Places (1-based) of unpaired sample sets already sorted by median (old sweeps).

    Each set joins the current place unless it differs from the place's first
    member (:func:`gradsweep.stats.differs`: Mann-Whitney U p < alpha and a ratio of
    medians at least ``min_effect`` from 1), in which case it opens the next
    place. Sweeps with blocks and rounds use :func:`block_places` instead.

    Parameters
    ----------
    samples : sequence of numpy.ndarray, each shape (n_i,)
        Positive times, sorted by median.
    alpha, min_effect : float

    Returns
    -------
    list of int, length len(samples)
    """
    result: list[int] = []
    leader = None
    for i, s in enumerate(samples):
        if leader is None or stats.differs(samples[leader], s, alpha=alpha,
                                             min_effect=min_effect):
            leader = i
            result.append((result[-1] + 1) if result else 1)
        else:
            result.append(result[-1])
    return result


@dataclass(frozen=True)
class Placed:
    """One member's place in a group measured in blocks and rounds.

    Attributes
    ----------
    member : str
    place : int
        1-based; a member in a later place was shown slower than every member of
        the place before; sharing a place claims nothing (a place can chain members
        each within ``min_effect`` of another).
    time_ns : float
        Estimated time (:func:`gradsweep.stats.block_time`); it breaks ties of the
        sort key (:func:`paired_order_keys`).
    leader : str
        First member of this member's place (the member itself when it leads).
    compared_with : str or None
        The member of the place before it in time that decided its place: the
        first it was not shown to differ from (it joined that place), or that
        place's slowest member when it differs from all of them (it opened a new
        place); None for the fastest member.
    ratio : RatioEstimate or None
        ``member / compared_with`` (paired, random effects), which decided the
        place; None for the fastest member and when no block had enough
        complete rounds to compare (the member then joins the place).
    """

    member: str
    place: int
    time_ns: float
    leader: str
    compared_with: str | None
    ratio: RatioEstimate | None


def _checked_blocks(times: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``times`` as float arrays of one shape (blocks, rounds), each with a positive sample.

    Raises
    ------
    ValueError
        Naming the first member whose times misfit.
    """
    arrays = {m: np.atleast_2d(np.asarray(t, dtype=float)) for m, t in times.items()}
    if not arrays:
        return arrays
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) > 1 or any(len(s) != 2 for s in shapes):
        first = next(iter(arrays.values())).shape
        odd = next(m for m, a in arrays.items() if a.shape != first or a.ndim != 2)
        raise ValueError(f"times of {odd!r} have shape {arrays[odd].shape}, expected {first} "
                         "(blocks, rounds) like the first member")
    for member, a in arrays.items():
        finite = a[np.isfinite(a)]
        if not finite.size or np.any(finite <= 0):
            raise ValueError(f"times of {member!r} must hold positive samples (NaN = missing)")
    return arrays


#: ``estimate(member, other)``: the ranking's paired ratio member / other, or None.
Estimate = Callable[[str, str], RatioEstimate | None]


def paired_estimates(arrays: Mapping[str, np.ndarray], *, confidence: float = stats.CONFIDENCE,
                     modified: bool = True) -> Estimate:
    """The ranking's paired estimate of each ordered pair of members, computed once.

    Places, their sort keys and the ratio columns ask for the same pairs
    (:func:`gradsweep.stats.paired_estimate`, screened and robust); a group of k
    members needs at most k(k-1) of them however often each is asked for.

    Parameters
    ----------
    arrays : mapping of str to ndarray, each shape (blocks, rounds)

    Returns
    -------
    Estimate
        ``estimate(m, o)``: m / o, None where no block pairs them.
    """
    @functools.cache
    def estimate(member: str, other: str) -> RatioEstimate | None:
        return stats.paired_estimate(arrays[member], arrays[other], confidence=confidence,
                                     modified=modified, screen=True, robust=True)
    return estimate


def block_places(times: Mapping[str, np.ndarray], *, min_effect: float = stats.MIN_EFFECT,
                 confidence: float = stats.CONFIDENCE, modified: bool = True,
                 estimate: Estimate | None = None) -> list[Placed]:
    """Places of a group measured in blocks and rounds (DESIGN.md, Statistics).

    Members are sorted by their paired ratio to the member of least estimated
    time (:func:`paired_order_keys`; estimated time: the geometric mean over
    blocks of the block medians, :func:`gradsweep.stats.block_time`, which also
    breaks ties). Each joins the current place unless its paired ratio to *every*
    member of that place, its leader included (:func:`gradsweep.stats.paired_estimate`:
    block medians of paired log-ratios, blocks far outside the others screened out,
    combined by Hodges-Lehmann with its signed-rank interval where 6 or more remain,
    else DerSimonian-Laird random effects with the HKSJ t interval), is significant at
    ``confidence`` and at least ``min_effect`` from 1
    (:func:`gradsweep.stats.significant_effect`) and shows it slower
    (:func:`shown_slower`); then it leads the next place.
    So a member placed behind another was shown slower than it by ``min_effect``:
    two members that differ by less never stand in different places, however
    close to ``min_effect`` from the leader each is (a rule against the leader
    alone reversed such pairs between reruns).

    Parameters
    ----------
    times : mapping of str to array_like, each shape (blocks, rounds)
        ``times[m][j, r]``: member m's time in round r of block j (the same
        round of the same block pairs two members); NaN marks a missing sample.
    min_effect, confidence : float
    modified : bool
        Modified HKSJ where random effects combine (see
        :func:`gradsweep.stats.combine_blocks`).
    estimate : Estimate, optional
        The pairs' estimates, shared with a caller that reports them too
        (default: :func:`paired_estimates` of ``times``).

    Returns
    -------
    list of Placed
        In place order (by :func:`paired_order_keys`), the fastest first.
    """
    arrays = _checked_blocks(times)
    if estimate is None:
        estimate = paired_estimates(arrays, confidence=confidence, modified=modified)
    time_ns = {m: stats.block_time(a) for m, a in arrays.items()}
    key = paired_order_keys(arrays, time_ns, estimate=estimate)
    result: list[Placed] = []
    for member in sorted(arrays, key=lambda m: (key[m], time_ns[m])):
        if not result:
            result.append(Placed(member, 1, time_ns[member], member, None, None))
            continue
        leader, place = result[-1].leader, result[-1].place
        current = [p.member for p in result if p.place == place]
        opens, compared_with, ratio = _against_place(estimate, member, current, min_effect)
        result.append(Placed(member, place + int(opens), time_ns[member],
                             member if opens else leader, compared_with, ratio))
    return result


def paired_order_keys(arrays: Mapping[str, np.ndarray], time_ns: Mapping[str, float], *,
                      confidence: float = stats.CONFIDENCE, modified: bool = True,
                      estimate: Estimate | None = None) -> dict[str, float]:
    """Each member's sort key: its paired ratio to the anchor, the member of least
    estimated time (:func:`gradsweep.stats.paired_estimate`, screened, as the ratios
    a ranking reports); the ratio of estimated times where no block pairs them.

    Round-paired ratios cancel what moves a whole round or block (a neighbour's
    burst, a slow process) and the screen drops a block one member alone ran far
    off, so this order agrees with the ratios shown beside it; sorting by the
    members' own times let one slow block put a member behind one it was shown
    faster than (2026-12-01: a member at 0.988x the fastest placed third).

    Parameters
    ----------
    arrays : mapping of str to ndarray, each shape (blocks, rounds)
    time_ns : mapping of str to float
        :func:`gradsweep.stats.block_time` of each member.
    estimate : Estimate, optional
        Default :func:`paired_estimates` of ``arrays`` at ``confidence``, ``modified``.

    Returns
    -------
    dict of str to float
        1.0 for the anchor; empty for no members.
    """
    if not arrays:
        return {}
    if estimate is None:
        estimate = paired_estimates(arrays, confidence=confidence, modified=modified)
    anchor = min(arrays, key=time_ns.__getitem__)
    keys = {}
    for m in arrays:
        est = None if m == anchor else estimate(m, anchor)
        keys[m] = est.ratio if est is not None else time_ns[m] / time_ns[anchor]
    return keys


def shown_slower(ratio: stats.RatioEstimate | None, min_effect: float = stats.MIN_EFFECT) -> bool:
    """``ratio`` (member / other) shows the member slower by at least ``min_effect``."""
    return ratio is not None and ratio.ratio > 1.0 and stats.significant_effect(ratio, min_effect)


def _against_place(estimate: Estimate, member: str, place: list[str],
                   min_effect: float) -> tuple[bool, str, stats.RatioEstimate | None]:
    """Whether ``member`` is shown slower by ``min_effect`` than every member of
    ``place`` (compared from its slowest member up), and the comparison that
    decided: the first member it is not shown slower than, else the closest. A
    member shown faster than one of the place joins it: it never opens a place
    behind a member it beat."""
    shown = []
    for other in reversed(place):
        ratio = estimate(member, other)
        if not shown_slower(ratio, min_effect):
            return False, other, ratio
        shown.append(ratio)
    return True, place[-1], shown[0]


def compact_letters(differ: np.ndarray) -> list[str]:
    """Compact letter display of all pairwise comparisons (Piepho 2004, insert and absorb).

    Two members share a letter exactly when they were not shown to differ, so a
    member is shown apart from every member it shares no letter with, including
    members of its own place (a place can hold a chain of members, each within the
    minimum effect of the next, whose ends differ: :func:`block_places`). The first
    member's letters come first ("a"), and so on down the members' order.

    Parameters
    ----------
    differ : array_like of bool, shape (k, k)
        Symmetric: ``differ[i, j]`` when members i and j were shown to differ.

    Returns
    -------
    list of str, length k
        Each member's letters; every member's ``""`` when the display would need
        more than ``len(LETTERS)`` letters.
    """
    differ = np.asarray(differ, dtype=bool)
    k = len(differ)
    columns = [frozenset(range(k))] if k else []
    for i, j in np.argwhere(np.triu(differ | differ.T, 1)).tolist():
        split = []
        for column in columns:  # insert: a column holding both splits in two
            split += [column - {i}, column - {j}] if i in column and j in column else [column]
        unique = set(split)  # absorb: drop a column another one contains
        columns = [c for c in unique if not any(c < other for other in unique)]
    if len(columns) > len(LETTERS):
        return [""] * k
    columns.sort(key=sorted)
    return ["".join(LETTERS[n] for n, c in enumerate(columns) if i in c) for i in range(k)]


def shown_apart(ratio: Callable[[int, int], stats.RatioEstimate | None], k: int,
                min_effect: float = stats.MIN_EFFECT) -> np.ndarray:
    """Which pairs of k members a paired ranking shows apart: either one shown slower
    than the other (:func:`shown_slower`), ``ratio(i, j)`` estimating i / j.

    Returns
    -------
    ndarray of bool, shape (k, k)
        Symmetric, False on the diagonal.
    """
    out = np.zeros((k, k), dtype=bool)
    for i in range(k):
        for j in range(i + 1, k):
            out[i, j] = out[j, i] = (shown_slower(ratio(j, i), min_effect)
                                     or shown_slower(ratio(i, j), min_effect))
    return out


def memory_places(peak_bytes: Sequence[float | None]) -> list[int | None]:
    """Places by peak memory, smallest first; equal peaks share a place ("min" ranking).

    Missing peaks (memory not measured) get None.
    """
    values = [None if v is None or v != v else float(v) for v in peak_bytes]
    known = sorted(v for v in values if v is not None)
    first = {}
    for i, v in enumerate(known):
        first.setdefault(v, i + 1)
    return [None if v is None else first[v] for v in values]


def pareto_front(times: Sequence[float], memory: Sequence[float | None]) -> list[bool]:
    """Members of the Pareto front minimising both time and memory.

    A point is on the front unless another is no worse in both and better in
    one. Points without a memory figure are never members.

    Parameters
    ----------
    times, memory : sequence of float, length n

    Returns
    -------
    list of bool, length n
    """
    t = np.asarray(times, dtype=float)
    m = np.asarray([np.nan if v is None else v for v in memory], dtype=float)
    known = ~np.isnan(m)
    no_worse = (t[None, :] <= t[:, None]) & (m[None, :] <= m[:, None])
    better = (t[None, :] < t[:, None]) | (m[None, :] < m[:, None])
    dominated = (no_worse & better & known[None, :]).any(axis=1)
    return list(known & ~dominated)


def _kernel_of(registry: Registry | None, variant: str):
    return registry.kernels.get(variant.split("/")[0]) if registry else None


def is_blocked(group: pd.DataFrame) -> bool:
    """Whether a group's rows carry blocks and rounds (schema 3): paired statistics apply."""
    if "sample_block" not in group:
        return False
    return all(b is not None and len(b) and len(b) == len(s)
               for b, s in zip(group["sample_block"], group["samples_ns"]))


def group_times(group: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each member's samples as (blocks, rounds), on one grid for the whole group (NaN
    where a member has no sample), so equal indices pair two members."""
    blocks = sorted({int(b) for bs in group["sample_block"] for b in bs})
    rounds = 1 + max(int(r) for rs in group["sample_round"] for r in rs)
    row = {b: i for i, b in enumerate(blocks)}
    out = {}
    for variant, ts, bs, rs in zip(group["variant"], group["samples_ns"], group["sample_block"],
                                   group["sample_round"]):
        grid = np.full((len(blocks), rounds), np.nan)
        for t, b, r in zip(ts, bs, rs):
            grid[row[int(b)], int(r)] = t
        out[variant] = grid
    return out


def _interval(est: RatioEstimate | None, invert: bool = False) -> tuple:
    """(point, low, high) of ``est``, or of its reciprocal with ``invert``; NaNs for None."""
    if est is None:
        return (np.nan, np.nan, np.nan)
    if invert:
        return (1.0 / est.ratio, 1.0 / est.high, 1.0 / est.low)
    return (est.ratio, est.low, est.high)


def _references(variants: Sequence[str], registry: Registry | None) -> tuple[list, list]:
    """Each variant's baseline and torch peer names (None where absent from ``variants``)."""
    present = set(variants)
    bases, peers = [], []
    for variant in variants:
        kernel = _kernel_of(registry, variant)
        base = baseline_for(kernel, variant) if kernel and variant in kernel.variants else None
        peer = f"{variant.split('/')[0]}/{PEER_AXIS}={PEER}"
        bases.append(base if base in present else None)
        peers.append(peer if peer in present else None)
    return bases, peers


def _paired_group(group: pd.DataFrame, registry: Registry | None) -> dict[str, list]:
    """Places and every ratio with its interval over blocks (screened, robust), for a blocked
    group, from every block: those the machine slowed too (counted in ``blocks_slowed``;
    docs/statistics.md, "Blocks the machine slowed are kept")."""
    times = group_times(group)
    estimate = paired_estimates(_checked_blocks(times))
    order = block_places(times, estimate=estimate)
    placed = {p.member: p for p in order}
    variants = list(group["variant"])
    fastest = order[0].member
    bases, peers = _references(variants, registry)
    cols: dict[str, list] = {c: [] for names in RATIO_COLUMNS.values() for c in names}
    for v, base, peer in zip(variants, bases, peers):
        refs = {"fastest": fastest, "baseline": base, "peer": peer}
        for key, names in RATIO_COLUMNS.items():
            ref = refs[key]
            if ref is None:
                values = (np.nan,) * 3
            elif ref == v:
                values = (1.0, 1.0, 1.0)
            else:  # fastest: v / fastest (>= 1 slower); speed-ups: reference / v (> 1 faster)
                values = _interval(estimate(v, ref), invert=key != "fastest")
            for name, value in zip(names, values):
                cols[name].append(value)
    cols["place"] = [placed[v].place for v in variants]
    in_order = [p.member for p in order]
    letters = dict(zip(in_order, compact_letters(shown_apart(
        lambda i, j: estimate(in_order[i], in_order[j]), len(in_order)))))
    cols["letters"] = [letters[v] for v in variants]
    slowed = int(stats.disturbed_blocks(list(times.values())).sum())
    cols["blocks_slowed"] = [slowed] * len(variants)
    return cols


def _unpaired_group(group: pd.DataFrame, registry: Registry | None) -> dict[str, list]:
    """Old sweeps (one process per cell): Mann-Whitney places, ratios of medians only."""
    variants = list(group["variant"])
    medians = [float(m) for m in group["median_ns"]]
    by_name = dict(zip(variants, medians))
    bases, peers = _references(variants, registry)
    cols: dict[str, list] = {c: [] for names in RATIO_COLUMNS.values() for c in names}
    for m, base, peer in zip(medians, bases, peers):
        points = {"fastest": m / min(medians),
                  "baseline": by_name[base] / m if base else np.nan,
                  "peer": by_name[peer] / m if peer else np.nan}
        for key, (point, low, high) in RATIO_COLUMNS.items():
            cols[point].append(points[key])
            cols[low].append(np.nan)  # no interval: one process per cell (unpaired)
            cols[high].append(np.nan)
    samples = [np.asarray(s, dtype=float) for s in group["samples_ns"]]
    cols["place"] = places(samples)
    cols["letters"] = compact_letters([[i < j and stats.differs(a, b) for j, b in
                                        enumerate(samples)] for i, a in enumerate(samples)])
    cols["blocks_slowed"] = [0] * len(variants)
    return cols


#: Time ratios within this of 1 read "same" (the printed precision).
SAME = 0.005


def relative(ratio: float | None, low: float | None = None, high: float | None = None) -> str:
    """A time ratio (this / reference) in the one convention of every output.

    ``1.37x faster [1.31, 1.44]`` (reference / this, with its 95% interval) or
    ``1.05x slower [1.01, 1.09]`` (this / reference); ``same`` within 0.5%;
    "" when unknown. An interval is shown when known (paired sweeps).
    """
    if ratio is None or not math.isfinite(ratio) or ratio <= 0:
        return ""
    if abs(ratio - 1.0) < SAME and (low is None or high is None or low == high):
        return "same"
    known = low is not None and high is not None and math.isfinite(low) and math.isfinite(high)
    if ratio < 1.0:
        text, lo, hi = f"{1.0 / ratio:.2f}x faster", (1.0 / high if known else None), (
            1.0 / low if known else None)
    else:
        text, lo, hi = f"{ratio:.2f}x slower", low, high
    return f"{text} [{lo:.2f}, {hi:.2f}]" if known else text


def sort_ratio(value: float | None) -> float:
    """A ratio as a sort key: itself, or infinity when unknown (None or NaN), so that
    members without a ratio come last."""
    return value if value is not None and math.isfinite(value) else math.inf


def _shown_behind_fastest(cols: Mapping[str, list], j: int) -> bool:
    """Row j's ratio to the fastest has its interval above 1 and its point beyond
    the minimum effect (as :func:`shown_slower`; unpaired rows have no interval)."""
    low, ratio = cols["ratio_low"][j], cols["ratio_fastest"][j]
    return (low is not None and math.isfinite(low) and low > 1.0
            and ratio >= 1.0 + stats.MIN_EFFECT)


def group_answer(variants: Sequence[str], cols: Mapping[str, list]) -> str:
    """The one-line answer of a group: its fastest member and by how much it leads.

    Members tied for fastest are those of place 1 not shown slower than the fastest;
    a place can hold members further apart, through a chain of members each within
    5% of the one before (:func:`block_places`), and those are not called tied.
    """
    def ratio(k: int) -> float:
        return sort_ratio(cols["ratio_fastest"][k])

    first = [i for i, p in enumerate(cols["place"]) if p == 1]
    i = min(first, key=ratio)
    tied = [j for j in first if j == i or not _shown_behind_fastest(cols, j)]
    if len(tied) > 1:
        names = ", ".join(variants[j].split("/", 1)[-1] for j in sorted(tied, key=ratio))
        return f"tied for fastest (not shown to differ by {stats.MIN_EFFECT:.0%}): {names}"
    name = variants[i].split("/", 1)[-1]
    sp = (cols["speedup"][i], cols["speedup_low"][i], cols["speedup_high"][i])
    if np.isfinite(sp[0]) and sp[0] != 1.0:
        return f"fastest: {name}, {relative(1 / sp[0], 1 / sp[2], 1 / sp[1])} than the baseline"
    others = [j for j in range(len(variants)) if j != i]
    if not others:
        return f"fastest: {name} (alone)"
    j = min(others, key=lambda k: cols["ratio_fastest"][k])
    nxt = (cols["ratio_fastest"][j], cols["ratio_low"][j], cols["ratio_high"][j])
    return (f"fastest: {name} (the baseline), ahead of {variants[j].split('/', 1)[-1]}: "
            f"{relative(*nxt)}")


def _rank_group(group: pd.DataFrame, registry: Registry | None) -> dict[str, list]:
    """Derived columns of one (kernel, shape, dtype) group, its rows in median order."""
    cols = (_paired_group if is_blocked(group) else _unpaired_group)(group, registry)
    memory = list(group["peak_bytes"])
    cols["memory_place"] = memory_places(memory)
    cols["pareto"] = pareto_front(list(group["median_ns"]), memory)
    cols["paired"] = [is_blocked(group)] * len(group)
    cols["answer"] = [group_answer(list(group["variant"]), cols)
                      + slowed_note(cols["blocks_slowed"][0])] * len(group)
    return cols


def slowed_note(blocks: int) -> str:
    """What the group's answer adds when the machine slowed some of its blocks: they are
    kept (the combination over blocks is robust), but the reader should know the
    machine was busy."""
    if not blocks:
        return ""
    noun = "block" if blocks == 1 else "blocks"
    return f" (the machine slowed {blocks} {noun} by {stats.DISTURBED_SLOWDOWN:.0%} or more)"


def rank(cells: pd.DataFrame, registry: Registry | None = None) -> pd.DataFrame:
    """Ranked ``ok`` cells: one row per variant per (kernel, shape, dtype).

    Sweeps with blocks and rounds (schema 3) are placed by paired intervals over
    blocks (:func:`block_places`) and every ratio carries its 95% interval;
    older sweeps are placed unpaired (Mann-Whitney) with point ratios only
    (``paired`` False).

    Parameters
    ----------
    cells : pd.DataFrame
        Rows of the ``cells`` table (one sweep); non-``ok`` rows are ignored.
    registry : Registry, optional
        To find each variant's baseline.

    Returns
    -------
    pd.DataFrame
        :data:`RANK_COLUMNS`, sorted by kernel, shape, dtype, place and ratio to
        the fastest (median where that ties). ``ratio_*``
        is time / the group's fastest (>= 1); ``speedup*`` the baseline's (or the
        torch peer's) time / this variant's (> 1 faster); ``answer`` the group's
        one-line answer (:func:`group_answer`), repeated on its rows.
    """
    ok = cells[(cells["status"] == "ok") & cells["median_ns"].notna()]
    if not len(ok):
        return pd.DataFrame(columns=RANK_COLUMNS)
    ok = ok.reindex(columns=sorted(set(RANK_COLUMNS) | set(ok.columns)))
    ok = ok.sort_values([*GROUP_KEYS, "median_ns"], kind="stable").reset_index(drop=True)
    derived: dict[str, list] = {}
    for _, group in ok.groupby(list(GROUP_KEYS), sort=False):
        for key, values in _rank_group(group, registry).items():
            derived.setdefault(key, []).extend(values)
    # groupby(sort=False) visits groups in order of appearance: the sorted order
    for key, values in derived.items():
        ok[key] = pd.Series(values, dtype="int64" if key == "place" else object)
    ok["ratio_fastest"] = ok["ratio_fastest"].astype(float)
    ok = ok.sort_values([*GROUP_KEYS, "place", "ratio_fastest"], kind="stable")
    return ok.reset_index(drop=True).reindex(columns=RANK_COLUMNS)


def normalised_times(ranked: pd.DataFrame) -> pd.Series:
    """Each row's time over its group's fastest: the ranking's ``ratio_fastest`` (the
    paired estimate, for sweeps with blocks) where it has one, else its median over
    the fastest median at its kernel, shape and dtype."""
    fastest = ranked.groupby(list(GROUP_KEYS))["median_ns"].transform("min")
    unpaired = ranked["median_ns"] / fastest
    if "ratio_fastest" not in ranked.columns:
        return unpaired
    paired = pd.to_numeric(ranked["ratio_fastest"], errors="coerce")
    return paired.where(np.isfinite(paired), unpaired)


def overall(ranked: pd.DataFrame) -> pd.DataFrame:
    """Overall ranking per kernel and dtype by the geometric mean of normalised times.

    Only variants present (``ok``) at every shape of their kernel and dtype
    are placed (1 = best, ordinal); the others keep their geometric mean over
    the shapes they have, with ``place`` None, after the placed ones.

    Returns
    -------
    pd.DataFrame
        :data:`OVERALL_COLUMNS`: ``shapes`` counts the variant's shapes,
        ``total_shapes`` those of the kernel and dtype.
    """
    if not len(ranked):
        return pd.DataFrame(columns=OVERALL_COLUMNS)
    frame = ranked.assign(log_ratio=np.log(normalised_times(ranked).astype(float)))
    keys = list(OVERALL_KEYS)
    per = (frame.groupby([*keys, "variant"])
           .agg(log_mean=("log_ratio", "mean"), shapes=("shape", "nunique")).reset_index())
    total = frame.groupby(keys)["shape"].nunique().rename("total_shapes").reset_index()
    per = per.merge(total, on=keys)
    per["geomean"] = np.exp(per["log_mean"])
    per["complete"] = per["shapes"] == per["total_shapes"]
    per = per.sort_values([*keys, "complete", "geomean"], ascending=[True, True, False, True],
                          kind="stable").reset_index(drop=True)
    order = per.groupby(keys).cumcount() + 1
    per["place"] = pd.Series([int(p) if c else None for p, c in zip(order, per["complete"])],
                             dtype=object)
    return per.reindex(columns=OVERALL_COLUMNS)
