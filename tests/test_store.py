"""The Parquet dataset: schemas, partition layout, whole files, dedupe on read."""

import pandas as pd
import pyarrow.dataset as pads
import pytest

from bench import store
from bench.errors import BadInput


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


def test_missing_table_reads_empty(tmp_path):
    assert len(store.read(store.resolve(tmp_path / "none"), "cells")) == 0
