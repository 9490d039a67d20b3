"""The gate's sequential rule on simulated process pairs: false alarms, power, budget."""

import numpy as np
import pytest

from gradsweep import stats
from gradsweep.gate.sequential import Clock, Rule, run_sequential, verdicts
from gradsweep.stats import (
    IMPROVEMENT,
    INCONCLUSIVE,
    REGRESSION,
    UNCHANGED,
    UNDECIDED,
    RatioEstimate,
)

ROUNDS = 10


class SimulatedGate:
    """Cells measured in simulated process pairs, on a simulated clock (1 s per cell).

    Each pair has a bias of its own for each cell (sd ``tau`` on the log scale,
    a part ``shared`` of it common to every cell of the pair, as one process
    pair's speed is) and heavy-tailed per-sample noise (Student t, 3 df, scale
    ``noise``); ``effects`` are the true log-ratios.
    """

    def __init__(self, rng, effects, tau=0.02, shared=0.5, noise=0.05):
        self.rng, self.effects = rng, np.asarray(effects, float)
        self.tau, self.shared, self.noise = tau, shared, noise
        self.base = [[] for _ in effects]
        self.cand = [[] for _ in effects]
        self.now = 0.0

    def measure(self, pair, todo):
        common = self.rng.normal(0, self.tau * np.sqrt(self.shared))
        for i in todo:
            bias = common + self.rng.normal(0, self.tau * np.sqrt(1 - self.shared))
            drift = self.rng.normal(0, 0.3, ROUNDS)  # what the pairing cancels
            b = np.exp(drift + self.noise * self.rng.standard_t(3, ROUNDS))
            c = np.exp(drift + self.effects[i] + bias + self.noise * self.rng.standard_t(3, ROUNDS))
            self.base[i].append(b)
            self.cand[i].append(c)
            self.now += 1.0

    def estimate(self, i) -> RatioEstimate | None:
        return stats.paired_estimate(np.array(self.cand[i]), np.array(self.base[i]))

    def run(self, rule):
        out = run_sequential(len(self.effects), self.measure, self.estimate, rule,
                             now=lambda: self.now)
        return out, [self.estimate(i) for i in range(len(self.effects))]


def test_a_known_per_pair_bias_keeps_false_alarms_within_alpha_over_1000_aa_cells():
    rng = np.random.default_rng(20261130)
    rule = Rule(threshold=0.05, alpha=0.01, min_pairs=3, max_pairs=20, budget_s=200.0)
    flagged = covered = decided = 0
    pairs = []
    for _ in range(100):
        gate = SimulatedGate(rng, [0.0] * 10, tau=0.02, noise=0.03)
        found, estimates = gate.run(rule)
        flagged += sum(v in (REGRESSION, IMPROVEMENT) for v in found)
        decided += sum(v == UNCHANGED for v in found)
        covered += sum(e.low <= 1.0 <= e.high for e in estimates)
        pairs += [len(b) for b in gate.base]
    assert flagged <= 10  # at most alpha = 1% of 1000 cells, either way
    assert covered >= 930  # the 95% interval at the stop covers the truth
    assert decided >= 900 and max(pairs) <= 20


def test_undecided_cells_get_more_pairs_and_real_changes_are_flagged():
    rng = np.random.default_rng(7)
    effects = np.log([1.10, 1.0, 0.90, 1.0, 1.20])
    gate = SimulatedGate(rng, effects, tau=0.01, noise=0.03)
    found, _ = gate.run(Rule(min_pairs=3, max_pairs=20, budget_s=500.0))
    assert found == [REGRESSION, UNCHANGED, IMPROVEMENT, UNCHANGED, REGRESSION]
    assert all(len(b) >= 3 for b in gate.base)


def test_the_budget_stops_adding_pairs_and_undecided_cells_end_inconclusive():
    rng = np.random.default_rng(3)
    gate = SimulatedGate(rng, [np.log(1.05)] * 4, tau=0.04, noise=0.1)
    found, _ = gate.run(Rule(min_pairs=3, max_pairs=20, budget_s=14.0))
    assert gate.now <= 14.0 + 1e-9  # 3 pairs of 4 cells = 12 s; no pair of 4 more fits
    assert INCONCLUSIVE in found and UNDECIDED not in found


def test_failed_cells_are_measured_no_more_and_end_inconclusive():
    rng = np.random.default_rng(4)
    gate = SimulatedGate(rng, [0.0, 0.0], tau=0.01)
    found = run_sequential(2, gate.measure, gate.estimate, Rule(budget_s=100.0),
                           failed=lambda i: i == 1, now=lambda: gate.now)
    assert len(gate.base[1]) == 1 and found[1] == INCONCLUSIVE


def test_verdicts_without_an_estimate_are_undecided_then_inconclusive():
    est = stats.combine_blocks([0.0, 0.001, -0.001], [1e-6] * 3)
    rule = Rule(threshold=0.05)
    assert verdicts([est, None], rule, final=False) == [UNCHANGED, UNDECIDED]
    assert verdicts([est, None], rule, final=True) == [UNCHANGED, INCONCLUSIVE]


def test_verdicts_adjust_p_values_across_cells():
    # each cell alone is significant at alpha (p ~ 0.006); across 10 cells BH is not
    est = stats.combine_blocks([0.08, 0.07, 0.09, 0.08, 0.075], [1e-3] * 5)
    assert 0.001 < est.p_value < 0.01
    assert verdicts([est], Rule(), final=True) == [REGRESSION]
    flat = stats.combine_blocks([0.05, -0.05, 0.0, 0.02, -0.02], [1e-4] * 5)
    assert verdicts([est] + [flat] * 9, Rule(), final=True)[0] == INCONCLUSIVE


def test_clock_predicts_from_the_mean_cost_per_cell():
    t = [100.0]
    clock = Clock(started=100.0, now=lambda: t[0])
    clock.record(10.0, 5)
    t[0] = 110.0
    assert clock.fits(5, 20.0) and not clock.fits(6, 20.0)


def test_rule_rejects_bad_settings():
    with pytest.raises(ValueError, match="min_pairs"):
        Rule(min_pairs=1)
    with pytest.raises(ValueError, match="budget_s"):
        Rule(budget_s=0)
