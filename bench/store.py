"""The Parquet dataset: every table's schema, durable whole-file writes, reads.

Layout: ``<root>/<table>/sweep_id=<sweep_id>/<uuid>.parquet`` for the tables
``sweeps``, ``cells``, ``nodes`` and ``profiles`` (``results/cells``, ...;
every table's directory exists once anything was written, so an unwritten
table reads empty). ``sweep_id`` lives in the Hive partition path only.
Readers skip names beginning with ``.`` or ``_``, drop duplicate rows
(keeping the newest), migrate rows of older schema versions and name any file
they cannot read while returning the rest. Each ``cells`` file carries the
``pandas`` schema metadata of :data:`PANDAS_DTYPES`, so plain ``pandas.read_parquet`` of
``<root>/cells`` reads the dims as nullable ``Int64``, as gradsweep's readers do.

Durability (local disk): a file is written under a hidden temporary name,
fsync'ed, renamed into its partition and the directory fsync'ed, so a write
that returned survives a crash and a write that did not leaves nothing
visible. An ``OSError`` (disk full, permissions, I/O) surfaces as one
:class:`StoreError` naming the path and the cause; temporary files are removed
and nothing stored before is touched.

Compaction (local disk) never shows a plain reader (``pandas.read_parquet``)
the old files and the merged one together, and a kill at any point loses no
row: the merged file is built in the hidden sibling ``.new-sweep_id=X`` with a
manifest (``_compaction.json``) naming the files it replaces, files appended
meanwhile are hard-linked in, then the two directories are swapped in one
``renameat2(RENAME_EXCHANGE)``; the old directory is emptied (files appended
after the swap moved into the new one) and removed, and the manifest last.
Without RENAME_EXCHANGE (not Linux, or a filesystem without it) the swap
takes two renames (old aside to ``.old-sweep_id=X``, new in), and for that
instant the partition is missing. A half-done compaction is finished or
undone by the next compaction, write or read of the table (:func:`recover`),
guided by where the manifest is; a per-table ``flock`` tells a live
compaction from a dead one. Files that cannot be read are moved aside to
``<table>/_corrupt/sweep_id=X/`` (kept, never deleted; named in the result).
On other pyarrow filesystems (``s3://``...) a file is put whole, there is no
fsync, and compaction writes the merged file then deletes the old ones:
between the two, plain readers see duplicates (gradsweep's readers drop them).

Schema versions: 1 is the first release; 2 adds ``cells.n_samples`` (the
number of timed samples, so listings need not load ``samples_ns``); 3 adds
groups, blocks and rounds (docs/tables.md). A migration per (table, version)
lifts rows one version up on read. Compaction rewrites a one-file partition
of older rows or without the pandas metadata.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import posixpath
import shutil
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from gradsweep.errors import BadInput, StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: compaction runs unlocked
    fcntl = None

SCHEMA_VERSION = 3
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
       ("schema_version", pa.int32()),
       # v3: groups, blocks and rounds, both clocks (DESIGN.md, Measurement)
       ("group_id", pa.string()), ("clock", pa.string()), ("cpu_ns", pa.list_(pa.float64())),
       ("wall_ns", pa.list_(pa.float64())), ("sample_block", pa.list_(pa.int32())),
       ("sample_round", pa.list_(pa.int32())), ("blocks", pa.int64()),
       ("pids", pa.list_(pa.int64())), ("descheduled", pa.int64())]
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

#: pandas dtypes other than pyarrow's defaults, per table: the dims read as nullable
#: integers (``<NA>`` where a kernel has no such dim), not float64 with NaN.
PANDAS_DTYPES: Mapping[str, Mapping[str, str]] = {"cells": dict.fromkeys(DIM_COLUMNS, "Int64")}


def _with_pandas_dtypes(table: str, schema: pa.Schema) -> pa.Schema:
    """``schema`` with the ``pandas`` metadata pyarrow writes for :data:`PANDAS_DTYPES`.

    Every file of ``table`` carries it, so ``pandas.read_parquet`` (any ``to_pandas``)
    restores those dtypes. Only the columns whose dtype differs from pyarrow's default
    are described (about 1.5 kB a file, not an entry per column).
    """
    dtypes = PANDAS_DTYPES.get(table)
    if not dtypes:
        return schema
    typed = pa.schema([schema.field(name) for name in dtypes])
    frame = typed.empty_table().to_pandas().astype(dtypes)
    meta = pa.Table.from_pandas(frame, schema=typed, preserve_index=False).schema.metadata
    return schema.with_metadata({b"pandas": meta[b"pandas"]})


SCHEMAS: Mapping[str, pa.Schema] = {
    table: _with_pandas_dtypes(table, schema)
    for table, schema in {"sweeps": SWEEPS, "cells": CELLS, "nodes": NODES,
                          "profiles": PROFILES}.items()
}
SWEEPS, CELLS, NODES, PROFILES = (SCHEMAS[t] for t in ("sweeps", "cells", "nodes", "profiles"))
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
#: The column a file-by-file scan adds: the position of the row's file in the paths read.
FILE_INDEX = "__file"
#: Files a compaction reads at once, and rows per row group of the merged file: it holds
#: one chunk of the partition in memory, not the partition (tests/benchmarks/scale.py).
COMPACT_FILES = 16
ROW_GROUP_ROWS = 8192
#: A filtered scan decodes this many rows at a time, this many batches ahead: a filter
#: that keeps a few rows of a big file then holds little more than what it keeps (400 of
#: 100k cells with their samples: 20 MB instead of 45 at Arrow's defaults, as fast).
FILTERED_BATCH_ROWS = 1024
FILTERED_READAHEAD = 2
#: Parquet codec of every file.
COMPRESSION = "zstd"
#: Hidden siblings of partition ``sweep_id=X`` while it is compacted: the new
#: partition being built (after the swap: the old one), and the old one when
#: the swap took two renames.
STAGING_PREFIX = ".new-"
OLD_PREFIX = ".old-"
#: In the new partition: the names of the old files it replaces (JSON list).
MANIFEST = "_compaction.json"
#: Per table: held (flock) while a partition of it is compacted or recovered.
LOCK = ".compaction.lock"
#: Per table: files compaction could not read, kept as ``_corrupt/sweep_id=X/<name>``.
SET_ASIDE = "_corrupt"
#: A write retried after a compaction swapped its partition away (local disk).
WRITE_ATTEMPTS = 5
#: A read re-listed after a compaction swapped files away under it.
READ_ATTEMPTS = 3
#: Times a swap or cleanup is retried while writers keep adding files.
SWAP_ATTEMPTS = 50
#: ``renameat2`` flag: swap two paths atomically (Linux >= 3.15).
RENAME_EXCHANGE = 2
AT_FDCWD = -100



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


@migration("cells", 2, needs=("samples_ns", "warnings"))
def _cells_v2_unpaired(data: pa.Table) -> pa.Table:
    """v2 cells were one process each, unpaired: one block, no rounds. Their clock was
    wall time, except the CI gate's (a ``cpu-clock`` warning says so)."""
    gate = [any(str(w).startswith("cpu-clock") for w in (ws or ()))
            for ws in data["warnings"].to_pylist()]
    clock = pa.array(["cpu" if g else "wall" for g in gate], pa.string())
    ok = pc.greater(pc.fill_null(pc.list_value_length(data["samples_ns"]), 0), 0)
    blocks = pc.if_else(ok, pa.scalar(1, pa.int64()), pa.scalar(None, pa.int64()))
    for name, values in (("clock", clock), ("blocks", blocks)):
        if name in data.column_names:  # a projection may leave them out
            data = _set(data, name, values)
    return data


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
    """Write ``records`` durably as one new file of ``table`` in ``sweep_id``'s partition.

    The file appears whole or not at all, and once this returns it survives a
    crash: on a local disk it is written under a hidden temporary name,
    fsync'ed, renamed and its directory fsync'ed; on an object store it is put
    in one piece. Returns the file's path (None when there was nothing to
    write). Raises :class:`StoreError` when the disk refuses (full, ...).
    """
    if not records:
        return None
    return write_arrow(dataset, table, sweep_id, to_table(table, records))


