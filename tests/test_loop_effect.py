"""The loop-count benchmark's statistics (tests/benchmarks/loop_effect.py) on synthetic blocks."""

import numpy as np
import pytest

from benchmarks import loop_effect as le

MEMBER, OTHER = "k/peer=torch", "k/v=b"


def blocks(rng, pairs: int, effect: float, drift: float = 0.0,
           sd: float = 0.03) -> list[le.PairedBlock]:
    """Pairs of block records: the member's log-ratio is ``effect`` lower in the scaled
    block, both blocks of a pair share a drift that grows ``drift`` per pair."""
    out = []
    for k in range(pairs):
        for scaled in rng.permutation([False, True]):
            out.append(le.PairedBlock(k, bool(scaled), float(len(out)),
                                      {MEMBER: drift * k + (effect if scaled else 0.0)
                                       + rng.normal(0, sd),
                                       OTHER: 0.1 + rng.normal(0, sd)}))
    return out


def test_the_interval_covers_the_loop_effect_in_95_percent_of_simulated_runs():
    rng = np.random.default_rng(1)
    truth = -0.02
    covered = 0
    for _ in range(1000):
        _, low, high = le.loop_effect(blocks(rng, 20, truth, drift=0.002), MEMBER)
        covered += low <= truth <= high
    assert 0.93 <= covered / 1000 <= 0.97  # t interval on the paired differences


def test_pairing_takes_the_drift_out_of_the_effect():
    rng = np.random.default_rng(2)
    mean, low, high = le.loop_effect(blocks(rng, 40, -0.02, drift=0.01, sd=0.005), MEMBER)
    assert mean == pytest.approx(-0.02, abs=0.003)
    assert low < -0.02 < high
    assert high < 0  # a drift of 40% over the run hides nothing


def test_drift_lines_show_each_member_by_quarter_without_the_scaled_blocks():
    rng = np.random.default_rng(3)
    lines = le.drift_lines(blocks(rng, 40, -0.5, drift=0.0, sd=0.001), MEMBER)
    assert len(lines) == 2
    member = next(line for line in lines if "peer=torch" in line)
    quarters = [float(x) for x in member.split()[1:5]]
    assert quarters == pytest.approx([0.0] * 4, abs=0.01)  # the -0.5 blocks are left out
    other = next(line for line in lines if "v=b" in line)
    assert [float(x) for x in other.split()[1:5]] == pytest.approx([0.1] * 4, abs=0.01)


def test_few_blocks_give_fewer_parts_not_empty_ones():
    rng = np.random.default_rng(4)
    lines = le.drift_lines(blocks(rng, 2, -0.02), MEMBER)
    member = next(line for line in lines if "peer=torch" in line)
    assert "nan" not in member
