"""The fork-server benchmark's analysis of variance (tests/benchmarks/fork_servers.py)."""

import numpy as np

from benchmarks import fork_servers as fs

SETS, SERVERS, BLOCKS = 8, 4, 6
CASES = 1000


def simulated(rng, server_sd: float, within_sd: float = 0.04, drift_sd: float = 0.05):
    """Block log-ratios: a drift per set (the host), a bias per server, noise per block."""
    drift = rng.normal(0, drift_sd, (SETS, 1, 1))
    server = rng.normal(0, server_sd, (SETS, SERVERS, 1))
    return drift + server + rng.normal(0, within_sd, (SETS, SERVERS, BLOCKS))


def test_without_a_server_effect_the_f_test_errs_at_its_level_whatever_the_drift():
    rng = np.random.default_rng(0)
    p = np.array([fs.server_share(simulated(rng, 0.0).tolist())["p"] for _ in range(CASES)])
    rate = np.mean(p < 0.05)
    assert abs(rate - 0.05) < 3 * (0.05 * 0.95 / CASES) ** 0.5  # 3 standard errors


def test_a_known_server_effect_is_found_and_estimated():
    rng = np.random.default_rng(1)
    got = [fs.server_share(simulated(rng, 0.03).tolist()) for _ in range(CASES)]
    assert np.mean([g["p"] < 0.05 for g in got]) > 0.95
    assert abs(np.median([g["sd_server"] for g in got]) - 0.03) < 0.003
    assert abs(np.median([g["sd_within"] for g in got]) - 0.04) < 0.002
    assert got[0]["df"] == (SETS * (SERVERS - 1), SETS * SERVERS * (BLOCKS - 1))
