"""The Parquet dataset: every table's schema, whole-file writes, reads.

Layout: ``<root>/<table>/sweep_id=<sweep_id>/<uuid>.parquet``. ``sweep_id``
lives in the Hive partition path only. A file is written under a temporary
name beginning with ``.`` and renamed (local), or put whole (object stores);
readers ignore names beginning with ``.`` or ``_``, drop duplicate rows
(keeping the newest), migrate rows of older schema versions and name any file
they cannot read while returning the rest.

Schema versions: 1 is the first release; 2 adds ``cells.n_samples`` (the
number of timed samples, so listings need not load ``samples_ns``). A
migration per (table, version) lifts rows one version up on read.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from gradsweep.errors import BadInput

SCHEMA_VERSION = 2
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
       ("samples_ns", pa.list_(pa.float64())), ("n_samples", pa.int64()),
       ("loops", pa.int64()), ("warmups", pa.int64()),
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
#: A sweeps row is an event; only an exact repeat of one (after a compaction
#: interrupted before it removed the old files) is a duplicate.
ROW_KEYS = {"sweeps": ("event", "status", "at"), "cells": ("cell_id",), "nodes": ("node",),
            "profiles": ("cell_id", "file", "line")}
#: The column whose largest value is the newest row.
ORDER_BY = {"sweeps": "at", "cells": "recorded_at", "nodes": "recorded_at",
            "profiles": "recorded_at"}
#: Longest reason kept for a file that cannot be read.
MAX_REASON_CHARS = 200
ROW_INDEX = "__row"
#: Parquet codec of every file.
COMPRESSION = "zstd"


@dataclass(frozen=True)
class Migration:
    """Lifts rows of ``table`` from ``version`` to ``version + 1``.

    ``needs`` are the columns ``apply`` reads; readers load them for old rows.
    """

    table: str
    version: int
    needs: tuple[str, ...]
    apply: Callable[[pa.Table], pa.Table]


MIGRATIONS: dict[tuple[str, int], Migration] = {}


def migration(table: str, version: int, needs: tuple[str, ...] = ()):
    """Register the decorated function as the ``(table, version)`` migration."""
    def register(fn: Callable[[pa.Table], pa.Table]) -> Callable[[pa.Table], pa.Table]:
        MIGRATIONS[(table, version)] = Migration(table, version, needs, fn)
        return fn
    return register


def _set(data: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return data.set_column(data.schema.get_field_index(name), name, values)


@migration("cells", 1, needs=("samples_ns",))
def _cells_v1_n_samples(data: pa.Table) -> pa.Table:
    """v1 cells had no ``n_samples``: count ``samples_ns``."""
    counts = pc.fill_null(pc.list_value_length(data["samples_ns"]), 0).cast(pa.int64())
    return _set(data, "n_samples", counts)


def needs(table: str) -> tuple[str, ...]:
    """Columns any migration of ``table`` reads."""
    cols = (c for m in MIGRATIONS.values() if m.table == table for c in m.needs)
    return tuple(dict.fromkeys(cols))


def migrate(data: pa.Table, table: str) -> pa.Table:
    """Rows of any older ``schema_version`` lifted to :data:`SCHEMA_VERSION`.

    A missing (null) version counts as 1; versions without a registered
    migration for ``table`` only change their number.
    """
    version = pc.fill_null(data["schema_version"], 1)
    data = _set(data, "schema_version", version)
    for v in range(1, SCHEMA_VERSION):
        mask = pc.equal(data["schema_version"], v)
        if not pc.any(mask).as_py():
            continue
        rows, rest = data.filter(mask), data.filter(pc.invert(mask))
        step = MIGRATIONS.get((table, v))
        rows = step.apply(rows) if step else rows
        rows = _set(rows, "schema_version", pa.array([v + 1] * rows.num_rows, pa.int32()))
        data = pa.concat_tables([rest, rows])
    return data


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
    names = frozenset(schema.names)
    now = pd.Timestamp.now(tz="UTC")
    rows = []
    for record in records:
        row = {k: v for k, v in _row(record).items() if k in names}
        row["schema_version"] = SCHEMA_VERSION
        if "n_samples" in names and row.get("n_samples") is None:
            row["n_samples"] = len(row.get("samples_ns") or ())
        if "recorded_at" in names and row.get("recorded_at") is None:
            row["recorded_at"] = now
        rows.append(row)
    keys = ROW_KEYS.get(table, ())
    if keys:  # one row per key in a file: the last record wins
        rows = list({tuple(_hashable(r.get(k)) for k in keys): r for r in rows}.values())
    return pa.Table.from_pylist(rows, schema=schema)


def _hashable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | type(None)) else str(value)


def write(dataset: Dataset, table: str, sweep_id: str, records: Sequence[Any]) -> str | None:
    """Write ``records`` as one new file of ``table`` in ``sweep_id``'s partition.

    The file appears whole or not at all: written under a hidden temporary
    name and renamed on a local disk, put in one piece on an object store.
    Returns the file's path (None when there was nothing to write).
    """
    if not records:
        return None
    return write_arrow(dataset, table, sweep_id, to_table(table, records))


def write_arrow(dataset: Dataset, table: str, sweep_id: str, data: pa.Table) -> str:
    """Write an Arrow table of ``table``'s schema as one whole new file; its path."""
    data = data.select(SCHEMAS[table].names).cast(SCHEMAS[table])
    directory = f"{dataset.table_path(table)}/{PARTITION}={check_sweep_id(sweep_id)}"
    name = f"{uuid.uuid4().hex}.parquet"
    dataset.fs.create_dir(directory, recursive=True)
    final = f"{directory}/{name}"
    if isinstance(dataset.fs, pafs.LocalFileSystem):
        temporary = f"{directory}/.{name}.tmp"
        pq.write_table(data, temporary, filesystem=dataset.fs, compression=COMPRESSION)
        dataset.fs.move(temporary, final)
    else:
        with dataset.fs.open_output_stream(final) as out:
            pq.write_table(data, out, compression=COMPRESSION)
    return final


