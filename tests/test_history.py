"""history: step detection on synthetic series, a cell's history from a dataset, the CLI."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from gradsweep import history, store
from gradsweep.cli.app import main
from gradsweep.errors import BadInput

MS = 1e6


def series(levels, length=15, cv=0.03, seed=0, outliers=0):
    """Piecewise constant levels (ms), each ``length`` points, lognormal noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.asarray(levels, dtype=float) * MS, length)
    y *= np.exp(rng.normal(0, cv, y.size))
    if outliers:
        y[rng.choice(y.size, outliers, replace=False)] *= 1.6
    return y


def test_no_step_in_noise():
    for seed in range(5):
        assert history.detect_steps(series([5.0], length=40, seed=seed)) == ()


def test_no_step_from_isolated_outliers():
    assert history.detect_steps(series([5.0], length=40, seed=1, outliers=3)) == ()


def test_one_step_found_where_it_is_with_its_ratio():
    (step,) = history.detect_steps(series([5.0, 10.0], seed=2))
    assert step.index == 15
    assert step.ratio == pytest.approx(2.0, rel=0.05)
    assert step.before == pytest.approx(5 * MS, rel=0.05)


def test_two_steps_up_then_down():
    steps = history.detect_steps(series([5.0, 6.5, 5.0], seed=3))
    assert [s.index for s in steps] == [15, 30]
    assert steps[0].ratio == pytest.approx(1.3, rel=0.05)
    assert steps[1].ratio == pytest.approx(1 / 1.3, rel=0.05)


def test_steps_below_the_minimum_effect_are_merged():
    y = series([5.0, 5.1], cv=0.001, seed=4)  # a clear but 2% step
    assert history.detect_steps(y) == ()
    assert len(history.detect_steps(y, min_effect=0.01)) == 1


def test_exactly_constant_and_short_series():
    assert history.detect_steps([3.0] * 10) == ()
    assert history.detect_steps([]) == ()
    assert history.detect_steps([1.0, 2.0, 2.0]) == ()  # shorter than two segments
    segs = history.segments([1.0, 1.0, 2.0, 2.0])
    assert [(s.start, s.stop) for s in segs] == [(0, 2), (2, 4)]


def test_detection_rate_on_noisy_series():
    found = sum(any(abs(s.index - 15) <= 1 for s in history.detect_steps(
        series([5.0, 5.0 * 1.25], cv=0.05, seed=seed, outliers=1))) for seed in range(20))
    false = sum(bool(history.detect_steps(series([5.0], length=30, cv=0.05, seed=100 + seed,
                                                 outliers=1))) for seed in range(20))
    assert found >= 18 and false <= 1


def test_non_positive_values_are_rejected():
    with pytest.raises(ValueError):
        history.detect_steps([1.0, 0.0, 1.0, 1.0])


def write_history(ds, medians, cell_id="c1", other_status=None):
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ids = []
    for i, m in enumerate(medians):
        sweep_id = f"2026010{1 + i // 10}T0000{i % 10:02d}Z-{i:04x}"
        ids.append(sweep_id)
        store.write(ds, "sweeps", sweep_id, [{"name": f"s{i}", "event": "finished",
                                              "status": "finished",
                                              "at": t0 + timedelta(hours=i), "role": "plain",
                                              "git_commit": f"{i:040x}"}])
        status = other_status if other_status and i == 3 else "ok"
        store.write(ds, "cells", sweep_id, [
            {"cell_id": cell_id, "variant": "rnn/buffers=list,wgrad=step,clip=none",
             "shape": "N=1,T=2,D=3,H=4", "dtype": "float64", "status": status,
             "median_ns": m if status == "ok" else None, "ci_low_ns": m * 0.95,
             "ci_high_ns": m * 1.05, "host": "h"},
            {"cell_id": "other", "status": "ok", "median_ns": 1.0}])
    return ids


def test_cell_history_in_time_order_and_steps_map_to_rows(tmp_path):
    ds = store.resolve(tmp_path / "r")
    medians = [5 * MS] * 6 + [10 * MS] * 6
    ids = write_history(ds, medians, other_status="error")
    frame = history.cell_history(ds, "c1")
    assert list(frame["sweep_id"]) == ids
    assert list(frame.columns) == list(history.HISTORY_COLUMNS)
    (step,) = history.history_steps(frame)
    assert step.index == 6 and step.ratio == pytest.approx(2.0)
    with pytest.raises(BadInput, match="no sweep"):
        history.cell_history(ds, "missing")


def test_cli_results_history(tmp_path, capsys):
    ds = store.resolve(tmp_path / "r")
    ids = write_history(ds, [5 * MS] * 5 + [7.5 * MS] * 5)
    assert main(["results", "history", "c1", "--results", ds.root]) == 0
    out = capsys.readouterr().out
    assert ids[0] in out and "1.50x" in out
    assert f"step at {ids[5]} (after {ids[4]}): 5 ms -> 7.5 ms, 1.50x" in out
    assert main(["results", "history", "nope", "--results", ds.root]) == 2
