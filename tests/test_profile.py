"""bench.profile: scalene line profiles of one cell, parsed, stored, shown."""

import json
import sys
import tempfile
from pathlib import Path

import pytest

from gradsweep import profile as P
from gradsweep import store
from gradsweep.cli import app as cli
from gradsweep.errors import BadInput
from gradsweep.impls.registry import load
from gradsweep.records import MeasureSettings

LSTM_LIST = "lstm/buffers=list,wgrad=step,clip=none"
RNN_LIST = "rnn/buffers=list,wgrad=step,clip=none"
SMALL_RNN = "N=8,T=32,D=16,H=32"
#: Loose bounds on the sum of every line's CPU share (scalene: % of profiled time).
MIN_TOTAL_PERCENT, MAX_TOTAL_PERCENT = 50.0, 100.5


def _impls_file(name: str) -> str:
    return f"{P._module_root('gradsweep.impls')}/{name}"


def _canned(path: str) -> dict:
    """A small scalene 2.4 JSON: two hot lines, one cold, one foreign file."""
    def line(no, py, c, sys_, peak=0.0, malloc=0.0):
        return {"lineno": no, "line": "ignored\\u003e\n", "n_cpu_percent_python": py,
                "n_cpu_percent_c": c, "n_sys_percent": sys_, "n_peak_mb": peak,
                "n_malloc_mb": malloc, "n_avg_mb": 0.0, "n_mallocs": 0}
    return {"elapsed_time_sec": 1.0, "max_footprint_mb": 3.0, "files": {
        path: {"percent_cpu_time": 100.0, "functions": [], "lines": [
            line(1, 0.0, 0.0, 0.0), line(20, 5.0, 30.0, 5.0),
            line(21, 0.0, 50.0, 0.0, peak=2.0, malloc=8.0)]},
        "/elsewhere/other.py": {"lines": [line(3, 10.0, 0.0, 0.0)]},
    }}


def test_make_cell_fills_defaults_and_canonicalises():
    cell = P.make_cell("rnn/clip=none,wgrad=step,buffers=list", "N=4,T=5")
    assert cell.variant == RNN_LIST
    kernel = load().kernel("rnn")
    assert cell.dims == {**kernel.full_shape({}), "N": 4, "T": 5}