def _visible(relative: str) -> bool:
    """False for temporary or partial files: a path part starting with ``.`` or ``_``."""
    return not any(part.startswith(tuple(IGNORE_PREFIXES)) for part in relative.split("/"))


def files(dataset: Dataset, table: str, sweep_ids: Sequence[str] | None = None) -> list[str]:
    """Visible data files of ``table`` (of ``sweep_ids`` only, when given), sorted."""
    base = dataset.table_path(table)
    roots = [f"{base}/{PARTITION}={check_sweep_id(s)}" for s in sweep_ids] \
        if sweep_ids is not None else [base]
    found = []
    for root in roots:
        selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
        for info in dataset.fs.get_file_info(selector):
            relative = info.path[len(base):].lstrip("/")
            if info.type == pafs.FileType.File and _visible(relative) \
                    and relative.startswith(f"{PARTITION}="):
                found.append(info.path)
    return sorted(found)


def partitions(dataset: Dataset, table: str) -> list[str]:
    """Sweep ids that have a partition directory in ``table``."""
    selector = pafs.FileSelector(dataset.table_path(table), allow_not_found=True)
    prefix = f"{PARTITION}="
    return sorted(info.base_name[len(prefix):] for info in dataset.fs.get_file_info(selector)
                  if info.type == pafs.FileType.Directory and info.base_name.startswith(prefix))


def _arrow_dataset(dataset: Dataset, table: str, paths: Sequence[str]) -> ds.Dataset:
    schema = SCHEMAS[table].append(pa.field(PARTITION, pa.string()))
    partitioning = ds.partitioning(pa.schema([(PARTITION, pa.string())]), flavor="hive")
    return ds.dataset(list(paths), filesystem=dataset.fs, format="parquet", schema=schema,
                      partitioning=partitioning, partition_base_dir=dataset.table_path(table))


