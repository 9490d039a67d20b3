"""``gradsweep report``: records, formats, failed cells apart, escaping, the CLI."""

import csv
import io

import pytest

from benchmarks import synthetic
from gradsweep import report, store
from gradsweep.cli.app import main
from gradsweep.impls.registry import load
from gradsweep.spec import registry_for

HOSTILE_VARIANT = "rnn/buffers=<script>alert(1)</script>,wgrad=batched,clip=none"
SWEEP = "20260101T000000Z-test"


def hostile_row(rows: list[dict]) -> dict:
    """A copy of the first ok rnn row under a variant name full of markup."""
    first = next(r for r in rows if r["kernel"] == "rnn" and r["status"] == "ok")
    return {**first, "variant": HOSTILE_VARIANT, "cell_id": "hostile000000000",
            "warnings": ["outliers: 2 of 15 <b>samples</b>"]}


@pytest.fixture
def dataset(tmp_path):
    ds = store.resolve(tmp_path / "results")
    rows = synthetic.write_sweep(ds, SWEEP, 400)
    store.write(ds, "cells", SWEEP, [hostile_row(rows)])
    return ds


def test_ranked_records_exclude_failed_cells_which_are_listed_apart(dataset):
    rep = report.load_report(dataset, "latest")
    assert rep.sweep_id == SWEEP and rep.name == "synthetic" and rep.status == "finished"
    failed_ids = {f.cell_id for f in rep.failed}
    assert failed_ids and not failed_ids & {c.cell_id for c in rep.cells}
    assert {f.status for f in rep.failed} <= set(report.UNRANKED)
    assert all(f.error for f in rep.failed)


def test_each_group_has_places_from_one_and_a_pareto_front(dataset):
    rep = report.load_report(dataset, "latest")
    for _, cells in rep.groups():
        assert cells[0].place == 1 and any(c.pareto for c in cells)
        assert cells[0].letters.startswith("a") and all(c.letters for c in cells)
        assert [c.place for c in cells] == sorted(c.place for c in cells)
        assert min(c.memory_place for c in cells) == 1
    base = [c for c in rep.cells if c.variant == "rnn/buffers=list,wgrad=step,clip=none"]
    assert base and all(c.speedup == pytest.approx(1.0) for c in base)
    assert all(c.speedup_peer is not None for c in rep.cells if c.kernel == "rnn")


def test_overall_places_only_variants_present_at_every_shape(dataset):
    rep = report.load_report(dataset, "latest")
    for o in rep.overall:
        assert (o.place is None) == (o.shapes < o.total_shapes)
    hostile = [o for o in rep.overall if o.variant == HOSTILE_VARIANT]
    assert hostile and all(o.place is None for o in hostile)


def test_markdown_escapes_names_and_errors(dataset):
    md = report.to_markdown(report.load_report(dataset, "latest"))
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert "## cells not ranked" in md and "### overall" in md


def test_csv_has_one_record_kind_per_row_and_raw_units(dataset):
    rep = report.load_report(dataset, "latest")
    rows = list(csv.DictReader(io.StringIO(report.to_csv(rep))))
    kinds = [r["record"] for r in rows]
    assert kinds.count("cell") == len(rep.cells) and kinds.count("failed") == len(rep.failed)
    assert kinds.count("overall") == len(rep.overall)
    hostile = next(r for r in rows if r["variant"] == HOSTILE_VARIANT and r["record"] == "cell")
    assert "outliers" in hostile["warnings"] and float(hostile["median_ns"]) > 0
    assert all(r["letters"] for r in rows if r["record"] == "cell")


def test_cli_report_formats_and_exit_codes(dataset, capsys):
    args = ["--results", dataset.root]
    assert main(["report", *args]) == 0  # failed cells are listed, not an error
    text = capsys.readouterr().out
    assert "cells not ranked" in text and "<script>alert(1)</script>" in text  # rich: text
    assert main(["report", "latest", "--format", "md", *args]) == 0
    assert capsys.readouterr().out.startswith("# gradsweep report: synthetic")
    assert main(["report", SWEEP, "--format", "csv", *args]) == 0
    assert capsys.readouterr().out.startswith("record,kernel,")
    assert main(["report", "nope", *args]) == 2
    assert main(["report", "--format", "xml", *args]) == 2


def test_a_plugin_that_cannot_be_imported_falls_back_with_a_note():
    registry, notes = registry_for(["no_such_plugin_module"], fallback=True)
    assert "rnn" in registry.kernels and "no_such_plugin_module" in notes[0]
    assert report.plugins_of('plugins = ["a", "b"]\n') == ("a", "b")
    assert report.plugins_of("not toml [") == ()


def test_build_is_pure_and_handles_no_registry():
    rows = synthetic.cells(100)
    import pandas as pd
    rep = report.build(pd.DataFrame(rows))
    assert rep.cells and all(c.speedup is None for c in rep.cells)
    assert report.build(pd.DataFrame(rows), load()).cells[0].variant == rep.cells[0].variant


def test_cells_are_listed_in_place_order_then_by_ratio_to_the_fastest():
    """A place-1 member with the larger median (its paired ratio put it first) is
    listed before a place-2 member with the smaller one; NaN ratios go last."""
    def cell(variant, place, median, ratio):
        return report.RankedCell(
            kernel="rnn", shape="N=1", dtype="float64", place=place, variant=variant,
            median_ns=median, ci_low_ns=None, ci_high_ns=None, speedup=None,
            speedup_peer=None, peak_bytes=None, memory_place=None, pareto=False, flops=None,
            gflops=None, peak_fraction=None, warnings=(), cell_id=variant,
            ratio_fastest=ratio)
    cells = [cell("rnn/c", 2, 0.9e6, 1.06), cell("rnn/d", 2, 1.2e6, float("nan")),
             cell("rnn/b", 1, 1.0e6, 1.01), cell("rnn/a", 1, 1.1e6, 1.0)]
    assert [c.variant for c in sorted(cells, key=report.place_order)] == [
        "rnn/a", "rnn/b", "rnn/c", "rnn/d"]
