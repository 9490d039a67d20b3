"""The Parquet dataset: every table's schema, whole-file writes, reads.

Layout: ``<root>/<table>/sweep_id=<sweep_id>/<uuid>.parquet``. ``sweep_id``
lives in the Hive partition path only. A file is written under a temporary
name beginning with ``.`` and renamed (local), or put whole (object stores);
readers ignore names beginning with ``.`` or ``_``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from bench.errors import BadInput

SCHEMA_VERSION = 1
RESULTS_ENV = "GRADSWEEP_RESULTS"
DEFAULT_RESULTS = "results"
PARTITION = "sweep_id"
#: Names readers skip: temporary and hidden files.
IGNORE_PREFIXES = [".", "_"]

#: Built-in axes and dims, each also a nullable column of ``cells``.
AXIS_COLUMNS = ("buffers", "wgrad", "clip", "merge", "method", "peer")
DIM_COLUMNS = ("N", "T", "D", "H", "Hin", "Win", "Cin", "Cout", "k", "stride", "padding",
               "dilation", "output_padding")

_TS = pa.timestamp("us", tz="UTC")

SWEEPS = pa.schema([
    ("name", pa.string()), ("event", pa.string()), ("status", pa.string()), ("at", _TS),
    ("role", pa.string()), ("ci_run", pa.string()), ("spec", pa.string()),
    ("spec_hash", pa.string()), ("spec_path", pa.string()), ("cells_total", pa.int64()),
    ("git_commit", pa.string()), ("git_dirty", pa.bool_()), ("host", pa.string()),
    ("schema_version", pa.int32()),
])

CELLS = pa.schema(
    [("cell_id", pa.string()), ("kernel", pa.string()), ("variant", pa.string()),
     ("axes", pa.map_(pa.string(), pa.string())), ("shape", pa.string()),
     ("dims", pa.map_(pa.string(), pa.int64()))]
    + [(a, pa.string()) for a in AXIS_COLUMNS]
    + [(d, pa.int64()) for d in DIM_COLUMNS]
    + [("dtype", pa.string()), ("threads", pa.int64()), ("seed", pa.int64()),
       ("clip_value", pa.float64()), ("clip_norm", pa.float64()),
       ("status", pa.string()), ("error", pa.string()), ("max_rel_err", pa.float64()),
       ("samples_ns", pa.list_(pa.float64())), ("loops", pa.int64()), ("warmups", pa.int64()),
       ("first_ns", pa.float64()), ("median_ns", pa.float64()), ("mad_ns", pa.float64()),
       ("ci_low_ns", pa.float64()), ("ci_high_ns", pa.float64()),
       ("warnings", pa.list_(pa.string())), ("peak_bytes", pa.int64()),
       ("retained_bytes", pa.int64()), ("alloc_count", pa.int64()), ("flops", pa.int64()),
       ("gflops", pa.float64()), ("peak_fraction", pa.float64()), ("node", pa.string()),
       ("host", pa.string()), ("cpu", pa.string()), ("cores", pa.int64()),
       ("blas", pa.string()), ("numpy_version", pa.string()), ("python_version", pa.string()),
       ("openblas_coretype", pa.string()), ("load_avg", pa.float64()),
       ("git_commit", pa.string()), ("git_dirty", pa.bool_()), ("attempts", pa.int64()),
       ("started_at", _TS), ("duration_s", pa.float64()), ("recorded_at", _TS),
       ("schema_version", pa.int32())]
)

NODES = pa.schema([
    ("node", pa.string()), ("host", pa.string()), ("cpu", pa.string()), ("cores", pa.int64()),
    ("blas", pa.string()), ("gemm_gflops_float32", pa.float64()),
    ("gemm_gflops_float64", pa.float64()), ("recorded_at", _TS),
    ("schema_version", pa.int32()),
])

PROFILES = pa.schema([
    ("cell_id", pa.string()), ("variant", pa.string()), ("file", pa.string()),
    ("line", pa.int64()), ("function", pa.string()), ("code", pa.string()),
    ("cpu_percent_python", pa.float64()), ("cpu_percent_native", pa.float64()),
    ("cpu_percent_system", pa.float64()), ("peak_mb", pa.float64()), ("alloc_mb", pa.float64()),
    ("recorded_at", _TS), ("schema_version", pa.int32()),
])

SCHEMAS: Mapping[str, pa.Schema] = {
    "sweeps": SWEEPS, "cells": CELLS, "nodes": NODES, "profiles": PROFILES,
}
#: Columns that identify a row within a sweep: later duplicates replace earlier.
ROW_KEYS = {"cells": ("cell_id",), "nodes": ("node",), "profiles": ("cell_id", "file", "line")}


@dataclass(frozen=True)
class Dataset:
    """A results dataset: a filesystem and the root path on it."""

    fs: pafs.FileSystem
    root: str
    uri: str

    def table_path(self, table: str) -> str:
        """Path of ``table``'s directory."""
        return f"{self.root.rstrip('/')}/{table}"


def resolve(results: str | os.PathLike | None = None) -> Dataset:
    """The dataset at ``results``, else $GRADSWEEP_RESULTS, else ``results/``.

    A plain path is a local directory; a URI (``file://``, ``s3://``, ...) goes
    through pyarrow's filesystems.
    """
    where = str(results or os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS)
    if "://" in where:
        try:
            fs, root = pafs.FileSystem.from_uri(where)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise BadInput(f"cannot open results dataset: {exc}", where=where) from None
    else:
        fs, root = pafs.LocalFileSystem(), os.path.abspath(where)
    return Dataset(fs=fs, root=root, uri=where)

