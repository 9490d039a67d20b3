"""The Parquet dataset: schemas, partition layout, whole files, dedupe on read."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from gradsweep import store
from gradsweep.errors import BadInput


def cell_row(cell_id: str, median: float, **extra) -> dict:
    return {"cell_id": cell_id, "kernel": "rnn", "variant": "rnn/buffers=list", "status": "ok",
            "median_ns": median, "samples_ns": [median, median], "axes": [("buffers", "list")],
            "dims": [("N", 2)], "N": 2, "shape": "N=2", "dtype": "float64", **extra}


def test_write_then_read_with_sweep_id_from_the_path(tmp_path):
    ds = store.resolve(tmp_path / "r")
    path = store.write(ds, "cells", "s1", [cell_row("a", 1.0), cell_row("b", 2.0)])
    assert "/cells/sweep_id=s1/" in path and path.endswith(".parquet")
    frame = store.read(ds, "cells")
    assert sorted(frame["cell_id"]) == ["a", "b"] and set(frame["sweep_id"]) == {"s1"}
    assert (frame["schema_version"] == store.SCHEMA_VERSION).all()


def test_sweep_id_is_not_a_column_inside_files(tmp_path):
    ds = store.resolve(tmp_path / "r")
    path = store.write(ds, "cells", "s1", [cell_row("a", 1.0)])
    import pyarrow.parquet as pq
    assert "sweep_id" not in pq.read_schema(path).names
    # so plain pandas and pyarrow read the directory
    assert len(pd.read_parquet(tmp_path / "r" / "cells")) == 1
    assert pads.dataset(tmp_path / "r" / "cells", partitioning="hive").count_rows() == 1


def test_readers_skip_temporary_files_and_keep_the_newest_duplicate(tmp_path):
    ds = store.resolve(tmp_path / "r")
    store.write(ds, "cells", "s1", [cell_row("a", 1.0)])
    store.write(ds, "cells", "s1", [cell_row("a", 5.0)])
    (tmp_path / "r" / "cells" / "sweep_id=s1" / ".partial.parquet.tmp").write_bytes(b"junk")
    frame = store.read(ds, "cells")
    assert len(frame) == 1 and frame["median_ns"].iloc[0] == 5.0


def test_different_kernels_share_one_schema(tmp_path):
    ds = store.resolve(tmp_path / "r")
    store.write(ds, "cells", "s1", [cell_row("a", 1.0)])
    store.write(ds, "cells", "s1", [{**cell_row("b", 1.0), "kernel": "deconv2d", "N": None,
                                     "Hin": 8, "method": "gather"}])
    frame = pd.read_parquet(tmp_path / "r" / "cells")
    assert set(frame["kernel"]) == {"rnn", "deconv2d"} and frame["Hin"].notna().sum() == 1


def test_sweeps_latest_event_wins_and_latest_resolves(tmp_path):
    ds = store.resolve(tmp_path / "r")
    t = pd.Timestamp("2026-01-01", tz="UTC")
    store.write(ds, "sweeps", "s1", [{"name": "x", "event": "started", "status": "running",
                                      "at": t}])
    store.write(ds, "sweeps", "s1", [{"name": "x", "event": "finished", "status": "finished",
                                      "at": t + pd.Timedelta(seconds=5)}])
    store.write(ds, "sweeps", "s2", [{"name": "y", "event": "started", "status": "running",
                                      "at": t + pd.Timedelta(seconds=9)}])
    sweeps = store.sweeps(ds).set_index("sweep_id")
    assert sweeps.loc["s1", "status"] == "finished" and sweeps.loc["s2", "status"] == "running"
    assert store.resolve_sweep(ds, "latest") == "s2"
    with pytest.raises(BadInput, match="unknown sweep"):
        store.resolve_sweep(ds, "s3")


@pytest.mark.parametrize("bad", ["../x", "a/b", ".hidden", ""])
def test_sweep_ids_never_become_paths(tmp_path, bad):
    with pytest.raises(BadInput):
        store.write(store.resolve(tmp_path / "r"), "cells", bad, [cell_row("a", 1.0)])


def test_file_uri_dataset(tmp_path):
    ds = store.resolve(f"file://{tmp_path}/u")
    store.write(ds, "cells", "s1", [cell_row("a", 1.0)])
    assert len(store.read(ds, "cells")) == 1 and (tmp_path / "u" / "cells").is_dir()


@pytest.mark.parametrize("table", list(store.SCHEMAS))
def test_a_table_never_written_reads_empty_with_its_columns(tmp_path, table):
    for where in (tmp_path / "none", f"file://{tmp_path}/none"):
        frame = store.read(store.resolve(where), table)
        assert len(frame) == 0 and list(frame.columns) == [*store.SCHEMAS[table].names,
                                                           "sweep_id"]


def test_every_table_has_its_own_directory_once_anything_is_written(tmp_path):
    ds = store.resolve(tmp_path / "r")
    store.write(ds, "sweeps", "s1", [{"name": "x", "event": "started", "status": "running"}])
    for table in ("sweeps", "cells", "nodes", "profiles"):
        path = tmp_path / "r" / table
        assert ds.table_path(table) == str(path) and path.is_dir()
        assert len(pd.read_parquet(path)) == (table == "sweeps")  # plain pandas: no error


# --- schema versions -------------------------------------------------------------------------

FIXTURE_V1 = Path(__file__).parent / "fixtures" / "v1"
OLD_SWEEP = "20250101T000000Z-0001"


def v1_dataset(tmp_path) -> store.Dataset:
    """A copy of the stored schema-version-1 dataset (cells without n_samples)."""
    shutil.copytree(FIXTURE_V1, tmp_path / "v1")
    return store.resolve(tmp_path / "v1")


def test_fixture_really_is_version_1():
    path = next((FIXTURE_V1 / "cells").rglob("*.parquet"))
    assert "n_samples" not in pq.read_schema(path).names
    assert set(pq.read_table(path)["schema_version"].to_pylist()) == {1}


def test_readers_migrate_version_1_rows(tmp_path):
    ds = v1_dataset(tmp_path)
    store.write(ds, "cells", OLD_SWEEP, [cell_row("new", 1.0, samples_ns=[1.0] * 3)])
    frame = store.read(ds, "cells").set_index("cell_id")
    assert (frame["schema_version"] == store.SCHEMA_VERSION).all()
    assert frame["n_samples"].to_dict() == {f"{0:016x}": 5, f"{1:016x}": 5, f"{2:016x}": 0,
                                            "new": 3}
    # a projection that names only the new column still migrates
    only = store.read(ds, "cells", columns=["n_samples"])
    assert sorted(only["n_samples"]) == [0, 3, 5, 5]


def test_old_rows_become_one_unpaired_block_on_their_clock(tmp_path):
    """v1/v2 cells lift to v3: one block (when they have samples), no rounds, wall clock
    (cpu for the gate's rows, whose cpu-clock warning says so); the ranking is unpaired."""
    from gradsweep import rank

    ds = v1_dataset(tmp_path)
    gate_row = {**cell_row("gate", 1.0, samples_ns=[1.0] * 5),
                "warnings": ["cpu-clock: samples are CPU time"], "schema_version": 2}
    table = store.to_table("cells", [gate_row])
    table = table.set_column(table.schema.get_field_index("schema_version"),
                             "schema_version", pa.array([2], pa.int32()))
    store.write_arrow(ds, "cells", OLD_SWEEP, table)
    frame = store.read(ds, "cells").set_index("cell_id")
    assert (frame["schema_version"] == 3).all()
    assert frame.loc["gate", "clock"] == "cpu"
    assert set(frame.drop(index="gate")["clock"]) == {"wall"}
    with_samples = frame["n_samples"] > 0
    assert (frame.loc[with_samples, "blocks"] == 1).all()
    assert frame.loc[~with_samples, "blocks"].isna().all()
    ranked = rank.rank(frame.reset_index())
    assert len(ranked) and not ranked["paired"].any()


def test_compaction_rewrites_old_rows_at_the_current_version(tmp_path):
    ds = v1_dataset(tmp_path)
    before = store.read(ds, "cells")
    store.compact(ds)
    (path,) = store.files(ds, "cells")
    assert "n_samples" in pq.read_schema(path).names
    assert set(pq.read_table(path)["schema_version"].to_pylist()) == {store.SCHEMA_VERSION}
    after = store.read(ds, "cells")
    assert sorted(after["cell_id"]) == sorted(before["cell_id"])
    assert store.sweeps(ds).loc[0, "status"] == "finished"


def test_every_older_version_has_a_migration_or_an_unchanged_schema():
    for table in store.SCHEMAS:
        for version in range(1, store.SCHEMA_VERSION):
            step = store.MIGRATIONS.get((table, version))
            assert step is None or set(step.needs) <= set(store.SCHEMAS[table].names)
    assert ("cells", 1) in store.MIGRATIONS


# --- corrupt and partial files ---------------------------------------------------------------

def test_a_corrupt_file_is_named_and_the_rest_is_read(tmp_path):
    ds = store.resolve(tmp_path / "r")
    store.write(ds, "cells", "s1", [cell_row("a", 1.0)])
    store.write(ds, "cells", "s2", [cell_row("b", 1.0)])
    bad = tmp_path / "r" / "cells" / "sweep_id=s1" / "broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet PAR1")
    with pytest.warns(store.CorruptFileWarning, match="corrupt file .*broken.parquet"):
        frame = store.read(ds, "cells")
    assert sorted(frame["cell_id"]) == ["a", "b"]
    (corrupt,) = frame.attrs["corrupt"]
    assert corrupt.path.endswith("sweep_id=s1/broken.parquet")
    # a read of another sweep never opens the broken file
    assert store.read(ds, "cells", ["s2"]).attrs["corrupt"] == ()


