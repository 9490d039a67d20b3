"""regress: comparison statistics, decisions, pairing by ci_run, warnings, Markdown, JUnit."""

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from gradsweep import regress, stats, store
from gradsweep.cli.app import main
from gradsweep.errors import BadInput

N = 20
BASE_NS = 1e6
MACHINE = {"host": "h1", "cpu": "EPYC", "blas": "openblas", "numpy_version": "2.4.6",
           "python_version": "3.12.0", "threads": 1}


def noisy(rng, n=N, cv=0.05, scale=BASE_NS):
    """Lognormal samples around ``scale``."""
    return scale * np.exp(rng.normal(0.0, cv, n))


def row(cell_id, samples, status="ok", variant=None, **extra):
    variant = variant or f"rnn/buffers=v{cell_id},wgrad=step,clip=none"
    return {"cell_id": cell_id, "kernel": "rnn", "variant": variant, "shape": "N=1,T=2,D=3,H=4",
            "dtype": "float64", "status": status, "error": extra.pop("error", None),
            "samples_ns": list(samples), **MACHINE, **extra}


def frames(pairs, **cand_extra):
    """Base and candidate frames from ``{cell_id: (base_samples, candidate_samples)}``."""
    base = pd.DataFrame([row(k, b) for k, (b, _) in pairs.items()])
    cand = pd.DataFrame([row(k, c, **cand_extra) for k, (_, c) in pairs.items()])
    return base, cand


def paired_set(rng, factor, n=N, cv=0.05, drift=0.3):
    """Paired samples sharing a per-round drift (what A B B A cancels), candidate x factor."""
    common = BASE_NS * np.exp(rng.normal(0.0, drift, n))
    return common * np.exp(rng.normal(0, cv, n)), factor * common * np.exp(rng.normal(0, cv, n))


def test_identical_data_is_no_regression_paired_and_unpaired():
    rng = np.random.default_rng(0)
    samples = noisy(rng)
    for paired in (True, False):
        c = regress.compare_frames(*frames({"a": (samples, samples)}), paired=paired)
        (cell,) = c.cells
        assert cell.verdict == regress.UNCHANGED and cell.ratio == pytest.approx(1.0)
        assert cell.p_value == 1.0 and c.exit_code == 0 and cell.paired is paired


def test_exact_double_paired_known_answer():
    rng = np.random.default_rng(1)
    base = noisy(rng)
    ratio, low, high, p = regress.ratio_statistics(base, 2 * base, paired=True)
    assert (ratio, low, high) == pytest.approx((2.0, 2.0, 2.0))
    assert p < 1e-4  # 20 tied positive differences: normal approximation, ~1.2e-5


def test_two_fold_slowdown_flagged_paired_and_unpaired():
    rng = np.random.default_rng(2)
    b, c = paired_set(rng, 2.0, drift=0.02)
    for paired in (True, False):
        comp = regress.compare_frames(*frames({"a": (b, c)}), paired=paired, unpaired_ok=True)
        (cell,) = comp.regressions
        assert cell.ratio == pytest.approx(2.0, rel=0.1)
        assert cell.ci_low > 1.05 and comp.exit_code == 1


def test_unpaired_verdicts_are_advisory_and_say_so_first_unless_asked():
    rng = np.random.default_rng(2)
    b, c = paired_set(rng, 2.0, drift=0.02)
    comp = regress.compare_frames(*frames({"a": (b, c)}), paired=False)
    assert len(comp.regressions) == 1 and comp.advisory and comp.exit_code == 0
    assert comp.warnings[0].startswith("unpaired:") and "process effects" in comp.warnings[0]
    assert "--unpaired" in comp.warnings[0]
    text = regress.to_markdown(comp)
    assert text.startswith("## gradsweep: 1 regression(s) (unpaired, advisory)")
    assert text.splitlines()[2].startswith("> :warning: unpaired:")
    root = ET.fromstring(regress.to_junit(comp))
    assert root.find(".//failure") is None and "advisory" in root.find(".//system-out").text
    gated = regress.compare_frames(*frames({"a": (b, c)}), paired=False, unpaired_ok=True)
    assert gated.exit_code == 1 and "anyway (--unpaired)" in gated.warnings[0]
    paired = regress.compare_frames(*frames({"a": (b, c)}), paired=True)
    assert not any(w.startswith("unpaired") for w in paired.warnings)


