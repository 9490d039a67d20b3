"""Finding things from the command line: datasets, sweeps, cells by short id, filters."""

import inspect
import json

import pandas as pd
import pytest

from gradsweep import report as report_mod
from gradsweep import store
from gradsweep.cli.app import main

T0 = pd.Timestamp("2026-01-01T00:00:00", tz="UTC")
LSTM = "lstm/buffers=list,wgrad=step,clip=none"
GRU = "gru/buffers=list,wgrad=step,clip=none"
#: Commands that read a dataset, each with --results filled in by the tests.
READERS = [["results", "list"], ["results", "show"], ["results", "sql", "select 1"],
           ["results", "history", "ab"], ["results", "compact"],
           ["results", "delete", "s1", "--yes"], ["report"], ["dashboard"],
           ["compare", "latest", "latest"]]
REPORT_FILTERS = {"kernel", "shape", "dtype"} <= set(
    inspect.signature(report_mod.load_report).parameters)


def cell(cell_id, variant=LSTM, dtype="float64", median=1e6, **dims):
    dims = {"N": 16, "T": 32, "D": 32, "H": 64, **dims}
    return {"cell_id": cell_id, "kernel": variant.split("/")[0], "variant": variant,
            "dtype": dtype, "status": "ok", "median_ns": median, "ci_low_ns": median * 0.9,
            "ci_high_ns": median * 1.1, "samples_ns": [median] * 5, "dims": list(dims.items()),
            "shape": ",".join(f"{k}={v}" for k, v in dims.items()), "recorded_at": T0,
            "warnings": [], **dims}


@pytest.fixture
def dataset(results) -> store.Dataset:
    """Two sweeps (s1 then s2) of lstm and gru cells; ids ab12..., ab34..., cd56..."""
    ds = store.resolve(results)
    for i, sweep in enumerate(("s1", "s2")):
        store.write(ds, "sweeps", sweep, [{"name": sweep, "event": "finished",
                                           "status": "finished", "git_commit": "abc",
                                           "at": T0 + pd.Timedelta(minutes=i)}])
        store.write(ds, "cells", sweep, [
            cell("ab12000000000000", median=1e6 * (1 + i)),
            cell("ab34000000000000", LSTM, dtype="float32"),
            cell("cd56000000000000", GRU, H=128)])
    return ds


@pytest.mark.parametrize("argv", READERS, ids=" ".join)
def test_missing_dataset_is_exit_2_naming_the_path_and_run(argv, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main([*argv, "--results", str(missing)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and str(missing) in err and "gradsweep run" in err
    assert not missing.exists()


def test_missing_candidate_dataset_names_its_option(dataset, tmp_path, capsys):
    argv = ["compare", "s1", "s2", "--candidate-results", str(tmp_path / "nowhere")]
    assert main(argv) == 2
    assert "--candidate-results: no results dataset" in capsys.readouterr().err


def test_results_show_defaults_to_the_latest_sweep(dataset, capsys):
    assert main(["results", "show", "--format", "json"]) == 0
    medians = {r["cell_id"]: r["median_ns"] for r in json.loads(capsys.readouterr().out)}
    assert medians["ab12000000000000"] == 2e6  # s2's, not s1's


@pytest.mark.parametrize("option, value, valid", [
    ("--kernel", "lstmm", "valid: gru, lstm"),
    ("--dtype", "float16", "valid: float32, float64"),
    ("--shape", "N=1", "valid: N=16,T=32,D=32,H=128, N=16,T=32,D=32,H=64"),
])
def test_results_show_unknown_filter_value_lists_the_valid_ones(dataset, capsys, option,
                                                                 value, valid):
    assert main(["results", "show", option, value]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"{option}: no cell has" in err and valid in err


def test_results_show_combination_matching_nothing_is_an_empty_table(dataset, capsys):
    assert main(["results", "show", "--kernel", "gru", "--dtype", "float32",
                 "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # the header


def test_results_show_shape_ignores_spaces(dataset, capsys):
    assert main(["results", "show", "--shape", "N=16, T=32, D=32, H=128", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("cd56000000000000,")


@pytest.mark.parametrize("prefix", ["ab12", "AB12", "ab12000000000000", "ab120"])
def test_history_accepts_a_unique_prefix(dataset, capsys, prefix):
    assert main(["results", "history", prefix]) == 0
    out = capsys.readouterr().out
    assert "ab12000000000000" in out and "s1" in out and "s2" in out


@pytest.mark.parametrize("prefix, message", [
    ("ab", "'ab' starts 2 cell ids (ab12000000000000, ab34000000000000): give more digits"),
    ("ff", "no sweep in"),
])
def test_history_ambiguous_or_unknown_prefix_is_exit_2(dataset, capsys, prefix, message):
    assert main(["results", "history", prefix]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err


@pytest.mark.skipif(not REPORT_FILTERS, reason="needs report.load_report(kernel=, shape=, "
                                               "dtype=) calling query.filter_cells")
@pytest.mark.parametrize("argv, code, text", [
    (["report", "--kernel", "lstmm"], 2, "--kernel: no cell has kernel 'lstmm' (valid: gru, "
                                         "lstm)"),
    (["report", "--dtype", "float16"], 2, "valid: float32, float64"),
    (["report", "--kernel", "gru", "--format", "csv"], 0, "gru/"),
])
def test_report_filters(dataset, capsys, argv, code, text):
    assert main(argv) == code
    captured = capsys.readouterr()
    assert text in (captured.err if code else captured.out)
    if code == 0:
        assert "lstm/" not in captured.out


def test_report_without_filters_calls_load_report_as_before(dataset, capsys, monkeypatch):
    seen = {}

    def load_report(dataset, sweep, **filters):
        seen.update(sweep=sweep, **filters)
        raise report_mod.BadInput("stop here")

    monkeypatch.setattr(report_mod, "load_report", load_report)
    assert main(["report"]) == 2
    assert seen == {"sweep": "latest"}
    assert main(["report", "s1", "--kernel", "gru", "--shape", "N=1", "--dtype", "x"]) == 2
    assert seen == {"sweep": "s1", "kernel": "gru", "shape": "N=1", "dtype": "x"}