def test_hidden_and_underscore_paths_are_skipped(tmp_path):
    ds = store.resolve(tmp_path / "r")
    store.write(ds, "cells", "s1", [cell_row("a", 1.0)])
    part = tmp_path / "r" / "cells" / "sweep_id=s1"
    (part / "_SUCCESS").write_text("")
    (part / "_tmp").mkdir()
    (part / "_tmp" / "x.parquet").write_bytes(b"partial")
    (part / ".y.parquet.tmp").write_bytes(b"partial")
    assert len(store.files(ds, "cells")) == 1
    assert len(store.read(ds, "cells")) == 1


# --- concurrent writers ----------------------------------------------------------------------

WRITER = """
import sys
from gradsweep import store
root, sweep, tag, batches, rows = sys.argv[1:6]
ds = store.resolve(root)
for b in range(int(batches)):
    store.write(ds, "cells", sweep, [
        {"cell_id": f"{tag}-{b}-{i}", "kernel": "rnn", "variant": "rnn/x", "status": "ok",
         "samples_ns": [1.0] * 15, "median_ns": 1.0} for i in range(int(rows))])
    store.write(ds, "sweeps", sweep, [{"name": tag, "event": f"batch{b}", "status": "running",
                                       "at": None}])
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    root = str(tmp_path / "r")
    batches, rows = 40, 5
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, root, sweep, tag, str(batches),
                               str(rows)], cwd=Path(__file__).parent.parent)
             for sweep, tag in (("shared", "p1"), ("shared", "p2"))]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    ds = store.resolve(root)
    cells = store.read(ds, "cells")
    assert len(cells) == 2 * batches * rows and cells["cell_id"].is_unique
    assert len(store.files(ds, "cells")) == 2 * batches
    store.compact(ds)
    assert len(store.files(ds, "cells")) == 1 and len(store.read(ds, "cells")) == len(cells)


# --- compaction and deletion -----------------------------------------------------------------

def test_compact_merges_each_partition_without_loss_or_duplicates(tmp_path):
    ds = store.resolve(tmp_path / "r")
    for i in range(5):
        store.write(ds, "cells", "s1", [cell_row(f"c{i}", float(i)), cell_row("dup", float(i))])
    store.write(ds, "cells", "s2", [cell_row("x", 1.0)])
    store.write(ds, "cells", "s2", [cell_row("y", 1.0)])
    before = store.read(ds, "cells").sort_values(["sweep_id", "cell_id"]).reset_index(drop=True)
    old_files = {p: Path(p).read_bytes() for p in store.files(ds, "cells", ["s1"])}
    done = store.compact(ds, "s1")
    assert {(c.table, c.sweep_id, c.files_before, c.rows) for c in done} == {
        ("cells", "s1", 5, 6)}
    assert len(store.files(ds, "cells", ["s1"])) == 1
    assert len(store.files(ds, "cells", ["s2"])) == 2  # another sweep untouched
    after = store.read(ds, "cells").sort_values(["sweep_id", "cell_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after, check_like=True)
    assert after.set_index("cell_id").loc["dup", "median_ns"] == 4.0
    # a crash after writing the merged file but before removing the old ones
    for path, data in old_files.items():
        Path(path).write_bytes(data)
    again = store.read(ds, "cells").sort_values(["sweep_id", "cell_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, again, check_like=True)


def test_compaction_streams_in_chunks_with_the_readers_dedupe(tmp_path, monkeypatch):
    """Chunks of files and small row groups: the same rows as the readers' in-memory dedupe
    (equal recorded_at: the file listed later), for cells and for the sweeps table."""
    monkeypatch.setattr(store, "COMPACT_FILES", 2)
    monkeypatch.setattr(store, "ROW_GROUP_ROWS", 3)
    ds = store.resolve(tmp_path / "r")
    tie = pd.Timestamp("2026-11-30T12:00:00Z")
    for i in range(7):
        rows = [cell_row(f"c{i}-{j}", float(j)) for j in range(4)]
        rows.append(cell_row("dup", float(i)))  # each file: a newer "dup"
        rows.append(cell_row("tie", float(i), recorded_at=tie))  # equal times
        store.write(ds, "cells", "s1", rows)
        store.write(ds, "sweeps", "s1", [{"name": "n", "event": "resumed", "status": "running",
                                          "at": tie + pd.Timedelta(seconds=i)}])
    before = {t: store.read(ds, t).sort_values(list(store.ROW_KEYS[t])).reset_index(drop=True)
              for t in ("cells", "sweeps")}
    done = {c.table: c for c in store.compact(ds, "s1")}
    assert done["cells"].files_before == 7 and done["cells"].rows == 7 * 4 + 2
    for table, frame in before.items():
        after = store.read(ds, table).sort_values(list(store.ROW_KEYS[table]))
        pd.testing.assert_frame_equal(frame, after.reset_index(drop=True), check_like=True)
    merged = pq.ParquetFile(store.files(ds, "cells", ["s1"])[0])
    assert merged.metadata.num_row_groups > 1 and merged.metadata.num_rows == 30
    cells = store.read(ds, "cells").set_index("cell_id")
    assert cells.loc["dup", "median_ns"] == 6.0 and cells.index.is_unique
    assert len(pd.read_parquet(tmp_path / "r" / "cells")) == 30  # plain pandas: no duplicate


def test_compact_sets_a_corrupt_file_aside_and_merges_the_rest(tmp_path):
    ds = store.resolve(tmp_path / "r")
    store.write(ds, "cells", "s1", [cell_row("a", 1.0)])
    store.write(ds, "cells", "s1", [cell_row("b", 1.0)])
    part = tmp_path / "r" / "cells" / "sweep_id=s1"
    (part / "bad.parquet").write_bytes(b"junk")
    with pytest.warns(store.CorruptFileWarning, match="bad.parquet"):
        (done,) = store.compact(ds)
    assert (done.files_before, done.rows, done.skipped) == (3, 2, "")
    (aside,) = done.set_aside
    kept = tmp_path / "r" / "cells" / "_corrupt" / "sweep_id=s1" / "bad.parquet"
    assert aside.path == str(part / "bad.parquet") and aside.kept_at == str(kept)
    assert kept.read_bytes() == b"junk" and f"moved to {kept}" in str(aside)
    assert len(store.files(ds, "cells")) == 1
    assert sorted(pd.read_parquet(tmp_path / "r" / "cells")["cell_id"]) == ["a", "b"]


def test_compact_of_a_partition_holding_only_a_corrupt_file(tmp_path):
    ds = store.resolve(tmp_path / "r")
    store.write(ds, "cells", "s2", [cell_row("a", 1.0)])
    part = tmp_path / "r" / "cells" / "sweep_id=s1"
    part.mkdir()
    (part / "bad.parquet").write_bytes(b"PAR1 not parquet PAR1")
    with pytest.warns(store.CorruptFileWarning):
        done = {c.sweep_id: c for c in store.compact(ds)}
    assert done["s1"].rows == 0 and len(done["s1"].set_aside) == 1
    assert done["s2"].skipped == "already compact"
    assert sorted(pd.read_parquet(tmp_path / "r" / "cells")["cell_id"]) == ["a"]


def test_delete_removes_a_sweep_from_every_table(tmp_path):
    ds = store.resolve(f"file://{tmp_path}/r")
    for sweep in ("s1", "s2"):
        store.write(ds, "cells", sweep, [cell_row("a", 1.0)])
        store.write(ds, "nodes", sweep, [{"node": "n"}])
        store.write(ds, "sweeps", sweep, [{"name": sweep, "event": "started",
                                           "status": "running"}])
    assert store.known_sweeps(ds) == ["s1", "s2"]
    assert store.delete(ds, "s1") == 3
    assert store.known_sweeps(ds) == ["s2"]
    assert set(store.read(ds, "cells")["sweep_id"]) == {"s2"}
    with pytest.raises(BadInput):
        store.delete(ds, "../s2")


def test_delete_also_removes_a_half_done_compaction_and_set_aside_files(tmp_path):
    ds = store.resolve(tmp_path / "r")
    store.write(ds, "cells", "s1", [cell_row("a", 1.0)])
    cells = tmp_path / "r" / "cells"
    (cells / ".new-sweep_id=s1").mkdir()
    (cells / "_corrupt" / "sweep_id=s1").mkdir(parents=True)
    (cells / "_corrupt" / "sweep_id=s1" / "bad.parquet").write_bytes(b"junk")
    assert store.delete(ds, "s1") == 2
    assert {p.name for p in cells.iterdir()} == {"_corrupt", store.LOCK}
    assert list((cells / "_corrupt").iterdir()) == []


def test_file_uri_compaction(tmp_path):
    ds = store.resolve(f"file://{tmp_path}/u")
    store.write(ds, "cells", "s1", [cell_row("a", 1.0)])
    store.write(ds, "cells", "s1", [cell_row("b", 1.0)])
    store.compact(ds)
    assert len(list((tmp_path / "u" / "cells").rglob("*.parquet"))) == 1
    assert len(store.read(ds, "cells")) == 2


def test_pandas_reads_every_kernels_cells_from_real_results(tmp_path):
    from gradsweep.records import Cell, skeleton

    ds = store.resolve(tmp_path / "r")
    rnn = Cell(kernel="rnn", variant="rnn/buffers=list,wgrad=step,clip=none",
               shape=(("N", 2), ("T", 3), ("D", 4), ("H", 5)), dtype="float64", threads=1, seed=0,
               clip_value=1.0, clip_norm=5.0)
    deconv = Cell(kernel="deconv2d", variant="deconv2d/method=gather",
                  shape=(("N", 1), ("Hin", 4), ("Win", 4), ("Cin", 2), ("Cout", 3), ("k", 3),
                         ("stride", 2), ("padding", 0), ("dilation", 1), ("output_padding", 0)),
                  dtype="float32", threads=1, seed=0, clip_value=1.0, clip_norm=5.0)
    store.write(ds, "cells", "s1", [skeleton(rnn, "ok").row()])
    store.write(ds, "cells", "s2", [skeleton(deconv, "ok").row()])
    frame = pd.read_parquet(tmp_path / "r" / "cells")
    assert sorted(frame["kernel"]) == ["deconv2d", "rnn"]
    assert set(frame["sweep_id"].astype(str)) == {"s1", "s2"}
    assert frame.set_index("kernel").loc["deconv2d", "Cout"] == 3


def test_one_file_holds_one_row_per_key_the_last_record_wins(tmp_path):
    ds = store.resolve(tmp_path / "r")
    path = store.write(ds, "cells", "s1", [cell_row("a", 1.0), cell_row("a", 2.0),
                                           cell_row("b", 3.0)])
    assert pq.read_table(path)["cell_id"].to_pylist() == ["a", "b"]
    assert store.read(ds, "cells").set_index("cell_id").loc["a", "median_ns"] == 2.0


def test_duplicates_across_files_are_dropped_for_projected_reads_too(tmp_path):
    ds = store.resolve(tmp_path / "r")
    store.write(ds, "cells", "s1", [cell_row("a", 1.0, status="error")])
    store.write(ds, "cells", "s1", [cell_row("a", 2.0, status="ok")])
    store.write(ds, "cells", "s2", [cell_row("a", 1.0, status="error")])
    frame = store.read(ds, "cells", columns=["status"]).set_index("sweep_id")
    assert frame["status"].to_dict() == {"s1": "ok", "s2": "error"}


def test_an_ending_event_at_the_same_instant_wins(tmp_path):
    ds = store.resolve(tmp_path / "r")
    t = pd.Timestamp("2026-01-01", tz="UTC")
    for status in ("finished", "running"):  # file order must not matter
        store.write(ds, "sweeps", "s1", [{"name": "x", "event": status, "status": status,
                                          "at": t}])
    assert store.sweeps(ds).loc[0, "status"] == "finished"


# --- plain pandas reads typed columns ----------------------------------------------------------

RNN_DIMS = {"N": 2, "T": 3, "D": 4, "H": 5}
DECONV_DIMS = {"N": 1, "Hin": 4, "Win": 4, "Cin": 2, "Cout": 3, "k": 3, "stride": 2,
               "padding": 0, "dilation": 1, "output_padding": 0}


def mixed_kernels(root) -> store.Dataset:
    """rnn and deconv2d cells (ok and error rows) over two sweeps, several files each."""
    from gradsweep.records import Cell, skeleton

    ds = store.resolve(root)
    for sweep in ("s1", "s2"):
        for kernel, variant, dims, status in [
                ("rnn", "rnn/buffers=list,wgrad=step,clip=none", RNN_DIMS, "ok"),
                ("deconv2d", "deconv2d/method=gather", DECONV_DIMS, "error")]:
            cell = Cell(kernel=kernel, variant=variant, shape=tuple(dims.items()),
                        dtype="float64", threads=1, seed=0, clip_value=1.0, clip_norm=5.0)
            store.write(ds, "cells", sweep, [skeleton(cell, status).row()])
    return ds


def assert_typed_dims(frame: pd.DataFrame) -> None:
    """Every dim column is Int64, <NA> exactly where the row's kernel has no such dim."""
    assert {str(frame[d].dtype) for d in store.DIM_COLUMNS} == {"Int64"}
    for _, row in frame.iterrows():
        dims = RNN_DIMS if row["kernel"] == "rnn" else DECONV_DIMS
        for d in store.DIM_COLUMNS:
            assert (row[d] is pd.NA) if d not in dims else row[d] == dims[d]
        assert dict(row["dims"]) == dims  # the map column holds the same values