def write_arrow(dataset: Dataset, table: str, sweep_id: str, data: pa.Table) -> str:
    """Write an Arrow table of ``table``'s schema as one whole new file; its path.

    As :func:`write`. The first write of a dataset creates every table's
    directory (:func:`init`).
    """
    data = data.select(SCHEMAS[table].names).cast(SCHEMAS[table])
    directory = partition_path(dataset, table, sweep_id)
    name = f"{uuid.uuid4().hex}.parquet"
    if not _is_local(dataset):
        return _put(dataset, directory, name, data)
    _, staging, old = _sibling_paths(dataset.table_path(table), sweep_id)
    if os.path.lexists(staging) or os.path.lexists(old):  # a compaction died half-way
        _recover_quietly(dataset, table)
    if not os.path.isdir(directory):
        init(dataset)
    return _write_local(directory, name, data)


def init(dataset: Dataset) -> None:
    """Create every table's directory (``<root>/cells``, ``sweeps``, ``nodes``, ``profiles``).

    So a table nothing was written to yet reads as empty, also with plain
    pandas. Raises :class:`StoreError` when the disk refuses.
    """
    for table in SCHEMAS:
        path = dataset.table_path(table)
        try:
            if _is_local(dataset):
                _makedirs(path)
            else:
                dataset.fs.create_dir(path, recursive=True)
        except OSError as exc:
            raise StoreError(path, exc) from exc


