"""records: every row the store writes is a record whose fields are the table's columns."""

from dataclasses import fields
from datetime import UTC, datetime

import pytest

from gradsweep import records, store
from gradsweep.records import Cell, CellResult, NodeProbe, ProfileLine, SweepEvent

TABLES = {"cells": CellResult, "sweeps": SweepEvent, "nodes": NodeProbe,
          "profiles": ProfileLine}
#: Fields of a record that the store writes under another shape (maps, lists).
DERIVED = {"cells": {"axes", "dims"}}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_field_is_a_column(table):
    columns = set(store.SCHEMAS[table].names)
    names = {f.name for f in fields(TABLES[table])}
    assert names - columns == set(), f"{table}: fields without a column"


def test_a_node_probe_round_trips_through_the_store(tmp_path):
    ds = store.resolve(tmp_path)
    probe = NodeProbe("n1", "host", "cpu", 2, "openblas", 90.0, 40.0)
    store.write(ds, "nodes", "s1", [probe])
    row = store.read(ds, "nodes").iloc[0]
    assert (row["node"], row["gemm_gflops_float64"]) == ("n1", 40.0)
    assert records.peaks_of([probe]) == {"n1": {"float32": 90.0, "float64": 40.0}}


def test_a_sweep_event_round_trips_through_the_store(tmp_path):
    ds = store.resolve(tmp_path)
    event = SweepEvent(name="x", event="started", status="running", spec="", spec_hash="h",
                       spec_path=None, cells_total=3, git_commit=None, git_dirty=None,
                       host="h", at=datetime(2026, 1, 1, tzinfo=UTC))
    store.write(ds, "sweeps", "s1", [event])
    row = store.sweeps(ds).iloc[0]
    assert (row["name"], row["status"], row["cells_total"], row["role"]) == (
        "x", "running", 3, "plain")


def test_cell_id_depends_only_on_what_is_measured():
    cell = Cell("rnn", "rnn/buffers=list,wgrad=step,clip=none", (("N", 2),), "float64", 1, 0,
                1.0, 5.0)
    assert len(cell.cell_id) == records.CELL_ID_HEX
    assert cell.cell_id == records.cell_id_of(cell)
    other = Cell(*[getattr(cell, f.name) for f in fields(cell)][:-1], 6.0)
    assert other.cell_id != cell.cell_id


def test_statuses_and_one_line():
    assert set(records.FAILED) < set(records.CELL_STATUSES)
    assert records.one_line("a\n  b\tc") == "a b c"
    assert len(records.one_line("x" * 5000)) == records.MAX_ERROR_CHARS
    assert records.new_sweep_id() != records.new_sweep_id()


def test_block_progress_eta_is_the_pace_so_far_times_the_blocks_left():
    assert records.BlockProgress(0, 40, 3.0).eta_s is None  # no pace yet
    assert records.BlockProgress(10, 40, 5.0).eta_s == pytest.approx(15.0)
    assert records.BlockProgress(40, 40, 20.0).eta_s == 0.0
    assert records.BlockProgress(41, 40, 20.0).eta_s == 0.0  # never negative