def test_plain_pandas_reads_the_dims_of_mixed_kernels_as_nullable_integers(tmp_path):
    mixed_kernels(tmp_path / "r")
    frame = pd.read_parquet(tmp_path / "r" / "cells")
    assert len(frame) == 4
    assert_typed_dims(frame)
    assert not [c for c in frame.columns if c in store.DIM_COLUMNS
                and pd.api.types.is_float_dtype(frame[c])]
    projected = pd.read_parquet(tmp_path / "r" / "cells", columns=["kernel", "T", "Hin"])
    assert str(projected["T"].dtype) == str(projected["Hin"].dtype) == "Int64"


def test_axis_columns_are_strings_null_where_the_kernel_has_no_such_axis(tmp_path):
    mixed_kernels(tmp_path / "r")
    frame = pd.read_parquet(tmp_path / "r" / "cells").set_index("kernel")
    assert pd.api.types.is_string_dtype(frame["buffers"])
    assert set(frame.loc["rnn", "buffers"]) == {"list"}
    assert frame.loc["deconv2d", "buffers"].isna().all()
    assert set(frame.loc["deconv2d", "method"]) == {"gather"}
    for axes, buffers in zip(frame["axes"], frame["buffers"], strict=True):
        assert dict(axes).get("buffers") == (None if pd.isna(buffers) else buffers)