SWEEP_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def check_sweep_id(sweep_id: str) -> str:
    """``sweep_id`` if it is safe as a path component, else BadInput."""
    if not sweep_id or not set(sweep_id) <= SWEEP_ID_CHARS or sweep_id.startswith("."):
        raise BadInput(f"invalid sweep id {sweep_id!r} (letters, digits, '-', '_', '.')")
    return sweep_id


def _row(record: Any) -> dict[str, Any]:
    return asdict(record) if is_dataclass(record) else dict(record)


def to_table(table: str, records: Iterable[Any]) -> pa.Table:
    """Records (dataclasses or mappings) as an Arrow table of ``table``'s schema.

    Missing columns are null; ``schema_version`` and ``recorded_at`` are filled.
    """
    schema = SCHEMAS[table]
    now = pd.Timestamp.now(tz="UTC")
    rows = []
    for record in records:
        row = {k: v for k, v in _row(record).items() if k in schema.names}
        row["schema_version"] = SCHEMA_VERSION
        if "recorded_at" in schema.names:
            row.setdefault("recorded_at", now)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema)


def write(dataset: Dataset, table: str, sweep_id: str, records: Sequence[Any]) -> str | None:
    """Write ``records`` as one new file of ``table`` in ``sweep_id``'s partition.

    The file appears whole or not at all: written under a hidden temporary
    name and renamed on a local disk, put in one piece on an object store.
    Returns the file's path (None when there was nothing to write).
    """
    if not records:
        return None
    data = to_table(table, records)
    directory = f"{dataset.table_path(table)}/{PARTITION}={check_sweep_id(sweep_id)}"
    name = f"{uuid.uuid4().hex}.parquet"
    dataset.fs.create_dir(directory, recursive=True)
    final = f"{directory}/{name}"
    if isinstance(dataset.fs, pafs.LocalFileSystem):
        temporary = f"{directory}/.{name}.tmp"
        pq.write_table(data, temporary, filesystem=dataset.fs)
        dataset.fs.move(temporary, final)
    else:
        with dataset.fs.open_output_stream(final) as out:
            pq.write_table(data, out)
    return final


def _arrow_dataset(dataset: Dataset, table: str) -> ds.Dataset | None:
    path = dataset.table_path(table)
    if dataset.fs.get_file_info(path).type != pafs.FileType.Directory:
        return None
    schema = SCHEMAS[table].append(pa.field(PARTITION, pa.string()))
    partitioning = ds.partitioning(pa.schema([(PARTITION, pa.string())]), flavor="hive")
    return ds.dataset(path, filesystem=dataset.fs, format="parquet", schema=schema,
                      partitioning=partitioning, ignore_prefixes=IGNORE_PREFIXES)


def read(dataset: Dataset, table: str, sweep_ids: Sequence[str] | None = None,
         columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows of ``table`` (optionally of some sweeps), newest row per key.

    ``sweep_id`` comes from the partition path. For ``cells`` (and ``nodes``,
    ``profiles``) duplicate keys within a sweep keep the newest row; for
    ``sweeps`` every event row is returned (see :func:`sweeps`).
    """
    arrow = _arrow_dataset(dataset, table)
    wanted = list(columns) if columns else None
    if arrow is None:
        names = wanted or [*SCHEMAS[table].names, PARTITION]
        return pd.DataFrame({n: [] for n in names})
    keys = ROW_KEYS.get(table, ())
    if wanted is not None:
        extra = [c for c in (PARTITION, *keys, "recorded_at") if c in arrow.schema.names]
        wanted = list(dict.fromkeys([*wanted, *extra]))
    filt = ds.field(PARTITION).isin(list(sweep_ids)) if sweep_ids is not None else None
    frame = arrow.to_table(columns=wanted, filter=filt).to_pandas()
    frame[PARTITION] = frame[PARTITION].astype(str)
    if keys and len(frame):
        frame = (frame.sort_values("recorded_at", kind="stable")
                 .drop_duplicates([PARTITION, *keys], keep="last"))
    return frame.reset_index(drop=True)


def sweeps(dataset: Dataset) -> pd.DataFrame:
    """One row per sweep: its latest event, plus ``started_at`` (first event)."""
    events = read(dataset, "sweeps")
    if not len(events):
        return events.assign(started_at=pd.Series(dtype="datetime64[us, UTC]"))
    events = events.sort_values("at", kind="stable")
    first = events.groupby(PARTITION)["at"].min().rename("started_at")
    latest = events.drop_duplicates(PARTITION, keep="last").set_index(PARTITION)
    return latest.join(first).reset_index().sort_values("started_at").reset_index(drop=True)


def resolve_sweep(dataset: Dataset, sweep: str) -> str:
    """The sweep id named by ``sweep`` (``latest`` is the newest); BadInput if unknown."""
    known = sweeps(dataset)
    if sweep == "latest":
        if not len(known):
            raise BadInput(f"no sweeps in {dataset.uri}")
        return str(known[PARTITION].iloc[-1])
    check_sweep_id(sweep)
    if sweep not in set(known[PARTITION]):
        raise BadInput(f"unknown sweep {sweep!r} in {dataset.uri}")
    return sweep