def partition_path(dataset: Dataset, table: str, sweep_id: str) -> str:
    """Path of ``sweep_id``'s partition directory in ``table``."""
    return f"{dataset.table_path(table)}/{PARTITION}={check_sweep_id(sweep_id)}"


def _is_local(dataset: Dataset) -> bool:
    return isinstance(dataset.fs, pafs.LocalFileSystem)


def _put(dataset: Dataset, directory: str, name: str, data: pa.Table) -> str:
    """Write one file in a single put (object stores); StoreError on failure."""
    final = f"{directory}/{name}"
    try:
        dataset.fs.create_dir(directory, recursive=True)
        with dataset.fs.open_output_stream(final) as out:
            pq.write_table(data, out, compression=COMPRESSION)
    except OSError as exc:
        raise StoreError(final, exc) from exc
    return final


def _write_local(directory: str, name: str, data: pa.Table) -> str:
    """Write ``directory/name`` durably: temporary name, fsync, rename, fsync the directory.

    A compaction may swap the partition directory away between the temporary
    file and the rename (the rename then finds no file): the write starts again.
    """
    final, temporary = f"{directory}/{name}", f"{directory}/.{name}.tmp"
    cause: OSError | None = None
    for _ in range(WRITE_ATTEMPTS):
        try:
            _makedirs(directory)
            _write_file(temporary, data)
            os.rename(temporary, final)
        except FileNotFoundError as exc:
            _remove_quietly(temporary)
            cause = exc
            continue
        except Exception as exc:
            _remove_quietly(temporary)
            if isinstance(exc, OSError):
                raise StoreError(final, exc) from exc
            raise
        try:
            _fsync_dir(directory)
        except FileNotFoundError:  # swapped away after the rename: compaction fsyncs it
            pass
        except OSError as exc:
            raise StoreError(final, exc) from exc
        return final
    raise StoreError(final, cause or "its partition kept being swapped away")


def _write_file(path: str, data: pa.Table) -> None:
    """``data`` as a new Parquet file at ``path``, fsync'ed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with open(fd, "wb") as out:
        pq.write_table(data, out, compression=COMPRESSION)
        out.flush()
        os.fsync(out.fileno())


def _fsync_dir(path: str) -> None:
    """Make the entries of directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs(path: str) -> None:
    """``os.makedirs`` with each new directory's parent fsync'ed."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory)
        _fsync_dir(os.path.dirname(directory))


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _visible(relative: str) -> bool:
    """False for temporary or partial files: a path part starting with ``.`` or ``_``."""
    return not any(part.startswith(tuple(IGNORE_PREFIXES)) for part in relative.split("/"))


def files(dataset: Dataset, table: str, sweep_ids: Sequence[str] | None = None) -> list[str]:
    """Visible data files of ``table`` (of ``sweep_ids`` only, when given), sorted.

    On a local disk a half-done compaction found on the way is finished first
    (when no live compaction holds the table, see :func:`recover`).
    """
    base = dataset.table_path(table)
    wanted = None if sweep_ids is None else {check_sweep_id(s) for s in sweep_ids}
    found = []
    for sweep in partitions(dataset, table):
        if wanted is not None and sweep not in wanted:
            continue
        selector = pafs.FileSelector(f"{base}/{PARTITION}={sweep}", recursive=True,
                                     allow_not_found=True)
        for info in dataset.fs.get_file_info(selector):
            relative = info.path[len(base):].lstrip("/")
            if info.type == pafs.FileType.File and _visible(relative):
                found.append(info.path)
    return sorted(found)


def _top_level(dataset: Dataset, table: str) -> list[str]:
    """Names of the directories directly in ``table``'s directory."""
    selector = pafs.FileSelector(dataset.table_path(table), allow_not_found=True)
    return [info.base_name for info in dataset.fs.get_file_info(selector)
            if info.type == pafs.FileType.Directory]


def partitions(dataset: Dataset, table: str) -> list[str]:
    """Sweep ids that have a partition directory in ``table``.

    On a local disk, half-done compactions of ``table`` are recovered first.
    """
    names = _top_level(dataset, table)
    if _is_local(dataset) and _leftovers(names) and _recover_quietly(dataset, table):
        names = _top_level(dataset, table)
    prefix = f"{PARTITION}="
    return sorted(n[len(prefix):] for n in names if n.startswith(prefix))


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
    #: Where compaction moved the file (empty while it is still in place).
    kept_at: str = ""

    def __str__(self) -> str:
        moved = f"; moved to {self.kept_at}" if self.kept_at else ""
        return f"corrupt file {self.path}: {self.reason}{moved}"


class CorruptFileWarning(UserWarning):
    """A data file of the dataset could not be read; the others were."""


