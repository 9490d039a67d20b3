"""Rank variants per kernel, shape and dtype (DESIGN.md, Statistics).

Sort by median; a variant joins the current place unless it differs from that
place's first member (Mann-Whitney U at alpha and the minimum effect, see
:func:`bench.stats.differs`), in which case it opens the next place.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench import stats
from impls.base import baseline_for
from impls.registry import Registry

GROUP_KEYS = ("kernel", "shape", "dtype")
RANK_COLUMNS = [*GROUP_KEYS, "place", "variant", "median_ns", "ci_low_ns", "ci_high_ns",
                "speedup", "peak_bytes", "gflops", "peak_fraction", "warnings", "cell_id"]


def places(samples: Sequence[np.ndarray], *, alpha: float = stats.ALPHA,
           min_effect: float = stats.MIN_EFFECT) -> list[int]:
    """Places (1-based) of sample sets already sorted by median.

    Each set joins the current place unless it differs from the place's first
    member, in which case it opens the next place.
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


def _speedups(group: pd.DataFrame, registry: Registry | None) -> list[float | None]:
    """Median of the variant's baseline (same other axes) ÷ the variant's median."""
    medians = dict(zip(group["variant"], group["median_ns"]))
    out: list[float | None] = []
    for variant, median in zip(group["variant"], group["median_ns"]):
        kernel = registry.kernels.get(variant.split("/")[0]) if registry else None
        base = baseline_for(kernel, variant) if kernel and variant in kernel.variants else None
        out.append(medians[base] / median if base in medians and median else None)
    return out


def rank(cells: pd.DataFrame, registry: Registry | None = None) -> pd.DataFrame:
    """Ranked ``ok`` cells: one row per variant per (kernel, shape, dtype).

    Parameters
    ----------
    cells : pd.DataFrame
        Rows of the ``cells`` table (one sweep); non-``ok`` rows are ignored.
    registry : Registry, optional
        To find each variant's baseline for ``speedup``.
    """
    ok = cells[cells["status"] == "ok"].copy()
    if not len(ok):
        return pd.DataFrame(columns=RANK_COLUMNS)
    frames = []
    for _, group in ok.groupby(list(GROUP_KEYS), sort=True):
        group = group.sort_values("median_ns", kind="stable").reset_index(drop=True)
        group["place"] = places([np.asarray(s, dtype=float) for s in group["samples_ns"]])
        group["speedup"] = _speedups(group, registry)
        frames.append(group)
    return pd.concat(frames, ignore_index=True).reindex(columns=RANK_COLUMNS)
