"""Ranking statistics: shared places, the effect threshold, memory, Pareto, overall."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from gradsweep import rank, stats
from gradsweep.impls.registry import load

RNG = np.random.default_rng(0)
BASE = "rnn/buffers=list,wgrad=step,clip=none"
FAST = "rnn/buffers=prealloc,wgrad=batched,clip=none"
PEER = "rnn/peer=torch"


def samples(median: float, n: int = 15, spread: float = 0.005, seed: int = 0) -> np.ndarray:
    return median * np.random.default_rng(seed).lognormal(0.0, spread, n)


def cell(variant: str, median: float, shape: str = "N=1", dtype: str = "float64",
         peak: float | None = 100, status: str = "ok", seed: int = 0, **extra) -> dict:
    s = samples(median, seed=seed)
    return {"kernel": variant.split("/")[0], "variant": variant, "shape": shape,
            "dtype": dtype, "status": status, "samples_ns": s, "median_ns": float(np.median(s)),
            "ci_low_ns": None, "ci_high_ns": None, "peak_bytes": peak, "flops": 10,
            "gflops": 1.0, "peak_fraction": 0.1, "warnings": [], "cell_id": variant + shape,
            **extra}


def test_identical_samples_share_a_place():
    s = samples(1000.0)
    assert rank.places([s, s.copy(), s.copy()]) == [1, 1, 1]


def test_clearly_separated_samples_do_not():
    assert rank.places([samples(1000, seed=1), samples(2000, seed=2),
                        samples(4000, seed=3)]) == [1, 2, 3]


def test_a_significant_difference_under_the_minimum_effect_is_a_tie():
    a, b = samples(1000, n=50, spread=0.001, seed=1), samples(1030, n=50, spread=0.001, seed=2)
    assert stats.mann_whitney(a, b) < stats.ALPHA  # significant, but only 3%
    assert rank.places([a, b]) == [1, 1]
    c = samples(1070, n=50, spread=0.001, seed=3)  # 7%: differs
    assert rank.places([a, c]) == [1, 2]


def test_a_variant_joins_the_place_unless_it_differs_from_its_first_member():
    a, b, c = (samples(m, n=30, spread=0.001, seed=i) for i, m in
               enumerate((1000, 1030, 1060)))
    # b ties a (3%); c is 3% from b but 6% from a, the place's first member: next place
    assert rank.places([a, b, c]) == [1, 1, 2]


def test_places_use_the_one_mann_whitney_decision():
    """rank has no U test of its own: two sets take two places exactly when scipy's U
    test is significant and the medians are at least the minimum effect apart."""
    rng = np.random.default_rng(1)
    for i in range(120):
        a = rng.lognormal(0, 0.05, rng.integers(3, 25))
        b = rng.lognormal(rng.normal(0, 0.1), 0.05, rng.integers(3, 25))
        if i % 4 == 0:
            a, b = np.round(a, 1), np.round(b, 1)
        p = sps.mannwhitneyu(a, b, alternative="two-sided").pvalue
        effect = abs(np.median(a) / np.median(b) - 1.0) >= stats.MIN_EFFECT
        assert rank.places([a, b]) == [1, 2 if effect and p < stats.ALPHA else 1]
        assert stats.differs(a, b) == (effect and p < stats.ALPHA)


def test_memory_places_share_equal_peaks_and_skip_missing():
    assert rank.memory_places([300, 100, 300, None, 200, float("nan")]) == [
        3, 1, 3, None, 2, None]


def test_pareto_front_known_answer():
    times = [1.0, 2.0, 3.0, 2.5, 1.0, 4.0]
    memory = [10.0, 5.0, 1.0, 6.0, 12.0, None]
    #        front  front  front  dominated by (2, 5)  dominated by (1, 10)  no memory
    assert rank.pareto_front(times, memory) == [True, True, True, False, False, False]


def test_pareto_front_keeps_exact_duplicates():
    assert rank.pareto_front([1.0, 1.0], [2.0, 2.0]) == [True, True]


def test_rank_speedups_against_the_baseline_and_the_torch_peer():
    cells = pd.DataFrame([cell(BASE, 2000, seed=1), cell(FAST, 1000, seed=2),
                          cell(PEER, 4000, seed=3), cell(FAST, 1, status="error", seed=4,
                                                          shape="N=2")])
    ranked = rank.rank(cells, load())
    got = {r.variant: r for r in ranked.itertuples()}
    assert list(ranked["variant"]) == [FAST, BASE, PEER] and list(ranked["place"]) == [1, 2, 3]
    assert got[FAST].speedup == pytest.approx(2.0, rel=0.02)
    assert got[FAST].speedup_peer == pytest.approx(4.0, rel=0.02)
    assert got[BASE].speedup == pytest.approx(1.0)
    assert got[PEER].speedup_peer == pytest.approx(1.0)


def test_overall_geometric_mean_of_normalised_times():
    rows = []
    # shape 1: A 100, B 200; shape 2: A 400, B 100 -> A: sqrt(1 * 4) = 2, B: sqrt(2 * 1)
    for shape, a, b in (("N=1", 100, 200), ("N=2", 400, 100)):
        rows += [cell("rnn/a=x", a, shape=shape), cell("rnn/b=y", b, shape=shape)]
    rows.append(cell("rnn/c=z", 50, shape="N=1"))  # fastest at N=1 but missing at N=2
    ranked = rank.rank(pd.DataFrame(rows))
    table = rank.overall(ranked).set_index("variant")
    assert table.loc["rnn/b=y", "geomean"] == pytest.approx(np.sqrt(4 * 1), rel=0.02)
    assert table.loc["rnn/a=x", "geomean"] == pytest.approx(np.sqrt(2 * 4), rel=0.02)
    assert table.loc["rnn/b=y", "place"] == 1 and table.loc["rnn/a=x", "place"] == 2
    assert table.loc["rnn/c=z", "place"] is None
    assert (table.loc["rnn/c=z", "shapes"], table.loc["rnn/c=z", "total_shapes"]) == (1, 2)
    assert list(table.index)[-1] == "rnn/c=z"  # unplaced after the placed ones


def test_rank_of_nothing_is_empty():
    empty = pd.DataFrame([cell(BASE, 1, status="timeout")])
    assert rank.rank(empty).empty and rank.overall(rank.rank(empty)).empty


def test_a_block_the_machine_slowed_is_counted_and_kept():
    """6 blocks x 3 rounds, FAST 1.2x faster than BASE; in block 2 the machine ran both
    1.5x slower and BASE a further 1.3x (a neighbour hurts one member most). The ranking
    keeps block 2, says the machine slowed it, and its robust combination stays near the
    quiet blocks' ratio."""
    rng = np.random.default_rng(4)
    blocks, rounds = 6, 3
    machine = np.exp(rng.normal(0, 0.02, (blocks, 1))) * np.where(
        np.arange(blocks)[:, None] == 2, 1.5, 1.0)
    times = {FAST: 1e6 * machine * np.exp(rng.normal(0, 0.01, (blocks, rounds))),
             BASE: 1.2e6 * machine * np.exp(rng.normal(0, 0.01, (blocks, rounds)))}
    times[BASE][2] *= 1.3
    rows = [cell(v, 1.0, sample_block=[b for b in range(blocks) for _ in range(rounds)],
                 sample_round=list(range(rounds)) * blocks) | {"samples_ns": list(t.ravel()),
                                                               "median_ns": float(np.median(t))}
            for v, t in times.items()]
    ranked = rank.rank(pd.DataFrame(rows), load()).set_index("variant")
    assert list(ranked["blocks_slowed"]) == [1, 1]
    assert ranked.loc[FAST, "answer"].endswith("(the machine slowed 1 block by 15% or more)")
    assert ranked.loc[BASE, "ratio_fastest"] == pytest.approx(1.2, rel=0.03)
    assert ranked.loc[BASE, "ratio_low"] <= 1.2 <= ranked.loc[BASE, "ratio_high"]
    every = stats.paired_estimate(times[BASE], times[FAST])  # random effects, unscreened
    assert every.ratio > 1.22  # a plain weighted mean is pulled up by the slowed block


