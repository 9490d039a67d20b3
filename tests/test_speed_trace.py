"""The speed-trace benchmark's analysis (tests/benchmarks/speed_trace.py) on synthetic calls."""

import numpy as np
import pytest

from benchmarks import speed_trace as st

ROUNDS, MEMBERS = 2000, 3
MS = np.array([4.0, 2.0, 3.0]) * 1e6


def calls(rng, common: np.ndarray, own_sd: float) -> np.ndarray:
    """One call per member per round, in order; log time = member + common speed + own noise."""
    n = ROUNDS * MEMBERS
    member = np.tile(np.arange(MEMBERS), ROUNDS)
    rounds = np.repeat(np.arange(ROUNDS), MEMBERS)
    cpu = MS[member] * np.exp(common + rng.normal(0, own_sd, n))
    return np.column_stack([rounds, member, np.arange(n) * 1e6, cpu])


def ar1(rng, n: int, phi: float, sd: float) -> np.ndarray:
    x = np.empty(n)
    x[0] = rng.normal(0, sd)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + rng.normal(0, sd * (1 - phi**2) ** 0.5)
    return x


def test_speeds_are_log_times_less_each_members_median():
    rng = np.random.default_rng(0)
    c = calls(rng, np.zeros(ROUNDS * MEMBERS), 0.1)
    z = st.speeds(c[:, 1], c[:, 3])
    for i in range(MEMBERS):
        assert np.median(z[c[:, 1] == i]) == pytest.approx(0, abs=1e-12)
    assert np.std(z) == pytest.approx(0.1, rel=0.05)


def test_a_common_slow_speed_cancels_in_the_paired_ratio_and_own_noise_does_not():
    rng = np.random.default_rng(1)
    n = ROUNDS * MEMBERS
    common = calls(rng, ar1(rng, n, 0.99, 0.2), 0.01)  # the machine's speed, shared
    own = calls(rng, np.zeros(n), 0.1)                   # each call its own noise
    one_c, block_c = st.paired_spread(st.round_means(common[:, 0], common[:, 1],
                                                     st.speeds(common[:, 1], common[:, 3])), 0, 1)
    one_o, block_o = st.paired_spread(st.round_means(own[:, 0], own[:, 1],
                                                     st.speeds(own[:, 1], own[:, 3])), 0, 1)
    assert one_c < 0.05  # 0.2 of shared speed, almost gone from the pair
    assert one_o == pytest.approx(0.1 * 2**0.5, rel=0.08)
    # a block's median of 5 independent rounds: ~1.2 sd / sqrt(5) (median efficiency)
    assert block_o == pytest.approx(one_o * 1.2 / 5**0.5, rel=0.15)


def test_the_speeds_autocorrelation_follows_a_known_ar1():
    rng = np.random.default_rng(2)
    c = calls(rng, ar1(rng, ROUNDS * MEMBERS, 0.8, 0.2), 0.0)
    z = st.speeds(c[:, 1], c[:, 3])
    assert st.autocorrelation(z, 1) == pytest.approx(0.8, abs=0.03)
    assert st.autocorrelation(z, 5) == pytest.approx(0.8**5, abs=0.05)


def test_the_report_names_the_fastest_numpy_member_as_reference():
    rng = np.random.default_rng(3)
    c = calls(rng, np.zeros(ROUNDS * MEMBERS), 0.05)
    text = st.report(["a=slow", "peer=torch", "a=fast"], c, 5)
    assert "paired log-ratio to a=fast" in text
    assert "peer=torch" in text and "calls over" in text
