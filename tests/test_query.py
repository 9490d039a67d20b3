"""Queries over the results dataset: listing, filters, SQL, exports and the results CLI."""

import io
import json

import pandas as pd
import pytest

from gradsweep import query, store
from gradsweep.cli.app import main
from gradsweep.errors import BadInput

T0 = pd.Timestamp("2026-01-01T00:00:00", tz="UTC")
LSTM = "lstm/buffers=list,wgrad=step,clip=none"
BILSTM = "bilstm/buffers=list,wgrad=step,clip=none,merge=concat"


def cell(cell_id, variant=LSTM, status="ok", median=1e6, dtype="float64", at=T0, **dims):
    dims = {"N": 16, "T": 32, "D": 32, "H": 64, **dims}
    kernel = variant.split("/")[0]
    return {"cell_id": cell_id, "kernel": kernel, "variant": variant, "dtype": dtype,
            "status": status, "median_ns": median, "ci_low_ns": median * 0.9,
            "ci_high_ns": median * 1.1, "samples_ns": [median] * 15, "peak_bytes": 2**20,
            "gflops": 10.0, "warnings": ["noisy: cv 20%"] if status == "ok" else [],
            "error": None if status == "ok" else "boom", "dims": list(dims.items()),
            "shape": ",".join(f"{k}={v}" for k, v in dims.items()), "recorded_at": at, **dims}


def event(sweep_id, ds, name, status, at):
    store.write(ds, "sweeps", sweep_id, [{"name": name, "event": status, "status": status,
                                          "at": at, "git_commit": "abc123"}])


@pytest.fixture
def dataset(results):
    """Two sweeps: s1 finished (lstm and bilstm cells), s2 started long ago, never finished."""
    ds = store.resolve(results)
    event("s1", ds, "one", "running", T0)
    store.write(ds, "cells", "s1", [cell("a"), cell("b", median=2e6, H=128),
                                    cell("c", BILSTM, median=3e6), cell("d", status="error")])
    store.write(ds, "cells", "s1", [cell("e", dtype="float32", H=256)])
    event("s1", ds, "one", "finished", T0 + pd.Timedelta(seconds=10))
    event("s2", ds, "two", "running", T0 + pd.Timedelta(minutes=1))
    store.write(ds, "cells", "s2", [cell("a")])
    return ds


def test_parse_where_grammar():
    assert query.parse_where("H >= 128 and N==16 AND T != -2") == (
        query.Condition("H", ">=", 128), query.Condition("N", "==", 16),
        query.Condition("T", "!=", -2))


@pytest.mark.parametrize("bad", ["H >= x", "H ~ 3", "H >= 1 or N == 2", "__import__('os')",
                                 "H >= 1 and", "H = 3", ""])
def test_parse_where_refuses_everything_else(bad):
    with pytest.raises(BadInput, match="--where"):
        query.parse_where(bad)


def test_list_counts_cells_and_marks_stale_running_sweeps_incomplete(dataset):
    now = T0 + query.STALE_AFTER + pd.Timedelta(minutes=2)
    frame = query.list_sweeps(dataset, now=now).frame.set_index("sweep_id")
    assert frame.loc["s1", ["status", "ok", "failed", "cells"]].tolist() == [
        "finished", 4, 1, 5]
    assert frame.loc["s2", "status"] == "incomplete" and frame.loc["s2", "name"] == "two"
    assert list(frame.index) == ["s1", "s2"]  # oldest first
    fresh = query.list_sweeps(dataset, now=T0 + pd.Timedelta(minutes=2)).frame
    assert fresh.set_index("sweep_id").loc["s2", "status"] == "running"


def test_list_recent_cells_keep_a_sweep_running(dataset):
    store.write(dataset, "cells", "s2", [cell("z", at=T0 + pd.Timedelta(hours=1))])
    frame = query.list_sweeps(dataset, now=T0 + pd.Timedelta(hours=1, minutes=1)).frame
    assert frame.set_index("sweep_id").loc["s2", "status"] == "running"


def show(ds, **kw):
    return query.select_cells(ds, "s1", query.CellFilter(**kw)).frame


def test_show_filters(dataset):
    assert sorted(show(dataset)["cell_id"]) == ["a", "b", "c", "d", "e"]
    assert sorted(show(dataset, kernel="bilstm")["cell_id"]) == ["c"]
    assert sorted(show(dataset, dtype="float32")["cell_id"]) == ["e"]
    assert sorted(show(dataset, where=query.parse_where("H >= 128"))["cell_id"]) == ["b", "e"]
    both = show(dataset, where=query.parse_where("H >= 64 and H < 256"), dtype="float64")
    assert sorted(both["cell_id"]) == ["a", "b", "c", "d"]
    assert sorted(show(dataset, shape="N=16,T=32,D=32,H=128")["cell_id"]) == ["b"]