def blocked(rng, factor, pairs=5, rounds=10, tau=0.01, cv=0.03, pair_bias=None):
    """Base and candidate rows' samples with blocks and rounds (process pairs)."""
    blocks = np.repeat(np.arange(pairs), rounds)
    rounds_ = np.tile(np.arange(rounds), pairs)
    bias = rng.normal(0, tau, pairs) if pair_bias is None else np.asarray(pair_bias)
    drift = rng.normal(0, 0.3, pairs * rounds)
    b = BASE_NS * np.exp(drift + rng.normal(0, cv, pairs * rounds))
    c = factor * BASE_NS * np.exp(drift + bias[blocks] + rng.normal(0, cv, pairs * rounds))
    extra = {"sample_block": list(blocks), "sample_round": list(rounds_)}
    return (b, extra), (c, extra)


def blocked_frames(cells):
    base = pd.DataFrame([row(k, b[0], **b[1]) for k, (b, _) in cells.items()])
    cand = pd.DataFrame([row(k, c[0], **c[1]) for k, (_, c) in cells.items()])
    return base, cand


def test_paired_sweeps_with_blocks_use_the_random_effects_interval_over_pairs():
    rng = np.random.default_rng(11)
    # each process pair has its own bias (sd 4%): pairing by sample alone finds the
    # candidate slower, over pairs it is the pairs' own spread
    cells = {"a": blocked(rng, 1.0, pair_bias=[0.05, 0.04, -0.03, 0.06, -0.02], cv=0.01)}
    comp = regress.compare_frames(*blocked_frames(cells), paired=True)
    (cell,) = comp.cells
    assert cell.method == regress.RANDOM_EFFECTS and cell.blocks == 5
    assert cell.ci_low < 1.0 < cell.ci_high and cell.verdict != regress.REGRESSION
    by_index = regress.ratio_statistics(cells["a"][0][0], cells["a"][1][0], paired=True)
    assert by_index[3] < 0.01  # pairing by sample alone calls it significant
    slow = regress.compare_frames(*blocked_frames({"a": blocked(rng, 1.2)}), paired=True)
    assert slow.cells[0].verdict == regress.REGRESSION and slow.exit_code == 1
    assert slow.cells[0].ratio == pytest.approx(1.2, rel=0.03)


def test_random_effects_cells_are_unchanged_or_inconclusive_by_their_interval():
    rng = np.random.default_rng(12)
    tight = blocked(rng, 1.0, pairs=8, tau=0.002, cv=0.01)
    loose = blocked(rng, 1.0, pairs=3, tau=0.04, cv=0.05)
    comp = regress.compare_frames(*blocked_frames({"t": tight, "l": loose}), paired=True)
    verdicts = {c.cell_id: c.verdict for c in comp.cells}
    assert verdicts == {"t": regress.UNCHANGED, "l": regress.INCONCLUSIVE}
    assert comp.exit_code == 0 and "1 inconclusive" in regress.summary_line(comp)
    assert ":white_circle: inconclusive" in regress.to_markdown(comp)


def test_p_values_are_adjusted_across_cells_benjamini_hochberg():
    rng = np.random.default_rng(13)
    cells = {f"c{i}": blocked(rng, 1.0) for i in range(6)}
    comp = regress.compare_frames(*blocked_frames(cells), paired=True)
    raw = [c.p_value for c in comp.cells]
    adjusted = [c.p_adjusted for c in comp.cells]
    assert adjusted == pytest.approx(list(stats.fdr_adjusted(raw)))
    assert all(a >= r for a, r in zip(adjusted, raw))


def test_pairing_cancels_drift_that_hides_a_change_unpaired():
    rng = np.random.default_rng(3)
    b, c = paired_set(rng, 1.25, cv=0.02, drift=0.4)
    paired = regress.compare_frames(*frames({"a": (b, c)}), paired=True)
    unpaired = regress.compare_frames(*frames({"a": (b, c)}), paired=False)
    assert paired.cells[0].verdict == regress.REGRESSION
    assert unpaired.cells[0].verdict == regress.UNCHANGED


def test_three_percent_change_is_significant_but_under_the_threshold():
    rng = np.random.default_rng(4)
    b, c = paired_set(rng, 1.03, cv=0.002)
    comp = regress.compare_frames(*frames({"a": (b, c)}), paired=True)
    cell = comp.cells[0]
    assert cell.p_value < 0.01 and cell.ratio == pytest.approx(1.03, rel=0.01)
    assert cell.verdict == regress.UNCHANGED and comp.exit_code == 0
    looser = regress.compare_frames(*frames({"a": (b, c)}), paired=True, threshold=0.02)
    assert looser.cells[0].verdict == regress.REGRESSION