@dataclass(frozen=True)
class Loaded:
    """Rows read from a table (migrated, deduplicated) and the files that failed."""

    table: pa.Table
    corrupt: tuple[CorruptFile, ...] = ()


class _Vanished(Exception):
    """A listed file was gone when read (a compaction swapped it away): list again."""


def _scan(dataset: Dataset, table: str, paths: Sequence[str], columns: list[str],
          filt: ds.Expression | None, retry: bool = False,
          per_file: bool = False) -> tuple[pa.Table, tuple[CorruptFile, ...]]:
    """Read ``paths``; on failure read file by file and name the files that fail.

    With ``retry``, a file that no longer exists raises :class:`_Vanished`
    instead of being named. ``per_file``: read file by file from the start (a
    scan of many small files at once leaves the process ~0.2 MB larger per file,
    freed memory the allocator keeps: 520 MB at 1,700 files against 140 MB) and
    add :data:`FILE_INDEX` (int32), so rows come in the order of ``paths``.
    """
    batches = ({} if filt is None else
               {"batch_size": FILTERED_BATCH_ROWS, "batch_readahead": FILTERED_READAHEAD})
    try:
        if not per_file:
            return (_arrow_dataset(dataset, table, paths).to_table(
                columns=columns, filter=filt, **batches), ())
    except FileNotFoundError:
        if retry:
            raise _Vanished from None
    except (pa.ArrowException, OSError):
        pass
    parts, corrupt = [], []
    for index, path in enumerate(paths):
        try:
            part = _arrow_dataset(dataset, table, [path]).to_table(
                columns=columns, filter=filt, **batches)
            parts.append(part.append_column(FILE_INDEX, pa.array(
                np.full(part.num_rows, index, np.int32))) if per_file else part)
        except FileNotFoundError as exc:
            if retry:
                raise _Vanished from None
            corrupt.append(CorruptFile(path, str(exc).splitlines()[0][:MAX_REASON_CHARS]))
        except (pa.ArrowException, OSError) as exc:
            corrupt.append(CorruptFile(path, str(exc).splitlines()[0][:MAX_REASON_CHARS]))
    for bad in corrupt:
        warnings.warn(str(bad), CorruptFileWarning, stacklevel=5)
    empty = _empty(table, [*columns, FILE_INDEX] if per_file else columns)
    return pa.concat_tables([empty, *parts]), tuple(corrupt)