def answer_cols(places, ratios, lows, speedups=None):
    """Columns group_answer reads, for members a, b, c, ... (a the baseline)."""
    n = len(places)
    sp = speedups or [float("nan")] * n
    return {"place": places, "ratio_fastest": ratios, "ratio_low": lows,
            "ratio_high": [r * 1.02 for r in ratios], "speedup": sp,
            "speedup_low": [x * 0.98 for x in sp], "speedup_high": [x * 1.02 for x in sp]}


def test_the_answer_ties_only_members_not_shown_behind_the_fastest():
    """A chain puts c (1.09x, shown slower than a) in a's place through b (1.04x);
    the answer ties a and b only, and names the fastest alone when nothing ties."""
    names = ["rnn/a", "rnn/b", "rnn/c"]
    chain = answer_cols([1, 1, 1], [1.0, 1.04, 1.09], [1.0, 1.02, 1.07])
    assert rank.group_answer(names, chain) == (
        "tied for fastest (not shown to differ by 5%): a, b")
    alone = answer_cols([1, 1, 2], [1.0, 1.08, 1.3], [1.0, 1.06, 1.25],
                        speedups=[1.0, 1 / 1.08, 1 / 1.3])
    assert rank.group_answer(names, alone).startswith("fastest: a (the baseline), ahead of b")
    unpaired = answer_cols([1, 1, 2], [1.0, 1.2, 1.5], [float("nan")] * 3)
    assert rank.group_answer(names, unpaired).startswith("tied for fastest")


