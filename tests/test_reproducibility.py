"""The reproducibility benchmark's per-run noise and floor (tests/benchmarks/reproducibility.py)
on synthetic sweeps."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# the script imports its sibling modules by name, as when it runs from tests/benchmarks
sys.path.insert(0, str(Path(__file__).resolve().parent / "benchmarks"))

from benchmarks import reproducibility as rp  # noqa: E402
from gradsweep import rank  # noqa: E402

BLOCKS, ROUNDS = 8, 5
TRUE_MS = {"k/v=a": 1.0, "k/v=b": 1.5, "k/v=c": 2.0}


def ok_cells(rng, noise_sd: float) -> pd.DataFrame:
    """One run's ok cells of one group: log time = truth + a block effect the members
    share + noise per sample with sd ``noise_sd``."""
    block = rng.normal(0, 0.1, (BLOCKS, 1))
    b, r = np.meshgrid(np.arange(BLOCKS), np.arange(ROUNDS), indexing="ij")
    rows = []
    for variant, ms in TRUE_MS.items():
        t = ms * 1e6 * np.exp(block + rng.normal(0, noise_sd, (BLOCKS, ROUNDS)))
        rows.append({"kernel": "k", "shape": "N=1", "dtype": "float64", "variant": variant,
                     "status": "ok", "samples_ns": t.ravel(), "sample_block": b.ravel(),
                     "sample_round": r.ravel(), "median_ns": float(np.median(t))})
    return pd.DataFrame(rows)


def sweep_run(index: int, errors) -> rp.SweepRun:
    return rp.SweepRun(index, f"s{index}", 0, 1.0, 3, 3, 40.0, "ratio_fastest", (), (),
                       block_errors=tuple(errors))


def test_block_noise_gives_every_member_an_error_and_the_fastest_zero():
    cells = ok_cells(np.random.default_rng(0), 0.05)
    spreads, errors = rp.block_noise(cells, rank)
    assert len(spreads) == 2
    by_member = {m: se for _, m, se in errors}
    assert by_member["k/v=a"] == 0.0
    # block medians of 5 rounds of paired noise sd 0.05 * sqrt 2: se about 0.085 / sqrt 8
    for member in ("k/v=b", "k/v=c"):
        assert 0.01 < by_member[member] < 0.06


def test_floor_pools_each_members_errors_over_the_runs():
    group = ("k", "N=1", "float64")
    runs = tuple(sweep_run(i, [(group, "k/v=a", 0.0), (group, "k/v=b", se)])
                 for i, se in enumerate((0.01, 0.03, 0.01, 0.03, 0.01)))
    result = rp.SpecResult("quick.toml", runs, rp.reversals([()] * 5), rp.ratio_spreads([()]),
                           (0.0,) * 3, (0.0,) * 3)
    floor = result.floor
    assert floor.members == 2 and floor.runs == 5
    # the fastest always at 1 and b with its errors pooled as a root mean square
    pooled = np.sqrt(np.mean(np.square([0.01, 0.03, 0.01, 0.03, 0.01])))
    alone = rp.spread_floor([0.0, pooled], 5)
    assert floor.median == pytest.approx(alone.median) and floor.max == pytest.approx(alone.max)


def test_no_blocks_no_floor():
    runs = tuple(sweep_run(i, ()) for i in range(3))
    result = rp.SpecResult("old.toml", runs, rp.reversals([()] * 3), rp.ratio_spreads([()]),
                           (0.0,) * 3, (0.0,) * 3)
    assert result.floor is None


def test_loops_varied_counts_members_whose_count_differs_in_every_run_they_have():
    group = ("k", "N=1", "float64")
    members = ("k/v=a", "k/v=b", "k/v=c")
    loops = [(8, 4, 2), (8, 8, 2), (8, 4, None)]  # b flips; c has no count in run 3

    def run(i, counts):
        standings = tuple(rp.Standing(group, m, 1, 1.0) for m in members)
        details = tuple(rp.Detail(None, None, 1.0, n) for n in counts)
        return rp.SweepRun(i, f"s{i}", 0, 1.0, 3, 3, 40.0, "ratio_fastest", standings, details)

    runs = tuple(run(i, counts) for i, counts in enumerate(loops))
    result = rp.SpecResult("quick.toml", runs, rp.reversals([()] * 3), rp.ratio_spreads([()]),
                           (0.0,) * 3, (0.0,) * 3)
    assert result.loops_varied == (1, 2)


def test_newest_sweep_is_the_last_started_and_an_empty_store_exits_naming_it():
    class Store:
        def __init__(self, ids):
            self.frame = pd.DataFrame({"sweep_id": ids})

        def sweeps(self, dataset):
            return self.frame  # sorted by started_at, as gradsweep.store.sweeps returns it

    assert rp.newest_sweep(Store(["s1", "s2", "s3"]), None, "r") == "s3"
    with pytest.raises(SystemExit, match="r: expected a sweep, found none"):
        rp.newest_sweep(Store([]), None, "r")


def test_kinds_split_peers_from_the_other_members_and_leave_the_fastest_out():
    """Peers shifted together by +-5% from run to run, numpy members steady: the peers'
    shared shift is large, the others' zero; each kind's capture counts its own members."""
    group = ("k", "N=1", "float64")
    shifts = (1.0, 1.05, 0.95)

    def run(i, shift):
        rows = [("k/v=a", 1.0, None, None), ("k/v=b", 1.5, 1.45, 1.55),
                ("k/peer=torch", 2.0 * shift, 1.9, 2.1), ("j/peer=torch", 3.0 * shift, 2.9, 3.1)]
        standings = tuple(rp.Standing(group, m, 1, r) for m, r, _, _ in rows)
        details = tuple(rp.Detail(lo, hi, 1.0) for _, _, lo, hi in rows)
        return rp.SweepRun(i, f"s{i}", 0, 1.0, 4, 4, 40.0, "ratio_fastest", standings, details)

    runs = tuple(run(i, x) for i, x in enumerate(shifts))
    result = rp.SpecResult("quick.toml", runs, rp.reversals([()] * 3), rp.ratio_spreads([()]),
                           (0.0,) * 3, (0.0,) * 3)
    peers, others = result.kinds()
    assert (peers.name, peers.members, others.name, others.members) == (
        "peers", 2, "other members", 1)
    assert peers.shift_sd == pytest.approx(np.std(np.log(shifts), ddof=1))
    assert others.shift_sd == 0.0 and others.capture.rate == 1.0
    # each peer's interval (+-5%) holds the other runs' ratios only when the shifts agree
    assert peers.capture.pairs == 12 and peers.capture.held < 12
