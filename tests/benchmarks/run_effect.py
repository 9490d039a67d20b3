"""Do a run's blocks share a bias, and which estimate moves least between runs? (docs/noise.md)

A benchmark script, not a test (pytest does not collect it). From the repository root,
on the sweeps the reproducibility benchmark kept::

    python tests/benchmarks/reproducibility.py jobs/quick.toml --results-root runs
    python tests/benchmarks/run_effect.py runs/quick/run*/results

Each RESULTS directory holds one sweep of the same spec. Per group and member, the
block estimate of its log-ratio to the group's first member by name (the median of
the block's paired log-ratios, as the ranking takes it) gives a runs x blocks table,
and a one-way analysis of variance with runs as units
(``repro_metrics.unit_share``) splits it into the blocks' own spread and a part a
run's blocks share (its sd and Snedecor's F; without a shared part F is about 1 and
p < 0.05 in 5% of members). A run's estimate moves between runs by about
``sqrt(sd_run^2 + sd_within^2 / blocks)``: a shared part more blocks cannot shrink.

It also prints how far each member's log-ratio moved across the runs (sd) as the
ranking estimates it (``rank.paired_estimates``: Hodges-Lehmann over the
screened block estimates) and as the ratio of the two members' fastest samples of the
whole sweep (``timeit``'s advice): the second has no interval across processes,
the comparison says what that costs or saves on this machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from repro_metrics import block_log_ratios, unit_share  # noqa: E402
from reproducibility import machine_line, only_sweep  # noqa: E402

from gradsweep import rank, store  # noqa: E402

#: The cells' columns read.
COLUMNS = ["kernel", "shape", "dtype", "variant", "status", "samples_ns", "sample_block",
           "sample_round"]
#: Group key columns.
KEY = ["kernel", "shape", "dtype"]


def sweep_cells(path: Path) -> pd.DataFrame:
    """The ok cells of the one sweep stored at ``path``."""
    dataset = store.resolve(str(path))
    cells = store.read(dataset, "cells", [only_sweep(store, dataset, path)], columns=COLUMNS)
    return cells[cells["status"] == "ok"]


def block_estimates(times: dict[str, np.ndarray], ref: str) -> dict[str, np.ndarray]:
    """Per member, each block's median paired log-ratio to ``ref``, shape (blocks,).

    Parameters
    ----------
    times : dict of str to ndarray, each shape (blocks, rounds)
        :func:`gradsweep.rank.group_times` of a group (NaN: no sample).
    """
    return {m: block_log_ratios(t, times[ref]) for m, t in times.items() if m != ref}


def ranking_log_ratios(times: dict[str, np.ndarray], ref: str) -> dict[str, float]:
    """Per member, the ranking's log-ratio to ``ref`` (paired, screened, robust)."""
    estimate = rank.paired_estimates(times)
    out = {}
    for m in times:
        est = None if m == ref else estimate(m, ref)
        if est is not None:
            out[m] = est.log_ratio
    return out


def fastest_log_ratios(times: dict[str, np.ndarray], ref: str) -> dict[str, float]:
    """Per member, log of its fastest sample over ``ref``'s fastest (whole sweep)."""
    return {m: float(np.log(np.nanmin(t) / np.nanmin(times[ref])))
            for m, t in times.items() if m != ref}


def member_rows(runs: list[pd.DataFrame]) -> list[dict]:
    """One row per member (not its group's reference) measured by every run."""
    rows = []
    by_run = [dict(tuple(r.groupby(KEY, sort=True))) for r in runs]
    for key, first in by_run[0].items():
        groups = [run.get(key) for run in by_run]
        if any(g is None or not rank.is_blocked(g) for g in groups):
            continue
        times = [rank.group_times(g) for g in groups]
        ref = sorted(first["variant"])[0]
        if any(ref not in t for t in times):
            continue
        blocks = [block_estimates(t, ref) for t in times]
        ranked = [ranking_log_ratios(t, ref) for t in times]
        fastest = [fastest_log_ratios(t, ref) for t in times]
        for m in sorted(blocks[0]):
            if not all(m in b and m in r for b, r in zip(blocks, ranked)):
                continue
            n = min(len(b[m]) for b in blocks)
            table = np.array([b[m][:n] for b in blocks])
            if not np.isfinite(table).all():
                continue
            rows.append({"group": " ".join(map(str, key)), "member": m,
                         **unit_share([table.tolist()]),
                         "sd_ranking": float(np.std([r[m] for r in ranked], ddof=1)),
                         "sd_fastest": float(np.std([f[m] for f in fastest], ddof=1))})
    return rows


def report(rows: list[dict], runs: int) -> str:
    """Per member and in summary (medians over members)."""
    lines = [f"{'group':38s} {'member':40s} {'F':>5s} {'p':>6s} {'within':>7s} {'run':>6s} "
             f"{'ranking':>8s} {'fastest':>8s}"]
    for r in rows:
        lines.append(f"{r['group'][:38]:38s} {r['member'].split('/', 1)[1][:40]:40s} "
                     f"{r['F']:5.2f} {r['p']:6.3f} {r['sd_within']:7.2%} {r['sd_unit']:6.2%} "
                     f"{r['sd_ranking']:8.2%} {r['sd_fastest']:8.2%}")
    if not rows:
        return "no member was measured in blocks by every run"

    def med(name: str) -> float:
        return float(np.median([r[name] for r in rows]))
    lines += ["", f"{len(rows)} members, {runs} runs: F median {med('F'):.2f}, mean "
              f"{np.mean([r['F'] for r in rows]):.2f}, p < 0.05 in "
              f"{np.mean([r['p'] < 0.05 for r in rows]):.0%} (5% without a shared part)",
              f"a block's sd within its run {med('sd_within'):.2%}; shared by a run's blocks "
              f"{med('sd_unit'):.2%} (medians over members)",
              f"log-ratio sd across runs: the ranking's {med('sd_ranking'):.2%}, fastest "
              f"samples' {med('sd_fastest'):.2%} (medians over members)"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", type=Path,
                        help="results directories, one sweep of the same spec each")
    args = parser.parse_args()
    if len(args.results) < 2:
        raise SystemExit("run_effect.py: expected at least two results directories")
    runs = [sweep_cells(p) for p in args.results]
    print("machine: " + machine_line())
    print(report(member_rows(runs), len(runs)))


if __name__ == "__main__":
    main()