def test_overall_uses_the_paired_ratio_to_the_fastest_where_there_is_one():
    """At N=1 the medians say b is 1.1x a, the paired ratio 0.98x (b fastest); the
    overall geomean follows the paired ratios, and the medians where there are none."""
    ranked = pd.DataFrame({
        "kernel": ["rnn"] * 4, "dtype": ["float64"] * 4, "shape": ["N=1", "N=1", "N=2", "N=2"],
        "variant": ["rnn/a", "rnn/b", "rnn/a", "rnn/b"],
        "median_ns": [100.0, 110.0, 100.0, 120.0],
        "ratio_fastest": [1 / 0.98, 1.0, float("nan"), float("nan")]})
    got = rank.normalised_times(ranked)
    assert list(got) == pytest.approx([1 / 0.98, 1.0, 1.0, 1.2])
    table = rank.overall(ranked).set_index("variant")
    assert table.loc["rnn/a", "geomean"] == pytest.approx(np.sqrt(1 / 0.98))
    assert table.loc["rnn/b", "geomean"] == pytest.approx(np.sqrt(1.2))


def test_a_group_estimates_each_ordered_pair_once_and_ranks_as_without_sharing(monkeypatch):
    """Places, their order and the ratio columns ask for the same pairs; the group
    shares them (rank.paired_estimates) and ranks exactly as fresh estimates do."""
    rng = np.random.default_rng(7)
    blocks, rounds = 6, 4
    speed = {BASE: 1.0, FAST: 0.8, PEER: 1.5, "rnn/buffers=list,wgrad=batched,clip=none": 0.82}
    rows = []
    for v, s in speed.items():
        t = 1e6 * s * np.exp(rng.normal(0, 0.02, blocks * rounds))
        rows.append(cell(v, 1.0, sample_block=[b for b in range(blocks) for _ in range(rounds)],
                         sample_round=list(range(rounds)) * blocks)
                    | {"samples_ns": list(t), "median_ns": float(np.median(t))})
    cells = pd.DataFrame(rows)
    real = stats.paired_estimate
    with monkeypatch.context() as m:
        m.setattr(rank, "paired_estimates", lambda arrays, **kw: lambda a, b: real(
            arrays[a], arrays[b], screen=True, robust=True, **kw))
        unshared = rank.rank(cells, load())
    asked = []

    def counted(a, b, **kw):
        asked.append((a.tobytes(), b.tobytes()))
        return real(a, b, **kw)

    monkeypatch.setattr(stats, "paired_estimate", counted)
    shared = rank.rank(cells, load())
    assert len(asked) == len(set(asked)) <= len(speed) * (len(speed) - 1)
    pd.testing.assert_frame_equal(shared, unshared)