def test_gradsweeps_readers_give_plain_pandas_dtypes(tmp_path):
    ds = mixed_kernels(tmp_path / "r")
    plain = pd.read_parquet(tmp_path / "r" / "cells").drop(columns="sweep_id")
    ours = store.read(ds, "cells").drop(columns="sweep_id")
    assert list(ours.columns) == list(plain.columns)
    assert ours.dtypes.astype(str).to_dict() == plain.dtypes.astype(str).to_dict()
    assert_typed_dims(ours)
    assert str(store.read(ds, "cells", columns=["Hin"])["Hin"].dtype) == "Int64"
    assert str(store.read(ds, "cells", sweep_ids=["nope"])["T"].dtype) == "Int64"  # empty


def test_results_compact_keeps_the_dims_typed(tmp_path):
    from gradsweep.cli.app import main

    mixed_kernels(tmp_path / "r")
    assert main(["results", "compact", "--results", str(tmp_path / "r")]) == 0
    for sweep in ("s1", "s2"):
        [only] = (tmp_path / "r" / "cells" / f"sweep_id={sweep}").glob("*.parquet")
        assert store.has_pandas_dtypes("cells", pq.read_schema(only))
    assert_typed_dims(pd.read_parquet(tmp_path / "r" / "cells"))


def test_compaction_rewrites_a_file_written_without_pandas_dtypes(tmp_path):
    ds = mixed_kernels(tmp_path / "r")
    part = tmp_path / "r" / "cells" / "sweep_id=s1"
    rows = pa.concat_tables([pq.read_table(p) for p in sorted(part.glob("*.parquet"))])
    for p in part.glob("*.parquet"):
        p.unlink()
    pq.write_table(rows.replace_schema_metadata(None), part / "old.parquet")  # as before
    assert not store.has_pandas_dtypes("cells", pq.read_schema(part / "old.parquet"))
    [done] = [c for c in store.compact(ds, "s1") if c.table == "cells"]
    assert done.rows == 2 and not done.skipped
    [merged] = part.glob("*.parquet")
    assert store.has_pandas_dtypes("cells", pq.read_schema(merged))
    assert_typed_dims(pd.read_parquet(part))
    [again] = [c for c in store.compact(ds, "s1") if c.table == "cells"]
    assert again.skipped == "already compact"