def test_improvement_is_reported_and_does_not_fail():
    rng = np.random.default_rng(5)
    b, c = paired_set(rng, 0.5)
    comp = regress.compare_frames(*frames({"a": (b, c)}), paired=True)
    assert [x.cell_id for x in comp.improvements] == ["a"]
    assert comp.exit_code == 0


def test_decide_needs_significance_and_effect():
    assert regress.decide(2.0, 0.02) == regress.UNCHANGED
    assert regress.decide(2.0, 0.001) == regress.REGRESSION
    assert regress.decide(1.05, 0.001) == regress.UNCHANGED  # "more than" the threshold
    assert regress.decide(0.9, 0.001) == regress.IMPROVEMENT


def test_cells_not_ok_or_missing_are_listed_not_compared():
    rng = np.random.default_rng(6)
    s = noisy(rng)
    base = pd.DataFrame([row("a", s), row("b", s), row("c", s)])
    cand = pd.DataFrame([row("a", s), row("b", [], status="incorrect",
                                          error="max_rel_err 0.5 exceeds"), row("d", s)])
    comp = regress.compare_frames(base, cand, paired=True)
    assert [x.cell_id for x in comp.cells] == ["a"]
    listed = {u.cell_id: (u.base_status, u.candidate_status) for u in comp.uncompared}
    assert listed == {"b": ("ok", "incorrect"), "c": ("ok", "missing"),
                      "d": ("missing", "ok")}
    assert "max_rel_err 0.5" in next(u.reason for u in comp.uncompared if u.cell_id == "b")


def test_unequal_sample_counts_fall_back_to_unpaired():
    rng = np.random.default_rng(7)
    comp = regress.compare_frames(*frames({"a": (noisy(rng, 20), noisy(rng, 15))}), paired=True)
    assert comp.cells[0].paired is False


def test_machine_difference_warning_names_the_fields():
    rng = np.random.default_rng(8)
    s = noisy(rng)
    base, cand = frames({"a": (s, s)}, host="h2", numpy_version="2.3.0")
    comp = regress.compare_frames(base, cand, paired=True)
    assert len(comp.warnings) == 2
    assert "host h1 (base) vs h2 (candidate)" in comp.warnings[0]
    assert "numpy_version" in comp.warnings[1]
    same = regress.compare_frames(*frames({"a": (s, s)}), paired=True)
    assert same.warnings == ()


def test_bad_settings_are_bad_input():
    with pytest.raises(BadInput, match="--alpha"):
        regress.check_settings(1.5, 0.05)
    with pytest.raises(BadInput, match="--threshold"):
        regress.check_settings(0.01, -0.1)


def mixed_comparison():
    rng = np.random.default_rng(9)
    slow = paired_set(rng, 2.0)
    same = paired_set(rng, 1.0)
    base = pd.DataFrame([row("slow", slow[0]), row("same", same[0]), row("bad", same[0])])
    cand = pd.DataFrame([row("slow", slow[1], host="h2"), row("same", same[1], host="h2"),
                         row("bad", [], status="error", error="RuntimeError: x|y", host="h2")])
    return regress.compare_frames(base, cand, paired=True, base_sweep="B1", candidate_sweep="C1")


def test_markdown_lists_regressions_first_warnings_and_uncompared():
    text = regress.to_markdown(mixed_comparison())
    assert text.startswith("## gradsweep: 1 regression(s)")
    lines = text.splitlines()
    table = [line for line in lines if line.startswith("| ")]
    assert "regression" in table[1] and "vslow" in table[1]  # after the header row
    assert "`B1`" in text and "`C1`" in text and "paired" in text
    assert "> :warning: different machines: host h1 (base) vs h2 (candidate)" in text
    assert "### Not compared" in text and "RuntimeError: x\\|y" in text


def test_junit_has_a_testcase_per_cell_and_a_failure_per_regression():
    root = ET.fromstring(regress.to_junit(mixed_comparison()))
    suite = root.find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    assert suite.get("skipped") == "1"
    cases = suite.findall("testcase")
    assert len(cases) == 3
    failures = [c for c in cases if c.find("failure") is not None]
    assert len(failures) == 1 and "vslow" in failures[0].get("name")
    assert "slower" in failures[0].find("failure").get("message")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["paired"] == "true" and "host" in props["warning"]


