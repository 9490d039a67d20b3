"""The Python API (gradsweep.api, docs/api.md): each function on a tiny local sweep, its
errors, and the doc's worked example run as written."""

import re
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from conftest import SMALL_MEASURE

import gradsweep
from gradsweep import store

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
TINY = 'name = "tiny"\n' + SMALL_MEASURE + """
[[grid]]
kernel = "rnn"
variants = { buffers = ["list", "prealloc"], wgrad = ["step"], clip = ["none"] }
shape = { N = [2], T = [3], D = [4], H = [5] }
dtype = ["float64"]
"""
VARIANTS = {"rnn/buffers=list,wgrad=step,clip=none", "rnn/buffers=prealloc,wgrad=step,clip=none"}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One tiny sweep run through the API, in this process: (results, outcome, results seen)."""
    root = tmp_path_factory.mktemp("api")
    (root / "tiny.toml").write_text(TINY)
    seen = []
    outcome = gradsweep.run(root / "tiny.toml", results=root / "results", local=True,
                            on_result=seen.append)
    return root / "results", outcome, seen


def test_every_exported_name_resolves_and_import_stays_light():
    import subprocess

    for name in gradsweep.__all__:
        assert getattr(gradsweep, name) is not None, name
    code = ("import sys, gradsweep\n"
            "assert not {'numpy', 'pandas', 'pyarrow', 'ray', 'duckdb'} & set(sys.modules)\n")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_load_spec_and_expand(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY)
    spec = gradsweep.load_spec(tmp_path / "tiny.toml")
    assert isinstance(spec, gradsweep.SweepSpec) and spec.name == "tiny"
    cells = gradsweep.expand(spec).cells
    assert {c.variant for c in cells} == VARIANTS
    assert {c.shape_text for c in cells} == {"N=2,T=3,D=4,H=5"}


@pytest.mark.parametrize("text, expected", [
    (TINY.replace('dtype = ["float64"]', 'dtypes = ["float64"]'), "grid[0].dtypes: unknown key"),
    (TINY.replace('kernel = "rnn"', 'kernel = "rnnn"'), "rnnn"),
    ("name = [", "tiny.toml"),
])
def test_a_bad_spec_is_bad_input_naming_it(tmp_path, text, expected):
    (tmp_path / "tiny.toml").write_text(text)
    with pytest.raises(gradsweep.BadInput, match=re.escape(expected)):
        gradsweep.load_spec(tmp_path / "tiny.toml")
    with pytest.raises(gradsweep.BadInput, match=re.escape(expected)):
        gradsweep.run(tmp_path / "tiny.toml", results=tmp_path / "r", local=True)
    assert not (tmp_path / "r").exists()


def test_a_missing_spec_file_is_bad_input(tmp_path):
    with pytest.raises(gradsweep.BadInput, match="cannot read spec"):
        gradsweep.load_spec(tmp_path / "nope.toml")


def test_run_stores_every_cell_and_reports_each_result(swept):
    results, outcome, seen = swept
    assert isinstance(outcome, gradsweep.SweepOutcome)
    assert outcome.status == "finished" and outcome.counts == {"ok": 2} and outcome.failed == 0
    assert {r.variant for r in seen} == VARIANTS and {r.status for r in seen} == {"ok"}
    assert store.sweeps(store.resolve(results))["sweep_id"].tolist() == [outcome.sweep_id]


def test_read_cells_gives_one_typed_row_per_cell(swept):
    results, outcome, _ = swept
    cells = gradsweep.read_cells(results, outcome.sweep_id)
    assert set(cells["variant"]) == VARIANTS and len(cells) == 2
    assert set(cells["status"]) == {"ok"} and (cells["median_ns"] > 0).all()
    assert (cells["ci_low_ns"] <= cells["median_ns"]).all()
    assert (cells["median_ns"] <= cells["ci_high_ns"]).all()
    assert {str(cells[d].dtype) for d in store.DIM_COLUMNS} == {"Int64"}
    assert cells["N"].tolist() == [2, 2] and cells["Hin"].isna().all()
    assert set(cells["buffers"]) == {"list", "prealloc"}
    plain = pd.read_parquet(results / "cells").drop(columns="sweep_id")
    assert (cells.drop(columns="sweep_id").dtypes.astype(str).to_dict()
            == plain.dtypes.astype(str).to_dict())
    assert gradsweep.read_cells(results).equals(cells)  # latest
    some = gradsweep.read_cells(results, None, columns=["variant", "median_ns"])
    assert {"variant", "median_ns", "sweep_id"} <= set(some.columns) and len(some) == 2


def test_the_default_dataset_comes_from_the_environment(swept, monkeypatch):
    results, outcome, _ = swept
    monkeypatch.setenv(store.RESULTS_ENV, str(results))
    assert set(gradsweep.read_cells()["sweep_id"]) == {outcome.sweep_id}
    assert gradsweep.open_results().root == str(results)


def test_read_table_gives_pyarrow_for_every_table(swept):
    results, outcome, _ = swept
    cells = gradsweep.read_table(results, outcome.sweep_id, columns=["variant", "median_ns"])
    assert isinstance(cells, pa.Table) and cells.num_rows == 2
    assert set(cells["variant"].to_pylist()) == VARIANTS
    assert {"variant", "median_ns", "sweep_id", "cell_id"} <= set(cells.column_names)
    assert cells.schema.field("sweep_id").type == pa.string()
    assert set(cells["sweep_id"].to_pylist()) == {outcome.sweep_id}
    events = gradsweep.read_table(results, None, table="sweeps")
    assert set(events["event"].to_pylist()) == {"started", "finished"}
    assert gradsweep.read_table(results, table="profiles").num_rows == 0
    with pytest.raises(gradsweep.BadInput, match="unknown table 'cels'"):
        gradsweep.read_table(results, table="cels")
    with pytest.raises(gradsweep.BadInput, match="unknown column"):
        gradsweep.read_table(results, columns=["bogus"])


def test_connect_has_the_four_tables_as_views(swept):
    results, outcome, _ = swept
    con = gradsweep.connect(results)
    try:
        rows = con.sql("SELECT variant, median_ns FROM cells ORDER BY variant").fetchall()
        counts = {t: con.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                  for t in store.SCHEMAS}
        ids = con.sql("SELECT DISTINCT sweep_id FROM sweeps").fetchall()
    finally:
        con.close()
    cells = gradsweep.read_cells(results).sort_values("variant")
    assert rows == list(zip(cells["variant"], cells["median_ns"], strict=True))
    assert counts["cells"] == 2 and counts["profiles"] == 0 and counts["nodes"] >= 1
    assert ids == [(outcome.sweep_id,)]


def test_load_report_ranks_the_sweep(swept):
    results, outcome, _ = swept
    report = gradsweep.load_report(results, outcome.sweep_id)
    assert report.sweep_id == outcome.sweep_id and report.failed == ()
    [((kernel, dtype, shape), ranked)] = report.groups()
    assert (kernel, dtype, shape) == ("rnn", "float64", "N=2,T=3,D=4,H=5")
    assert {c.variant for c in ranked} == VARIANTS and ranked[0].place == 1
    assert ranked[0].answer and all(c.answer == ranked[0].answer for c in ranked)
    # places, then the paired ratio to the fastest (not the medians, which can disagree)
    order = [(c.place, c.ratio_fastest) for c in ranked]
    assert order == sorted(order) and ranked[0].ratio_fastest == pytest.approx(1.0)
    assert {o.variant for o in report.overall} == VARIANTS
    assert gradsweep.load_report(results, kernel="rnn", dtype="float64").groups()
    with pytest.raises(gradsweep.BadInput, match="lstm.*valid: rnn"):
        gradsweep.load_report(results, kernel="lstm")


def test_resume_of_a_finished_sweep_reruns_nothing(swept, tmp_path):
    results, outcome, _ = swept
    again = gradsweep.run(gradsweep.load_spec(results.parent / "tiny.toml"), results,
                          local=True, resume="latest")
    assert again.sweep_id == outcome.sweep_id and again.cells == 0
    assert len(gradsweep.read_cells(results)) == 2


@pytest.mark.parametrize("call", [
    lambda where: gradsweep.read_cells(where),
    lambda where: gradsweep.read_table(where, table="sweeps"),
    lambda where: gradsweep.connect(where),
    lambda where: gradsweep.load_report(where),
    lambda where: gradsweep.open_results(where),
], ids=["read_cells", "read_table", "connect", "load_report", "open_results"])
def test_a_missing_dataset_is_bad_input_naming_it(tmp_path, call):
    where = tmp_path / "no-such-dir"
    with pytest.raises(gradsweep.BadInput, match=r"no results dataset at .*no-such-dir.*"
                                                 r"gradsweep run"):
        call(where)
    assert not where.exists()


def test_an_unknown_sweep_or_a_file_as_dataset_is_bad_input(swept, tmp_path):
    results, _, _ = swept
    with pytest.raises(gradsweep.BadInput, match="unknown sweep 'nope'"):
        gradsweep.read_cells(results, "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(gradsweep.BadInput, match="is not a directory"):
        gradsweep.run(results.parent / "tiny.toml", tmp_path / "file", local=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(gradsweep.BadInput, match="no sweeps in"):
        gradsweep.read_cells(tmp_path / "empty")


def doc_blocks(language: str) -> list[str]:
    """The fenced ``language`` blocks of docs/api.md's worked example, in order."""
    text = DOC.read_text()
    section = text[text.index("## A worked example"):text.index("## The functions")]
    return re.findall(rf"^```{language}\n(.*?)^```", section, re.MULTILINE | re.DOTALL)


def test_the_docs_worked_example_runs_as_written(tmp_path, monkeypatch, capsys):
    [spec], [code] = doc_blocks("toml"), doc_blocks("python")
    (tmp_path / "tiny.toml").write_text(spec)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(store.RESULTS_ENV, raising=False)
    exec(compile(code, str(DOC), "exec"), {"__name__": "api_doc_example"})
    out = capsys.readouterr().out
    assert "2 cells" in out and "finished {'ok': 2}" in out
    assert "no results dataset at no-such-dir" in out
    assert "rnn float64 N=2,T=3,D=4,H=5" in out