@dataclass(frozen=True)
class CorruptFile:
    """A data file that could not be read, and why (its rows are missing)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"corrupt file {self.path}: {self.reason}"


class CorruptFileWarning(UserWarning):
    """A data file of the dataset could not be read; the others were."""


@dataclass(frozen=True)
class Loaded:
    """Rows read from a table (migrated, deduplicated) and the files that failed."""

    table: pa.Table
    corrupt: tuple[CorruptFile, ...] = ()


def _scan(dataset: Dataset, table: str, paths: Sequence[str], columns: list[str],
          filt: ds.Expression | None) -> tuple[pa.Table, tuple[CorruptFile, ...]]:
    """Read ``paths``; on failure read file by file and name the files that fail."""
    try:
        return _arrow_dataset(dataset, table, paths).to_table(columns=columns, filter=filt), ()
    except (pa.ArrowException, OSError):
        pass
    parts, corrupt = [], []
    for path in paths:
        try:
            parts.append(_arrow_dataset(dataset, table, [path]).to_table(columns=columns,
                                                                         filter=filt))
        except (pa.ArrowException, OSError) as exc:
            corrupt.append(CorruptFile(path, str(exc).splitlines()[0][:MAX_REASON_CHARS]))
    for bad in corrupt:
        warnings.warn(str(bad), CorruptFileWarning, stacklevel=4)
    empty = _empty(table, columns)
    return pa.concat_tables([empty, *parts]), tuple(corrupt)


def _empty(table: str, columns: Sequence[str]) -> pa.Table:
    schema = SCHEMAS[table].append(pa.field(PARTITION, pa.string()))
    return schema.empty_table().select(list(columns))


def _and(a: ds.Expression | None, b: ds.Expression) -> ds.Expression:
    return b if a is None else a & b


def dedupe(data: pa.Table, table: str, sweep_ids: Sequence[str] | None = None) -> pa.Table:
    """The newest row per (sweep_id, key) of ``table``; input order breaks ties.

    Only rows of ``sweep_ids`` are examined when given (the others are known
    to be unique: see :func:`multi_file_sweeps`).
    """
    keys = [PARTITION, *ROW_KEYS.get(table, ())]
    order = ORDER_BY[table]
    if data.num_rows < 2 or not all(k in data.column_names for k in [*keys, order]):
        return data
    if sweep_ids is not None:
        if not sweep_ids:
            return data
        mask = pc.is_in(data[PARTITION], pa.array(list(sweep_ids), pa.string()))
        return pa.concat_tables([data.filter(pc.invert(mask)),
                                 dedupe(data.filter(mask), table)])
    data = data.take(pc.sort_indices(data, [(order, "ascending", "at_start")]))
    indexed = data.append_column(ROW_INDEX, pa.array(range(data.num_rows), pa.int64()))
    last = indexed.group_by(keys, use_threads=False).aggregate([(ROW_INDEX, "max")])
    if last.num_rows == data.num_rows:
        return data
    return data.take(np.sort(last[f"{ROW_INDEX}_max"].to_numpy()))


def read_table(dataset: Dataset, table: str, sweep_ids: Sequence[str] | None = None,
               columns: Sequence[str] | None = None,
               filter: ds.Expression | None = None) -> Loaded:  # noqa: A002
    """Rows of ``table`` as Arrow: migrated to :data:`SCHEMA_VERSION`, newest per key.

    Parameters
    ----------
    sweep_ids : sequence of str, optional
        Only these sweeps' partitions are listed and read.
    columns : sequence of str, optional
        Columns to return (``sweep_id`` and the row keys are always added).
    filter : pyarrow.dataset.Expression, optional
        Pushed down to the scan (row-group statistics skip what cannot match).
    """
    paths = files(dataset, table, sweep_ids)
    wanted = _columns(table, columns)
    if not paths:
        return Loaded(_empty(table, wanted))
    data, bad = _scan(dataset, table, paths, wanted, filter)
    version = data["schema_version"]
    if version.null_count or (len(version) and pc.min(version).as_py() < SCHEMA_VERSION):
        data = _migrate_scanned(dataset, table, paths, data, filter)
    return Loaded(dedupe(data, table, multi_file_sweeps(dataset, table, paths)), bad)


def _migrate_scanned(dataset: Dataset, table: str, paths: Sequence[str], data: pa.Table,
                     filt: ds.Expression | None) -> pa.Table:
    """``data`` with its old rows re-read (with what migrations need) and migrated."""
    current = pc.fill_null(pc.greater_equal(data["schema_version"], SCHEMA_VERSION), False)
    is_old = (ds.field("schema_version") < SCHEMA_VERSION) | ds.field("schema_version").is_null()
    old, _ = _scan(dataset, table, paths, _columns(table, [*data.column_names, *needs(table)]),
                   _and(filt, is_old))
    return pa.concat_tables([data.filter(current),
                             migrate(old, table).select(data.column_names)])


def _sweep_of(dataset: Dataset, table: str, path: str) -> str:
    relative = path[len(dataset.table_path(table)):].lstrip("/")
    return relative.split("/", 1)[0][len(PARTITION) + 1:]


def multi_file_sweeps(dataset: Dataset, table: str, paths: Sequence[str]) -> list[str]:
    """Sweeps with more than one file among ``paths``: only they can hold duplicates.

    Every file holds at most one row per key: :func:`to_table` keeps the last
    record of a key in a batch, and compaction writes deduplicated rows.
    """
    counts = Counter(_sweep_of(dataset, table, p) for p in paths)
    return [sweep for sweep, n in counts.items() if n > 1]


def _columns(table: str, columns: Sequence[str] | None) -> list[str]:
    names = [*SCHEMAS[table].names, PARTITION]
    if columns is None:
        return names
    unknown = [c for c in columns if c not in names]
    if unknown:
        raise BadInput(f"unknown column(s) of {table}: {', '.join(unknown)}")
    extra = [PARTITION, *ROW_KEYS.get(table, ()), ORDER_BY[table], "schema_version"]
    return list(dict.fromkeys([*columns, *extra]))


def read(dataset: Dataset, table: str, sweep_ids: Sequence[str] | None = None,
         columns: Sequence[str] | None = None,
         filter: ds.Expression | None = None) -> pd.DataFrame:  # noqa: A002
    """Rows of ``table`` (optionally of some sweeps) as pandas, newest row per key.

    ``sweep_id`` comes from the partition path. Duplicate keys within a sweep
    (cells: ``cell_id``) keep the newest row; ``sweeps`` keeps every distinct
    event (see :func:`sweeps`). Files that cannot be read are skipped with a
    :class:`CorruptFileWarning` and listed in ``frame.attrs["corrupt"]``.
    """
    loaded = read_table(dataset, table, sweep_ids, columns, filter)
    frame = loaded.table.to_pandas()
    frame[PARTITION] = frame[PARTITION].astype(str)
    frame.attrs["corrupt"] = loaded.corrupt
    return frame


def sweeps(dataset: Dataset) -> pd.DataFrame:
    """One row per sweep: its latest event, plus ``started_at`` (first event).

    Of events at the same instant, one that ends the sweep counts as later.
    """
    events = read(dataset, "sweeps")
    if not len(events):
        return events.assign(started_at=pd.Series(dtype="datetime64[us, UTC]"))
    events = events.assign(_ends=events["status"] != "running")
    events = events.sort_values(["at", "_ends"], kind="stable").drop(columns="_ends")
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


@dataclass(frozen=True)
class Compacted:
    """What compaction did to one partition of one table."""

    table: str
    sweep_id: str
    files_before: int
    rows: int
    skipped: str = ""


def compact_partition(dataset: Dataset, table: str, sweep_id: str) -> Compacted:
    """Merge one partition's files into one; no row lost, none duplicated.

    The merged file is written whole first (rows migrated and deduplicated),
    its row count checked, then the old files are removed. A crash between the
    two steps leaves duplicates that readers drop. A partition with a file that
    cannot be read is left as it is.
    """
    paths = files(dataset, table, [sweep_id])
    if len(paths) < 2 and not _has_old_rows(dataset, table, paths):
        return Compacted(table, sweep_id, len(paths), -1, "already compact")
    loaded = read_table(dataset, table, [sweep_id])
    if loaded.corrupt:
        return Compacted(table, sweep_id, len(paths), -1, str(loaded.corrupt[0]))
    merged = write_arrow(dataset, table, sweep_id, loaded.table)
    written = pq.ParquetFile(dataset.fs.open_input_file(merged)).metadata.num_rows
    if written != loaded.table.num_rows:
        dataset.fs.delete_file(merged)
        raise OSError(f"compaction of {merged} wrote {written} of {loaded.table.num_rows} rows")
    for path in paths:
        dataset.fs.delete_file(path)
    return Compacted(table, sweep_id, len(paths), written)


def _has_old_rows(dataset: Dataset, table: str, paths: Sequence[str]) -> bool:
    if not paths:
        return False
    old = ds.field("schema_version") < SCHEMA_VERSION
    return _arrow_dataset(dataset, table, paths).count_rows(filter=old) > 0


def compact(dataset: Dataset, sweep_id: str | None = None) -> list[Compacted]:
    """Compact every partition of every table (or only ``sweep_id``'s)."""
    done = []
    for table in SCHEMAS:
        ids = partitions(dataset, table)
        for sid in ids if sweep_id is None else [s for s in ids if s == sweep_id]:
            done.append(compact_partition(dataset, table, sid))
    return done


def known_sweeps(dataset: Dataset) -> list[str]:
    """Sweep ids with a partition in any table."""
    return sorted({s for table in SCHEMAS for s in partitions(dataset, table)})


def delete(dataset: Dataset, sweep_id: str) -> int:
    """Remove ``sweep_id``'s partition from every table; the number of files removed."""
    removed = 0
    for table in SCHEMAS:
        directory = f"{dataset.table_path(table)}/{PARTITION}={check_sweep_id(sweep_id)}"
        if dataset.fs.get_file_info(directory).type == pafs.FileType.Directory:
            selector = pafs.FileSelector(directory, recursive=True)
            removed += sum(i.type == pafs.FileType.File
                           for i in dataset.fs.get_file_info(selector))
            dataset.fs.delete_dir(directory)
    return removed