def test_show_variant_exact_when_it_exists_else_substring(dataset):
    # LSTM's name is a substring of BILSTM's: an exact name selects only itself
    assert "c" not in set(show(dataset, variant=LSTM)["cell_id"])
    assert sorted(show(dataset, variant="merge=concat")["cell_id"]) == ["c"]
    assert len(show(dataset, variant="wgrad=step")) == 5


def test_show_unknown_dim_is_bad_input(dataset):
    with pytest.raises(BadInput, match="unknown dim 'Q'"):
        show(dataset, where=query.parse_where("Q > 1"))


def test_sql_views_have_sweep_id_and_deduplicated_rows(dataset):
    newer = cell("a", median=5e6, at=T0 + pd.Timedelta(seconds=1))
    store.write(dataset, "cells", "s1", [newer])
    frame = query.run_sql(dataset, "SELECT sweep_id, cell_id, median_ns FROM cells "
                                   "WHERE cell_id = 'a' ORDER BY sweep_id").frame
    assert frame.values.tolist() == [["s1", "a", 5e6], ["s2", "a", 1e6]]
    names = query.run_sql(dataset, "select distinct name from sweeps order by 1").frame
    assert names["name"].tolist() == ["one", "two"]


@pytest.mark.parametrize("bad", ["SELEC 1", "select * from nope",
                                 "select * from read_csv('/etc/passwd')"])
def test_sql_errors_are_bad_input(dataset, bad):
    with pytest.raises(BadInput, match="SQL"):
        query.run_sql(dataset, bad)


def test_export_formats(dataset, tmp_path):
    frame = show(dataset, kernel="bilstm")
    csv = query.export(frame, "csv")
    assert csv.splitlines()[0].startswith("cell_id,kernel,variant") and "noisy: cv 20%" in csv
    rows = json.loads(query.export(frame, "json"))
    assert rows[0]["warnings"] == ["noisy: cv 20%"] and rows[0]["median_ns"] == 3e6
    query.export(frame, "parquet", str(tmp_path / "out.parquet"))
    assert pd.read_parquet(tmp_path / "out.parquet")["cell_id"].tolist() == ["c"]
    with pytest.raises(BadInput, match="-o FILE"):
        query.export(frame, "parquet")


# --- the CLI -----------------------------------------------------------------------------------