def _empty(table: str, columns: Sequence[str]) -> pa.Table:
    schema = SCHEMAS[table].append(pa.field(PARTITION, pa.string())).append(
        pa.field(FILE_INDEX, pa.int32()))
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

    A table (or partition) with no files reads as an empty table of the schema.
    Files swapped away by a concurrent compaction are listed again.

    Parameters
    ----------
    sweep_ids : sequence of str, optional
        Only these sweeps' partitions are listed and read.
    columns : sequence of str, optional
        Columns to return (``sweep_id`` and the row keys are always added).
    filter : pyarrow.dataset.Expression, optional
        Pushed down to the scan (row-group statistics skip what cannot match).
    """
    wanted = _columns(table, columns)
    for attempt in range(READ_ATTEMPTS):
        paths = files(dataset, table, sweep_ids)
        try:
            return _load(dataset, table, paths, wanted, filter, attempt + 1 < READ_ATTEMPTS)
        except _Vanished:
            continue
    raise AssertionError("unreachable: the last attempt names vanished files")


def _load(dataset: Dataset, table: str, paths: Sequence[str], columns: list[str],
          filt: ds.Expression | None, retry: bool = False) -> Loaded:
    """Rows of the files ``paths`` of ``table``: migrated, newest per key."""
    if not paths:
        return Loaded(_empty(table, columns))
    data, bad = _scan(dataset, table, paths, columns, filt, retry)
    version = data["schema_version"]
    if version.null_count or (len(version) and pc.min(version).as_py() < SCHEMA_VERSION):
        data = _migrate_scanned(dataset, table, paths, data, filt, retry)
    return Loaded(dedupe(data, table, multi_file_sweeps(dataset, table, paths)), bad)


def _migrate_scanned(dataset: Dataset, table: str, paths: Sequence[str], data: pa.Table,
                     filt: ds.Expression | None, retry: bool = False) -> pa.Table:
    """``data`` with its old rows re-read (with what migrations need) and migrated."""
    current = pc.fill_null(pc.greater_equal(data["schema_version"], SCHEMA_VERSION), False)
    is_old = (ds.field("schema_version") < SCHEMA_VERSION) | ds.field("schema_version").is_null()
    with warnings.catch_warnings():  # the first scan already named the corrupt files
        warnings.simplefilter("ignore", CorruptFileWarning)
        old, _ = _scan(dataset, table, paths,
                       _columns(table, [*data.column_names, *needs(table)]),
                       _and(filt, is_old), retry)
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
    """What compaction did to one partition of one table.

    ``rows`` is -1 when the partition was left as it was (``skipped`` says
    why); ``set_aside`` are the unreadable files moved out of the partition
    (each with ``kept_at``), whose rows are missing from the merged file.
    """

    table: str
    sweep_id: str
    files_before: int
    rows: int
    skipped: str = ""
    set_aside: tuple[CorruptFile, ...] = field(default_factory=tuple)


def compact_partition(dataset: Dataset, table: str, sweep_id: str) -> Compacted:
    """Merge one partition's files into one; no row lost, none duplicated.

    Rows are migrated and deduplicated. Files that cannot be read are moved
    aside (see :func:`move_aside`) and the rest is merged. On a local disk the
    old files and the merged one are swapped in one step (see the module
    docstring); elsewhere the merged file is written, then the old files are
    removed. Raises :class:`StoreError` when the disk refuses; the partition
    is then as it was (but for the unreadable files, already moved aside).
    """
    check_sweep_id(sweep_id)
    if not _is_local(dataset):
        return _compact_with(dataset, table, sweep_id, local=False)
    table_dir = dataset.table_path(table)
    with _locked(table_dir, wait=True):
        _recover_partition(table_dir, sweep_id)
        return _compact_with(dataset, table, sweep_id, local=True)


def _compact_with(dataset: Dataset, table: str, sweep_id: str, local: bool) -> Compacted:
    """Read the partition's files, set the unreadable aside, replace the rest by one file.

    On a local disk a partition whose rows are all current streams (:class:`_MergePlan`);
    otherwise (rows to migrate, object stores) it is merged in memory.
    """
    paths = files(dataset, table, [sweep_id])
    if _is_compact(dataset, table, paths):
        return Compacted(table, sweep_id, len(paths), -1, "already compact")
    plan = _merge_plan(dataset, table, paths) if local else None
    if plan is not None:
        kept = move_aside(dataset, table, sweep_id, plan.corrupt)
        rows = _replace_local(dataset, table, sweep_id, plan.write, paths)
        return Compacted(table, sweep_id, len(paths), rows, set_aside=kept)
    loaded = _load(dataset, table, paths, _columns(table, None), None)
    kept = move_aside(dataset, table, sweep_id, loaded.corrupt)
    data = loaded.table.select(SCHEMAS[table].names).cast(SCHEMAS[table])
    if local:
        rows = _replace_local(dataset, table, sweep_id, functools.partial(_write_all, data),
                              paths)
    else:
        rows = _replace_remote(dataset, table, sweep_id, data, paths)
    return Compacted(table, sweep_id, len(paths), rows, set_aside=kept)


@dataclass(frozen=True)
class _MergePlan:
    """How to merge a partition whose rows are all current, without loading it whole.

    ``keep`` maps each readable file to the mask of its rows that survive (a
    newer row of the same key elsewhere replaces the others); ``corrupt`` are
    the files that could not be read.
    """

    dataset: Dataset
    table: str
    keep: dict[str, np.ndarray]
    corrupt: tuple[CorruptFile, ...]

    def write(self, path: str) -> int:
        """The surviving rows as one new Parquet file at ``path``, fsync'ed; rows written.

        Reads :data:`COMPACT_FILES` files at a time and writes row groups of
        :data:`ROW_GROUP_ROWS`, so memory holds one chunk, not the partition.
        """
        schema, good = SCHEMAS[self.table], list(self.keep)
        columns = _columns(self.table, None)
        rows = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with open(fd, "wb") as out, pq.ParquetWriter(out, schema,
                                                       compression=COMPRESSION) as writer:
            for start in range(0, len(good), COMPACT_FILES):
                chunk = good[start:start + COMPACT_FILES]
                data = _arrow_dataset(self.dataset, self.table, chunk).to_table(columns=columns)
                mask = np.concatenate([self.keep[f] for f in chunk])
                if len(mask) != data.num_rows:  # a file changed under the lock: never guess
                    raise OSError(errno.EIO, f"{chunk[0]}...: {data.num_rows} rows, "
                                             f"{len(mask)} when planned")
                data = data.filter(pa.array(mask)).select(schema.names).cast(schema)
                writer.write_table(data, row_group_size=ROW_GROUP_ROWS)
                rows += data.num_rows
            writer.close()
            out.flush()
            os.fsync(out.fileno())
        return rows


def _merge_plan(dataset: Dataset, table: str, paths: Sequence[str]) -> _MergePlan | None:
    """Which rows of ``paths`` (one partition's files) survive a merge, from their keys
    alone; None when some row needs a migration (then the partition is merged in memory,
    as it is small). Reads the row keys only, not the partition's name nor the files'."""
    keys, order = list(ROW_KEYS[table]), ORDER_BY[table]
    wanted = list(dict.fromkeys([*keys, order, "schema_version"]))
    data, corrupt = _scan(dataset, table, paths, wanted, None, per_file=True)
    version = data["schema_version"]
    if version.null_count or (len(version) and pc.min(version).as_py() < SCHEMA_VERSION):
        return None
    survivors = np.ones(data.num_rows, dtype=bool)
    if data.num_rows > 1:  # newest per key; equal times: the later file (dedupe's order)
        row = pa.array(range(data.num_rows), pa.int64())
        indexed = data.select([*dict.fromkeys([*keys, order]), FILE_INDEX])
        indexed = indexed.append_column(ROW_INDEX, row)
        indexed = indexed.sort_by([(order, "ascending"), (FILE_INDEX, "ascending")])
        best = indexed.group_by(keys, use_threads=False).aggregate([(ROW_INDEX, "last")])
        survivors[:] = False
        survivors[best[f"{ROW_INDEX}_last"].to_numpy()] = True
    counts = np.bincount(data[FILE_INDEX].to_numpy(), minlength=len(paths))
    masks = np.split(survivors, np.cumsum(counts)[:-1])  # rows come file by file
    unread = {c.path for c in corrupt}
    keep = {path: mask for path, mask in zip(paths, masks) if path not in unread}
    return _MergePlan(dataset, table, keep, corrupt)


def _write_all(data: pa.Table, path: str) -> int:
    """``data`` as the merged file at ``path``; its rows."""
    _write_file(path, data)
    return data.num_rows


def _is_compact(dataset: Dataset, table: str, paths: Sequence[str]) -> bool:
    """One readable file (or none) with rows of the current version and pandas dtypes only."""
    if len(paths) > 1:
        return False
    if not paths:
        return True
    old = ds.field("schema_version") < SCHEMA_VERSION
    try:
        if _arrow_dataset(dataset, table, paths).count_rows(filter=old):
            return False
        return has_pandas_dtypes(table, pq.read_schema(paths[0], filesystem=dataset.fs))
    except (pa.ArrowException, OSError):
        return False  # unreadable: compaction sets it aside


def has_pandas_dtypes(table: str, schema: pa.Schema) -> bool:
    """Whether a file's ``schema`` names the pandas dtypes of :data:`PANDAS_DTYPES`.

    Files written before it was stored lack them; compaction rewrites such files.
    """
    wanted = SCHEMAS[table].pandas_metadata
    if wanted is None:
        return True
    found = schema.pandas_metadata or {}
    return found.get("columns") == wanted["columns"]


def move_aside(dataset: Dataset, table: str, sweep_id: str,
               corrupt: Sequence[CorruptFile]) -> tuple[CorruptFile, ...]:
    """Move unreadable files to ``<table>/_corrupt/sweep_id=X/`` (readers skip it).

    They are kept for inspection, never deleted (``results delete`` of the
    sweep removes them). Returns them with ``kept_at``; a file already gone is
    left out. Raises :class:`StoreError` when a move fails.
    """
    directory = f"{dataset.table_path(table)}/{SET_ASIDE}/{PARTITION}={sweep_id}"
    kept = []
    for bad in corrupt:
        target = f"{directory}/{posixpath.basename(bad.path)}"
        try:
            dataset.fs.create_dir(directory, recursive=True)
            dataset.fs.move(bad.path, target)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(bad.path, exc) from exc
        kept.append(CorruptFile(bad.path, bad.reason, target))
    return tuple(kept)


def _replace_remote(dataset: Dataset, table: str, sweep_id: str, data: pa.Table,
                    paths: list[str]) -> int:
    """Write the merged file, check it, delete the old files (object stores)."""
    merged = write_arrow(dataset, table, sweep_id, data)
    try:
        written = pq.ParquetFile(dataset.fs.open_input_file(merged)).metadata.num_rows
        if written != data.num_rows:
            dataset.fs.delete_file(merged)
            raise OSError(f"merged file has {written} of {data.num_rows} rows")
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                dataset.fs.delete_file(path)
    except OSError as exc:
        raise StoreError(merged, exc) from exc
    return written


def _sibling_paths(table_dir: str, sweep_id: str) -> tuple[str, str, str]:
    """(live, staging, old) directories of one partition."""
    live = f"{PARTITION}={sweep_id}"
    return (f"{table_dir}/{live}", f"{table_dir}/{STAGING_PREFIX}{live}",
            f"{table_dir}/{OLD_PREFIX}{live}")


def _replace_local(dataset: Dataset, table: str, sweep_id: str, write: Callable[[str], int],
                   paths: list[str]) -> int:
    """Build the merged partition aside (``write(path)`` writes the merged file and
    returns its rows), swap it in, clear the old one; rows written."""
    table_dir = dataset.table_path(table)
    live, staging, _ = _sibling_paths(table_dir, sweep_id)
    replaced = [posixpath.basename(p) for p in paths]
    try:
        rows = _stage(live, staging, write, replaced)
    except Exception as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise StoreError(staging, exc) from exc
        raise
    try:
        _swap(table_dir, sweep_id)
        _finish(table_dir, sweep_id)
    except OSError as exc:  # the next compaction, write or read finishes the swap
        raise StoreError(live, exc) from exc
    return rows


def _stage(live: str, staging: str, write: Callable[[str], int], replaced: list[str]) -> int:
    """The new partition in ``staging``: merged file, newer files linked, manifest."""
    os.mkdir(staging)
    merged = f"{staging}/{uuid.uuid4().hex}.parquet"
    expected = write(merged)
    written = pq.read_metadata(merged).num_rows
    if written != expected:
        raise OSError(errno.EIO, f"merged file has {written} of {expected} rows", merged)
    carried = _carry_newer(live, staging, frozenset(replaced))
    with open(f"{staging}/{MANIFEST}", "w") as out:
        json.dump(sorted([*replaced, *carried]), out)
        out.flush()
        os.fsync(out.fileno())
    _fsync_dir(staging)
    return written


def _carry_newer(live: str, staging: str, replaced: frozenset[str]) -> list[str]:
    """Hard-link files written to ``live`` since it was read into ``staging``; their names."""
    carried = []
    for entry in list(os.scandir(live)):
        if not entry.is_file() or not _visible(entry.name) or entry.name in replaced:
            continue
        target = f"{staging}/{entry.name}"
        try:
            os.link(entry.path, target)
        except FileNotFoundError:
            continue
        except OSError:  # no hard links on this filesystem
            shutil.copyfile(entry.path, target)
            with open(target, "rb") as copy:
                os.fsync(copy.fileno())
        carried.append(entry.name)
    return carried


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """libc's ``renameat2`` (glibc >= 2.28), else None."""
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    except (OSError, TypeError):  # no C library to load by None (Windows)
        return None


def _exchange(a: str, b: str) -> bool:
    """Swap directories ``a`` and ``b`` atomically; False when the system cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), b)


def _swap(table_dir: str, sweep_id: str) -> None:
    """The staged partition becomes ``sweep_id=X``: one exchange, else two renames."""
    live, staging, old = _sibling_paths(table_dir, sweep_id)
    if not _exchange(staging, live):
        os.rename(live, old)
        _rename_into_place(staging, live)
    _fsync_dir(table_dir)


def _rename_into_place(source: str, live: str) -> None:
    """Rename ``source`` to ``live``; files a writer put in a re-created ``live`` join it."""
    for _ in range(SWAP_ATTEMPTS):
        try:
            os.rename(source, live)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        _empty_into(live, source, frozenset())
    raise OSError(errno.EBUSY, "writers keep re-creating the partition", live)


def _empty_into(source: str, live: str, replaced: frozenset[str]) -> None:
    """Move ``source``'s visible files not in ``replaced`` to ``live``; remove the rest."""
    for entry in list(os.scandir(source)):
        if _visible(entry.name) and entry.name not in replaced:
            os.rename(entry.path, f"{live}/{entry.name}")
        elif entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def _read_manifest(directory: str) -> frozenset[str] | None:
    """The names a new partition replaces; None when ``directory`` has no manifest."""
    try:
        with open(f"{directory}/{MANIFEST}") as f:
            return frozenset(json.load(f))
    except (OSError, ValueError, TypeError):
        return None


def _finish(table_dir: str, sweep_id: str) -> None:
    """After the swap: empty and remove the old partition, then remove the manifest.

    The old directory is emptied until ``rmdir`` succeeds, so a file a writer
    renamed into it after the swap is moved to the new partition, not lost.
    """
    live, staging, old = _sibling_paths(table_dir, sweep_id)
    replaced = _read_manifest(live) or frozenset()
    for leftover in (staging, old):
        for _ in range(SWAP_ATTEMPTS):
            if not os.path.isdir(leftover):
                break
            _empty_into(leftover, live, replaced)
            try:
                os.rmdir(leftover)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    raise
        if os.path.isdir(leftover):  # the manifest stays: the next recovery goes on
            raise OSError(errno.EBUSY, "writers keep adding files to the old partition",
                          leftover)
    _fsync_dir(live)
    _fsync_dir(table_dir)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{live}/{MANIFEST}")


def _recover_partition(table_dir: str, sweep_id: str) -> bool:
    """Finish or undo a dead compaction of one partition; True if there was one.

    The manifest's place tells the state: in ``sweep_id=X`` the swap happened
    (finish it); in the staging directory with the old one aside, the swap
    was halfway through two renames (complete it); otherwise it never
    happened (drop the staging directory).
    """
    live, staging, old = _sibling_paths(table_dir, sweep_id)
    if _read_manifest(live) is not None:
        _finish(table_dir, sweep_id)
        return True
    if _read_manifest(staging) is not None and os.path.isdir(old):
        _rename_into_place(staging, live)
        _finish(table_dir, sweep_id)
        return True
    found = os.path.isdir(staging) or os.path.isdir(old)
    shutil.rmtree(staging, ignore_errors=True)
    if os.path.isdir(old):  # aside with no manifest anywhere: give its files back
        _rename_into_place(old, live)
    if found:
        _fsync_dir(table_dir)
    return found


def _leftovers(names: Iterable[str]) -> list[str]:
    """Sweep ids of the staging or old partition directories among ``names``."""
    prefixes = tuple(f"{p}{PARTITION}=" for p in (STAGING_PREFIX, OLD_PREFIX))
    return sorted({n.split("=", 1)[1] for n in names if n.startswith(prefixes)})


@contextlib.contextmanager
def _locked(table_dir: str, wait: bool) -> Iterator[bool]:
    """Hold ``table_dir``'s compaction lock; yields False if busy and not ``wait``."""
    if fcntl is None:
        yield wait
        return
    fd = os.open(f"{table_dir}/{LOCK}", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def recover(dataset: Dataset, table: str, wait: bool = False) -> tuple[str, ...]:
    """Finish or undo the compactions of ``table`` that died half-way; their sweep ids.

    Local disks only (elsewhere there is nothing to recover). Without
    ``wait``, does nothing while a live compaction holds the table. Called by
    compaction, writes and reads; raises OSError when the disk refuses.
    """
    if not _is_local(dataset):
        return ()
    table_dir = dataset.table_path(table)
    ids = _leftovers(os.listdir(table_dir)) if os.path.isdir(table_dir) else []
    if not ids:
        return ()
    with _locked(table_dir, wait) as held:
        if not held:
            return ()
        return tuple(s for s in ids if _recover_partition(table_dir, s))


def _recover_quietly(dataset: Dataset, table: str) -> tuple[str, ...]:
    """:func:`recover` for readers and writers: a read-only dataset is no error."""
    try:
        return recover(dataset, table)
    except OSError:
        return ()


def compact(dataset: Dataset, sweep_id: str | None = None) -> list[Compacted]:
    """Compact every partition of every table (or only ``sweep_id``'s).

    Half-done compactions are recovered first. Raises :class:`StoreError`.
    """
    done = []
    for table in SCHEMAS:
        try:
            recover(dataset, table, wait=True)
        except OSError as exc:
            raise StoreError(dataset.table_path(table), exc) from exc
        ids = partitions(dataset, table)
        for sid in ids if sweep_id is None else [s for s in ids if s == sweep_id]:
            done.append(compact_partition(dataset, table, sid))
    # what the merge freed goes back to the system rather than stay the process's (with the
    # command line's system allocator: 66 MB after merging 100k cells from 400 files)
    pa.default_memory_pool().release_unused()
    return done


def known_sweeps(dataset: Dataset) -> list[str]:
    """Sweep ids with a partition in any table."""
    return sorted({s for table in SCHEMAS for s in partitions(dataset, table)})


def delete(dataset: Dataset, sweep_id: str) -> int:
    """Remove ``sweep_id`` from every table; the number of data files removed.

    Its partition, any half-done compaction of it and its set-aside files go.
    """
    check_sweep_id(sweep_id)
    removed = 0
    for table in SCHEMAS:
        table_dir = dataset.table_path(table)
        if not _is_local(dataset):
            removed += _delete_partition(dataset, table, sweep_id)
        elif os.path.isdir(table_dir):
            with _locked(table_dir, wait=True):
                removed += _delete_partition(dataset, table, sweep_id)
    return removed


def _delete_partition(dataset: Dataset, table: str, sweep_id: str) -> int:
    table_dir = dataset.table_path(table)
    aside = f"{table_dir}/{SET_ASIDE}/{PARTITION}={sweep_id}"
    directories = [*_sibling_paths(table_dir, sweep_id), aside]
    removed = len(files(dataset, table, [sweep_id]))
    for directory in directories:
        info = dataset.fs.get_file_info(directory)
        if info.type != pafs.FileType.Directory:
            continue
        if directory == aside:
            selector = pafs.FileSelector(directory, recursive=True)
            removed += sum(i.type == pafs.FileType.File
                           for i in dataset.fs.get_file_info(selector))
        try:
            dataset.fs.delete_dir(directory)
        except OSError as exc:
            raise StoreError(directory, exc) from exc
    return removed