def test_migrated_rows_are_written_with_pandas_dtypes(tmp_path):
    ds = v1_dataset(tmp_path)
    store.compact(ds)
    frame = pd.read_parquet(tmp_path / "v1" / "cells")
    assert len(frame) and (frame["schema_version"] == store.SCHEMA_VERSION).all()
    assert {str(frame[d].dtype) for d in store.DIM_COLUMNS} == {"Int64"}


def test_each_table_reads_by_its_own_path_empty_tables_too(tmp_path):
    mixed_kernels(tmp_path / "r")
    for table in store.SCHEMAS:
        frame = pd.read_parquet(tmp_path / "r" / table)  # no error, no other table's rows
        assert len(frame) == (4 if table == "cells" else 0)
        assert set(frame.columns) <= {*store.SCHEMAS[table].names, "sweep_id"}
        assert list(store.read(store.resolve(tmp_path / "r"), table).columns) == [
            *store.SCHEMAS[table].names, "sweep_id"]


def test_a_filtered_read_in_small_batches_keeps_exactly_the_matching_rows(tmp_path,
                                                                          monkeypatch):
    """Batches smaller than a file and a file, across files and after compaction: the rows
    a filter keeps are those of the whole read, newest per key."""
    monkeypatch.setattr(store, "FILTERED_BATCH_ROWS", 2)
    ds = store.resolve(tmp_path / "r")
    for i in range(3):
        store.write(ds, "cells", "s1", [cell_row(f"c{j}", float(10 * i + j)) for j in range(5)])
    wanted = ["c1", "c3", "c4"]
    for _ in range(2):  # three files, then one merged file
        whole = store.read(ds, "cells").set_index("cell_id").loc[wanted, "median_ns"]
        some = store.read(ds, "cells", columns=["median_ns"],
                          filter=pads.field("cell_id").isin(wanted))
        assert some.set_index("cell_id")["median_ns"].sort_index().to_dict() == whole.to_dict()
        assert whole.to_dict() == {"c1": 21.0, "c3": 23.0, "c4": 24.0}
        store.compact(ds, "s1")