def test_compact_letters_known_displays():
    """Nothing apart: one letter; everything apart: one each; a chain whose ends differ
    (0 apart from 3 only): the middle members share with both ends (Piepho 2004)."""
    none = np.zeros((3, 3), dtype=bool)
    assert rank.compact_letters(none) == ["a", "a", "a"]
    assert rank.compact_letters(~np.eye(3, dtype=bool)) == ["a", "b", "c"]
    chain = np.zeros((4, 4), dtype=bool)
    chain[0, 3] = chain[3, 0] = True
    assert rank.compact_letters(chain) == ["a", "ab", "ab", "b"]
    steps = np.zeros((4, 4), dtype=bool)
    steps[0, 2] = steps[0, 3] = steps[1, 3] = True  # one triangle suffices: symmetrised
    assert rank.compact_letters(steps) == ["a", "ab", "bc", "c"]
    assert rank.compact_letters(np.zeros((0, 0), dtype=bool)) == []


def test_members_share_a_letter_exactly_when_not_shown_apart():
    """Over 600 random relations of 1-9 members: two members share a letter if and only
    if they were not shown apart, every member has a letter, no letter's members are a
    subset of another's (absorbed), and the first member's letters start at "a"."""
    rng = np.random.default_rng(11)
    for _ in range(600):
        k = int(rng.integers(1, 10))
        upper = np.triu(rng.random((k, k)) < rng.random(), 1)
        differ = upper | upper.T
        letters = rank.compact_letters(differ)
        assert all(letters) and letters[0].startswith("a")
        for i, j in itertools.combinations(range(k), 2):
            assert bool(set(letters[i]) & set(letters[j])) is not bool(differ[i, j])
        members = {c: {i for i in range(k) if c in letters[i]} for c in set("".join(letters))}
        assert not any(a < b for a in members.values() for b in members.values())


def test_a_chain_in_one_place_gets_letters_that_set_its_ends_apart():
    """Five members 0%, 3%, 6%, 9%, 12% apart, measured tightly in 8 blocks: each is
    within 5% of the next, so the chain holds one place, but the letters set apart
    every pair shown 5% or more apart, and only those."""
    rng = np.random.default_rng(5)
    blocks, rounds = 8, 5
    variants = [f"rnn/v{i}" for i in range(5)]
    rows = []
    for i, v in enumerate(variants):
        t = 1e6 * 1.03 ** i * np.exp(rng.normal(0, 0.003, blocks * rounds))
        rows.append(cell(v, 1.0, sample_block=[b for b in range(blocks) for _ in range(rounds)],
                         sample_round=list(range(rounds)) * blocks)
                    | {"samples_ns": list(t), "median_ns": float(np.median(t))})
    ranked = rank.rank(pd.DataFrame(rows)).set_index("variant")
    assert set(ranked["place"]) == {1}
    letters = ranked.loc[variants, "letters"].tolist()
    assert letters[0].startswith("a") and not set(letters[0]) & set(letters[-1])
    for i, j in itertools.combinations(range(5), 2):
        apart = not set(letters[i]) & set(letters[j])
        assert apart is (j - i >= 2), (i, j, letters)  # 1.03x next door, 1.06x and up beyond


def test_old_unpaired_sweeps_get_letters_from_the_mann_whitney_decision():
    cells = pd.DataFrame([cell(BASE, 1.0), cell(FAST, 1.001, seed=1), cell(PEER, 2.0, seed=2)])
    ranked = rank.rank(cells, load()).set_index("variant")
    assert ranked.loc[[BASE, FAST, PEER], "letters"].tolist() == ["a", "a", "b"]