def test_write_reports_appends_to_the_github_step_summary(tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv(regress.STEP_SUMMARY_ENV, str(summary))
    comp = mixed_comparison()
    regress.write_reports(comp, tmp_path / "r.md", tmp_path / "r.xml")
    assert (tmp_path / "r.md").read_text() == regress.to_markdown(comp)
    assert summary.read_text() == "# earlier step\n" + regress.to_markdown(comp)
    ET.parse(tmp_path / "r.xml")


# --------------------------------------------------------------------------- stored sweeps


def store_sweep(ds, sweep_id, rows, ci_run=None, role="plain"):
    store.write(ds, "sweeps", sweep_id, [{"name": "t", "event": "finished",
                                          "status": "finished", "at": datetime.now(UTC),
                                          "role": role, "ci_run": ci_run}])
    store.write(ds, "cells", sweep_id, rows)


def stored_pair(tmp_path, factor, ci_run=("r1", "r1")):
    rng = np.random.default_rng(10)
    ds = store.resolve(tmp_path / "results")
    b, c = paired_set(rng, factor)
    store_sweep(ds, "20260101T000000Z-aaaa", [row("x", b)], ci_run[0], "base")
    store_sweep(ds, "20260101T000001Z-bbbb", [row("x", c)], ci_run[1], "candidate")
    return ds


def test_shared_ci_run_selects_paired_else_unpaired(tmp_path):
    ds = stored_pair(tmp_path, 1.0)
    comp = regress.compare_sweeps(ds, "20260101T000000Z-aaaa", ds, "20260101T000001Z-bbbb")
    assert comp.paired and comp.cells[0].paired
    other = stored_pair(tmp_path / "2", 1.0, ci_run=("r1", "r2"))
    comp = regress.compare_sweeps(other, "20260101T000000Z-aaaa", other, "latest")
    assert not comp.paired and comp.candidate_sweep == "20260101T000001Z-bbbb"
    plain = stored_pair(tmp_path / "3", 1.0, ci_run=(None, None))
    assert not regress.compare_sweeps(plain, "20260101T000000Z-aaaa", plain, "latest").paired


def test_compare_sweeps_in_two_datasets(tmp_path):
    ds = stored_pair(tmp_path, 2.0)
    other = store.resolve(tmp_path / "other")
    samples = store.read(ds, "cells", ["20260101T000001Z-bbbb"])["samples_ns"].iloc[0]
    store_sweep(other, "20260101T000002Z-cccc", [row("x", samples)])
    comp = regress.compare_sweeps(ds, "20260101T000000Z-aaaa", other, "latest")
    assert not comp.paired and comp.regressions and comp.exit_code == 0  # advisory
    gated = regress.compare_sweeps(ds, "20260101T000000Z-aaaa", other, "latest",
                                   unpaired_ok=True)
    assert gated.exit_code == 1


def test_cli_compare_exit_codes_and_reports(tmp_path, capsys):
    ds = stored_pair(tmp_path, 2.0)
    md, xml = tmp_path / "r.md", tmp_path / "r.xml"
    code = main(["compare", "20260101T000000Z-aaaa", "latest", "--results", ds.root,
                 "--markdown", str(md), "--junit", str(xml)])
    assert code == 1
    out = capsys.readouterr().out
    assert "regression" in out and "1 regression(s)" in out
    assert "regression" in md.read_text() and ET.parse(xml).find(".//failure") is not None
    same = stored_pair(tmp_path / "same", 1.0)
    assert main(["compare", "20260101T000000Z-aaaa", "latest", "--results", same.root]) == 0
    assert main(["compare", "20260101T000000Z-zzzz", "latest", "--results", ds.root]) == 2
    assert main(["compare", "latest", "latest", "--results", ds.root]) == 2
    assert main(["compare", "20260101T000000Z-aaaa", "latest", "--results", ds.root,
                 "--alpha", "2"]) == 2
    assert "gradsweep: error:" in capsys.readouterr().err


def test_compare_command_gates_unpaired_sweeps_only_when_asked(tmp_path):
    from io import StringIO

    from rich.console import Console

    from gradsweep.cli.gate import compare_command

    ds = stored_pair(tmp_path, 2.0, ci_run=("r1", "r2"))
    out = StringIO()
    args = ("20260101T000000Z-aaaa", "latest")
    assert compare_command(*args, results=ds.root, console=Console(file=out, width=200)) == 0
    assert out.getvalue().startswith("warning: unpaired:")
    assert compare_command(*args, results=ds.root, unpaired=True,
                           console=Console(file=StringIO())) == 1