def test_a_merge_plan_reads_keys_and_file_positions_not_file_names(tmp_path):
    """Rows come file by file with each file's position; a corrupt file in the middle
    leaves the others' masks aligned (newest per key; a tie goes to the file listed
    later)."""
    ds = store.resolve(tmp_path / "r")
    tie = pd.Timestamp("2026-11-30T12:00:00Z")
    store.write(ds, "cells", "s1", [cell_row("a", 1.0), cell_row("t", 1.0, recorded_at=tie)])
    part = tmp_path / "r" / "cells" / "sweep_id=s1"
    store.write(ds, "cells", "s1", [cell_row("b", 2.0), cell_row("a", 2.0)])
    store.write(ds, "cells", "s1", [cell_row("t", 3.0, recorded_at=tie)])
    paths = store.files(ds, "cells", ["s1"])
    paths = [paths[0], str(part / "bad.parquet"), *paths[1:]]
    (part / "bad.parquet").write_bytes(b"junk")
    with pytest.warns(store.CorruptFileWarning, match="bad.parquet"):
        plan = store._merge_plan(ds, "cells", paths)
    assert [c.path for c in plan.corrupt] == [paths[1]]
    ids = {p: pq.read_table(p, columns=["cell_id"])["cell_id"].to_pylist() for p in plan.keep}
    kept = sorted(i for p, mask in plan.keep.items() for i, k in zip(ids[p], mask) if k)
    assert kept == ["a", "b", "t"] and sum(m.sum() for m in plan.keep.values()) == 3
    newest = {i: p for p, mask in plan.keep.items() for i, k in zip(ids[p], mask) if k}
    assert newest["t"] == [p for p in paths if "t" in ids.get(p, ())][-1]
    assert newest["a"] == [p for p in paths if "b" in ids.get(p, ())][0]  # written later