def test_cli_list_and_show(dataset, capsys):
    assert main(["results", "list"]) == 0
    out = capsys.readouterr().out
    assert "s1" in out and "finished" in out and "incomplete" in out
    assert main(["results", "show", "s1", "--kernel", "lstm", "--where", "H >= 128",
                 "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1].startswith("b,") and lines[2].startswith("e,")
    assert main(["results", "show", "latest", "--format", "json"]) == 0
    assert [r["cell_id"] for r in json.loads(capsys.readouterr().out)] == ["a"]


@pytest.mark.parametrize("argv, message", [
    (["results", "show", "nope"], "unknown sweep 'nope'"),
    (["results", "show", "../etc"], "invalid sweep id"),
    (["results", "show", "s1", "--where", "H >= 1; import os"], "--where"),
    (["results", "show", "s1", "--where", "Q == 1"], "unknown dim"),
    (["results", "show", "s1", "--format", "parquet"], "-o FILE"),
    (["results", "sql", "select * from cellz"], "SQL"),
    (["results", "delete", "nope", "--yes"], "unknown sweep"),
])
def test_cli_bad_input_is_one_line_exit_2(dataset, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_sql_formats(dataset, capsys):
    assert main(["results", "sql", "select sweep_id, count(*) n from cells group by 1 "
                 "order by 1", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["sweep_id,n", "s1,5", "s2,1"]
    assert main(["results", "sql", "select count(*) n from cells"]) == 0
    assert "6" in capsys.readouterr().out


def test_cli_show_with_a_corrupt_file_prints_rows_and_exits_2(dataset, results, capsys):
    (results / "cells" / "sweep_id=s1" / "torn.parquet").write_bytes(b"torn")
    with pytest.warns(store.CorruptFileWarning):
        assert main(["results", "show", "s1", "--format", "csv"]) == 2
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 6
    assert "corrupt file" in captured.err and "torn.parquet" in captured.err
    with pytest.warns(store.CorruptFileWarning):
        assert main(["results", "list"]) == 0
    assert "torn.parquet" in capsys.readouterr().err


class Terminal(io.StringIO):
    """Standard input that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_cli_compact_and_delete(dataset, results, capsys, monkeypatch):
    assert main(["results", "compact"]) == 0
    assert "cells/sweep_id=s1: 2 files -> 1 (5 rows)" in capsys.readouterr().out
    assert len(list((results / "cells" / "sweep_id=s1").glob("*.parquet"))) == 1
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))  # not a terminal: never asks
    assert main(["results", "delete", "s1"]) == 2
    assert "pass --yes" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    assert main(["results", "delete", "s1"]) == 1  # declined
    assert "aborted" in capsys.readouterr().err
    assert (results / "cells" / "sweep_id=s1").is_dir()
    assert main(["results", "delete", "s1", "--yes"]) == 0
    assert not (results / "cells" / "sweep_id=s1").exists()
    assert "deleted sweep s1" in capsys.readouterr().out


def test_compaction_summary_names_the_files_moved_aside(dataset, results):
    (results / "cells" / "sweep_id=s1" / "torn.parquet").write_bytes(b"PAR1 torn")
    with pytest.warns(store.CorruptFileWarning, match="torn.parquet"):
        summary = query.compaction_summary(store.compact(dataset))
    assert "cells/sweep_id=s1: 3 files -> 1 (5 rows)" in summary.lines
    assert summary.lines[-1].startswith("compacted 2 partitions; ")
    assert "1 unreadable file(s) moved aside" in summary.lines[-1]
    (aside,) = summary.set_aside
    assert aside.kept_at == str(results / "cells" / "_corrupt" / "sweep_id=s1" / "torn.parquet")
    assert "torn.parquet" in str(aside) and "moved to" in str(aside)
    assert len(store.read(dataset, "cells", ["s1"])) == 5


def test_cli_file_uri_results(dataset, results, capsys):
    assert main(["results", "list", "--results", f"file://{results}", "--format", "json"]) == 0
    assert {r["sweep_id"] for r in json.loads(capsys.readouterr().out)} == {"s1", "s2"}


# --- finding cells: filters with valid choices, short ids --------------------------------------

def frame_of(*rows):
    return pd.DataFrame([cell(i, variant=v, dtype=d, H=h) for i, v, d, h in rows])


def test_filter_cells_selects_exact_values():
    frame = frame_of(("a", LSTM, "float64", 64), ("b", LSTM, "float32", 128),
                     ("c", BILSTM, "float64", 64))
    assert list(query.filter_cells(frame)["cell_id"]) == ["a", "b", "c"]
    assert list(query.filter_cells(frame, kernel="lstm")["cell_id"]) == ["a", "b"]
    assert list(query.filter_cells(frame, kernel="lstm", dtype="float64")["cell_id"]) == ["a"]
    assert list(query.filter_cells(frame, shape="N=16, T=32, D=32, H=128")["cell_id"]) == ["b"]
    assert query.filter_cells(frame, kernel="bilstm", dtype="float32").empty  # each value exists


@pytest.mark.parametrize("kwargs, message", [
    ({"kernel": "lstmm"}, "--kernel: no cell has kernel 'lstmm' (valid: bilstm, lstm)"),
    ({"dtype": "float16"}, "--dtype: no cell has dtype 'float16' (valid: float32, float64)"),
    ({"kernel": "lstm", "shape": "N=1"}, "--shape: no cell has shape 'N=1' (valid: N=16,T=32"),
])
def test_filter_cells_unknown_value_names_the_valid_ones(kwargs, message):
    frame = frame_of(("a", LSTM, "float64", 64), ("b", BILSTM, "float32", 128))
    with pytest.raises(BadInput) as exc:
        query.filter_cells(frame, **kwargs)
    assert str(exc.value).startswith(message)


def test_check_choices_shortens_long_lists_and_empty_sweeps():
    many = {"shape": [f"N={n}" for n in range(40)]}
    with pytest.raises(BadInput, match=rf"\.\.\. \({40 - query.MAX_CHOICES_SHOWN} more\)"):
        query.check_choices(many, {"shape": "N=99"})
    with pytest.raises(BadInput, match="the sweep has no cells"):
        query.check_choices({"kernel": []}, {"kernel": "lstm"})


def test_match_cell_id_by_prefix():
    ids = ["ab12ffff00000000", "ab34ffff00000000", "ab"]
    assert query.match_cell_id(ids, "ab1") == "ab12ffff00000000"
    assert query.match_cell_id(ids, "ab") == "ab"  # an exact id wins over longer ones
    assert query.match_cell_id(ids, "cd") is None
    with pytest.raises(BadInput, match="'ab3' starts|give more digits") as exc:
        query.match_cell_id(ids + ["ab35"], "ab3")
    assert "ab34ffff00000000, ab35" in str(exc.value)
    with pytest.raises(BadInput, match="empty cell id"):
        query.match_cell_id(ids, "")


def test_resolve_cell_id_across_sweeps(dataset):
    assert query.resolve_cell_id(dataset, "e") == "e"
    with pytest.raises(BadInput, match="no sweep in .* holds a cell whose id starts with 'z'"):
        query.resolve_cell_id(dataset, "z")
    assert query.short_cell_id("0123456789abcdef") == "01234567"


def test_cli_show_unknown_kernel_is_exit_2_with_choices(dataset, capsys):
    assert main(["results", "show", "s1", "--kernel", "lstmm"]) == 2
    err = capsys.readouterr().err
    assert "--kernel: no cell has kernel 'lstmm' (valid: bilstm, lstm)" in err
