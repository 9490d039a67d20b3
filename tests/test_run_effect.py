"""The run-effect benchmark's analysis (tests/benchmarks/run_effect.py) on synthetic sweeps."""

import numpy as np
import pandas as pd

from benchmarks import run_effect as re_

RUNS, BLOCKS, ROUNDS = 6, 8, 5
TRUE_MS = {"k/v=a": 1.0, "k/v=b": 1.5, "k/v=c": 2.0}


def sweep(rng, run_bias: dict[str, float], noise_sd: float = 0.05) -> pd.DataFrame:
    """One run's ok cells of one group: log time = truth + the run's bias for the
    member + a block effect shared by the members + noise per sample."""
    block = rng.normal(0, 0.1, (BLOCKS, 1))
    rows = []
    for variant, ms in TRUE_MS.items():
        t = ms * 1e6 * np.exp(run_bias.get(variant, 0.0) + block
                              + rng.normal(0, noise_sd, (BLOCKS, ROUNDS)))
        b, r = np.meshgrid(np.arange(BLOCKS), np.arange(ROUNDS), indexing="ij")
        rows.append({"kernel": "k", "shape": "N=1", "dtype": "float64", "variant": variant,
                     "status": "ok", "samples_ns": t.ravel(), "sample_block": b.ravel(),
                     "sample_round": r.ravel()})
    return pd.DataFrame(rows)


def test_a_member_whose_runs_share_a_bias_is_found_and_the_others_are_not():
    rng = np.random.default_rng(0)
    runs = [sweep(rng, {"k/v=c": rng.normal(0, 0.05)}) for _ in range(RUNS)]
    rows = {r["member"]: r for r in re_.member_rows(runs)}
    assert set(rows) == {"k/v=b", "k/v=c"}  # v=a is the reference
    assert rows["k/v=c"]["p"] < 0.01 and rows["k/v=c"]["sd_unit"] > 0.02
    assert rows["k/v=b"]["p"] > 0.01
    # the block effect is shared by the members, so pairing cancels it
    assert rows["k/v=b"]["sd_within"] < 0.05


def test_across_runs_both_estimates_are_of_the_true_ratio():
    rng = np.random.default_rng(1)
    runs = [sweep(rng, {}) for _ in range(RUNS)]
    times = [re_.rank.group_times(r) for r in runs]
    ranking = [re_.ranking_log_ratios(t, "k/v=a")["k/v=b"] for t in times]
    fastest = [re_.fastest_log_ratios(t, "k/v=a")["k/v=b"] for t in times]
    assert abs(np.mean(ranking) - np.log(1.5)) < 0.02
    assert abs(np.mean(fastest) - np.log(1.5)) < 0.1  # the extremes of noisy samples


def test_a_group_some_run_lacks_is_left_out():
    rng = np.random.default_rng(2)
    runs = [sweep(rng, {}) for _ in range(3)]
    runs[1] = runs[1].assign(shape="N=2")
    assert re_.member_rows(runs) == []
    assert "no member" in re_.report([], 3)