@pytest.mark.parametrize(("variant", "shape", "dtype", "words"), [
    ("lstm/buffers=lists,wgrad=step,clip=none", "", "float64", "unknown variant"),
    ("nokernel/x=y", "", "float64", "unknown kernel"),
    ("lstm", "", "float64", "expected KERNEL/axis=value"),
    (LSTM_LIST, "N=4,Q=3", "float64", "'Q=3'"),
    (LSTM_LIST, "N=four", "float64", "not an integer"),
    (LSTM_LIST, "N=0", "float64", "below the minimum"),
    (LSTM_LIST, "", "float16", "unknown dtype"),
])
def test_bad_input_is_one_line(variant, shape, dtype, words):
    with pytest.raises(BadInput) as info:
        P.make_cell(variant, shape, dtype)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_function_index_names_enclosing_defs(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("X = 1\n\nclass A:\n    y = 2\n\n    def f(self):\n"
                      "        def g():\n            return 1\n        return g\n")
    index = P.function_index(str(source))
    assert P.MODULE_LEVEL not in index.values() and 1 not in index
    assert (index[4], index[6], index[8], index[9]) == ("A", "A.f", "A.f.g", "A.f")


def test_parse_report_keeps_the_variants_hot_lines():
    cell = P.make_cell(RNN_LIST, SMALL_RNN)
    path = _impls_file("rnn.py")
    rows = P.parse_report(_canned(path), cell, P.code_roots(cell), calls=4)
    assert [r.line for r in rows] == [21, 20]  # cold line and foreign file dropped
    hot = rows[0]
    assert (hot.file, hot.cell_id, hot.variant) == ("impls/rnn.py", cell.cell_id, RNN_LIST)
    assert (hot.cpu_percent_native, hot.peak_mb, hot.alloc_mb) == (50.0, 2.0, 2.0)
    with open(path) as f:
        assert hot.code == f.read().splitlines()[20].rstrip()
    assert hot.function == P.function_index(path).get(21, P.MODULE_LEVEL)
    stored = store.to_table("profiles", rows)
    assert stored.num_rows == 2 and stored.column("line").to_pylist() == [21, 20]


def test_scalene_missing_is_one_line(monkeypatch):
    cell = P.make_cell(RNN_LIST, SMALL_RNN)
    monkeypatch.setattr(P, "scalene_available", lambda: False)
    with pytest.raises(P.ProfileError, match="scalene is not installed"):
        P.profile_cell(cell)
    monkeypatch.setattr(P, "SCALENE_COMMAND", ("/no/such/python", "-m", "scalene", "run"))
    with pytest.raises(P.ProfileError, match="not found"):
        P.profile_cell(cell)


def test_scalene_failing_or_silent_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(P, "SCALENE_COMMAND", (sys.executable, "-c",
                                               "import sys; sys.exit('boom: no scalene')"))
    with pytest.raises(P.ProfileError, match="exited with 1: boom"):
        P.profile_cell(P.make_cell(RNN_LIST, SMALL_RNN))
    monkeypatch.setattr(P, "SCALENE_COMMAND", (sys.executable, "-c", "pass"))
    with pytest.raises(P.ProfileError, match="wrote no outcome"):
        P.profile_cell(P.make_cell(RNN_LIST, SMALL_RNN))


def test_cli_errors_exit_2(capsys, monkeypatch):
    assert cli.main(["profile", "lstm/buffers=nope,wgrad=step,clip=none"]) == 2
    assert cli.main(["profile", LSTM_LIST, "--shape", "N=4,Z=1"]) == 2
    monkeypatch.setattr(P, "scalene_available", lambda: False)
    assert cli.main(["profile", RNN_LIST, "--shape", SMALL_RNN]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(ln.startswith("gradsweep: error:") for ln in lines)


def test_wants_profile_filters_variants():
    cell = P.make_cell(LSTM_LIST, "N=4")
    assert not P.wants_profile(cell, MeasureSettings())
    assert P.wants_profile(cell, MeasureSettings(profile=True))
    on = MeasureSettings(profile=True)
    object.__setattr__(on, "profile_variants", ("lstm/buffers=prealloc,*",))
    assert not P.wants_profile(cell, on)
    assert P.profile_for_sweep(cell, on) == P.SweepProfile()


def test_profile_for_sweep_returns_errors(monkeypatch):
    cell = P.make_cell(RNN_LIST, SMALL_RNN)
    monkeypatch.setattr(P, "scalene_available", lambda: False)
    outcome = P.profile_for_sweep(cell, MeasureSettings(profile=True))
    assert outcome.rows == () and outcome.error.startswith("profile: scalene is not installed")


def test_an_empty_profile_is_a_failure_not_an_empty_success(monkeypatch, capsys):
    """scalene sampled none of the variant's files (e.g. another copy of the code imported)."""
    elsewhere = {"files": {"/elsewhere/impls/rnn.py": {"lines": [
        {"lineno": 3, "line": "x", "n_cpu_percent_python": 90.0}]}}}
    monkeypatch.setattr(P, "run_scalene", lambda *a, **k: (elsewhere, {"calls": 4}))
    with pytest.raises(P.CellFailed, match="scalene recorded no line of its code"):
        P.run_profile(P.make_cell(RNN_LIST, SMALL_RNN))
    assert cli.main(["profile", RNN_LIST, "--shape", SMALL_RNN]) == 1
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and "scalene recorded no line" in out


@pytest.mark.slow
def _scalene_leftovers() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("scalene*")}


def test_real_profile_of_a_small_cell(tmp_path, capsys):
    results = tmp_path / "results"
    before = _scalene_leftovers()
    code = cli.main(["profile", RNN_LIST, "--shape", SMALL_RNN, "--seconds", "1",
                     "--store", "--results", str(results)])
    printed = capsys.readouterr().out
    assert code == 0 and "impls/rnn.py" in printed
    assert _scalene_leftovers() <= before  # scalene's shim directory went with ours
    dataset = store.resolve(str(results))
    rows = store.read(dataset, "profiles")
    assert len(rows) and set(rows["variant"]) == {RNN_LIST}
    assert rows["file"].str.startswith("impls/").all()
    cpu = rows["cpu_percent_python"] + rows["cpu_percent_native"] + rows["cpu_percent_system"]
    assert MIN_TOTAL_PERCENT <= cpu.sum() <= MAX_TOTAL_PERCENT
    hottest = rows.loc[cpu.idxmax()]
    assert hottest["file"] == "impls/rnn.py" and hottest["function"] != P.MODULE_LEVEL
    sweeps = store.sweeps(dataset)
    assert list(sweeps["status"]) == ["finished"]
    assert json.dumps(list(sweeps["name"])) == json.dumps([f"profile {RNN_LIST}"])


def test_incorrect_variant_exits_1(monkeypatch, capsys):
    def fake(cell, settings, plugins, *, seconds, memory):
        return P.Profile(cell=cell, lines=(), calls=3, elapsed_s=0.3, max_rel_err=0.5, files=())
    monkeypatch.setattr(P, "run_profile", fake)
    assert cli.main(["profile", RNN_LIST, "--shape", SMALL_RNN]) == 1
    assert "incorrect: max_rel_err 0.5" in capsys.readouterr().out


@pytest.mark.slow
def test_a_raising_plugin_variant_exits_1(capsys):
    code = cli.main(["profile", "rnn/buffers=raises,wgrad=batched,clip=none", "--plugin",
                     "gs_extra", "--shape", SMALL_RNN, "--seconds", "0.2", "--cpu-only"])
    out = capsys.readouterr().out
    assert code == 1 and "RuntimeError: deliberate failure" in out
