"""Questions asked of the results dataset: sweep listings, cell filters, SQL.

Every function reads through :mod:`gradsweep.store` (which migrates old rows and
drops duplicates) and returns plain frames; the CLI only prints them. Filters
are parsed, never evaluated: ``--where`` has a grammar of its own.
"""

from __future__ import annotations

import io
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from gradsweep import store
from gradsweep.errors import BadInput
from gradsweep.records import FAILED

#: Cell statuses that count as failed.
FAILED_STATUSES = FAILED
#: A ``running`` sweep with no event and no stored cell for this long reads as
#: ``incomplete`` (its driver died). Longer than any batch interval and the
#: default per-cell timeout, so a live sweep is not mislabelled.
STALE_AFTER = pd.Timedelta(minutes=15)
INCOMPLETE = "incomplete"
#: Columns ``results show`` reads and prints, in order.
SHOW_COLUMNS = ("cell_id", "kernel", "variant", "shape", "dtype", "status", "n_samples",
                "median_ns", "ci_low_ns", "ci_high_ns", "peak_bytes", "gflops", "warnings",
                "error")
LIST_COLUMNS = ("sweep_id", "name", "started_at", "status", "ok", "failed", "cells",
                "git_commit")
FORMATS = ("table", "csv", "json", "parquet")
TABLES = tuple(store.SCHEMAS)
#: Hex digits of the short cell id that tables print (of a cell_id's 16); any unique
#: prefix finds its cell (``results history``).
SHORT_CELL_ID_HEX = 8
#: Cell columns that ``--kernel``, ``--shape`` and ``--dtype`` select on.
CHOICE_COLUMNS = ("kernel", "shape", "dtype")
#: Valid choices an error line names at most.
MAX_CHOICES_SHOWN = 12

OPERATORS: dict[str, Callable] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}
_CLAUSE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|!=|<=|>=|<|>)\s*([+-]?\d+)\s*")
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)


@dataclass(frozen=True)
class Listing:
    """Rows to print and the data files that could not be read."""

    frame: pd.DataFrame
    corrupt: tuple[store.CorruptFile, ...] = ()


def display_status(status: str, last_activity: pd.Timestamp, now: pd.Timestamp) -> str:
    """A sweep's status as shown: ``running`` turns ``incomplete`` once stale."""
    if status == "running" and now - last_activity > STALE_AFTER:
        return INCOMPLETE
    return status


def cell_counts(dataset: store.Dataset) -> Listing:
    """Per sweep: ok, failed and total cells, and the newest cell's time."""
    loaded = store.read_table(dataset, "cells", columns=["status"])
    data = loaded.table
    failed = pc.is_in(data["status"], pa.array(FAILED_STATUSES))
    data = data.append_column("ok", pc.cast(pc.equal(data["status"], "ok"), pa.int64()))
    data = data.append_column("failed", pc.cast(failed, pa.int64()))
    counts = data.group_by(store.PARTITION).aggregate(
        [("ok", "sum"), ("failed", "sum"), ("status", "count"), ("recorded_at", "max")])
    frame = counts.to_pandas().rename(columns={
        "ok_sum": "ok", "failed_sum": "failed", "status_count": "cells",
        "recorded_at_max": "last_cell_at"})
    return Listing(frame.set_index(store.PARTITION), loaded.corrupt)


def list_sweeps(dataset: store.Dataset, now: pd.Timestamp | None = None) -> Listing:
    """One row per sweep, oldest first: :data:`LIST_COLUMNS` plus ``last_activity``."""
    now = now or pd.Timestamp.now(tz="UTC")
    sweeps = store.sweeps(dataset)
    counts = cell_counts(dataset)
    frame = sweeps.set_index(store.PARTITION).join(counts.frame, how="left")
    for col in ("ok", "failed", "cells"):
        frame[col] = frame[col].fillna(0).astype("int64")
    frame["last_activity"] = frame[["at", "last_cell_at"]].max(axis=1)
    frame["status"] = [display_status(s, t, now)
                       for s, t in zip(frame["status"], frame["last_activity"])]
    frame = frame.reset_index()
    return Listing(frame[[*LIST_COLUMNS, "last_activity"]], counts.corrupt)


@dataclass(frozen=True)
class Condition:
    """One ``DIM OP INT`` clause of ``--where``."""

    dim: str
    op: str
    value: int

    def expression(self) -> ds.Expression:
        """The clause as a scan filter over the dim's column."""
        return OPERATORS[self.op](ds.field(self.dim), self.value)


def parse_where(text: str) -> tuple[Condition, ...]:
    """``"H >= 128 and N == 16"`` as conditions; BadInput for anything else."""
    clauses = _AND.split(text.strip())
    conditions = []
    for clause in clauses:
        match = _CLAUSE.fullmatch(clause)
        if not match:
            raise BadInput(f"cannot parse {clause.strip()!r}: expected DIM OP INTEGER joined by "
                           "'and', OP one of " + " ".join(OPERATORS), key="--where")
        dim, op, value = match.groups()
        conditions.append(Condition(dim, op, int(value)))
    return tuple(conditions)


@dataclass(frozen=True)
class CellFilter:
    """What ``results show`` narrows cells to; empty fields match everything.

    ``variant`` matches exactly when some cell has exactly that variant,
    otherwise as a substring.
    """

    kernel: str | None = None
    variant: str | None = None
    dtype: str | None = None
    shape: str | None = None
    where: tuple[Condition, ...] = field(default_factory=tuple)

    def expression(self) -> ds.Expression | None:
        """The scan filter for every field except the variant's exactness."""
        parts = [ds.field(name) == value for name, value in
                 (("kernel", self.kernel), ("dtype", self.dtype), ("shape", self.shape))
                 if value is not None]
        if self.variant is not None:
            parts.append(pc.match_substring(ds.field("variant"), self.variant))
        parts += [c.expression() for c in self.where]
        expr = None
        for part in parts:
            expr = part if expr is None else expr & part
        return expr


def check_dims(conditions: tuple[Condition, ...]) -> None:
    """BadInput naming the first dim that is not a dim column of ``cells``."""
    for c in conditions:
        if c.dim not in store.DIM_COLUMNS:
            raise BadInput(f"unknown dim {c.dim!r}; dims are " + ", ".join(store.DIM_COLUMNS),
                           key="--where")


def _listed(values: Iterable[str]) -> str:
    """``a, b, c`` (at most :data:`MAX_CHOICES_SHOWN`, then how many more)."""
    values = list(values)
    shown = ", ".join(values[:MAX_CHOICES_SHOWN])
    more = len(values) - MAX_CHOICES_SHOWN
    return f"{shown}, ... ({more} more)" if more > 0 else shown


def check_choices(present: Mapping[str, Iterable[str]], wanted: Mapping[str, str | None]
                  ) -> None:
    """BadInput (exit 2) naming the valid choices when a wanted value is not present.

    Parameters
    ----------
    present : mapping
        Column -> the values the sweep's cells hold (``kernel``, ``shape``, ``dtype``).
    wanted : mapping
        Column -> the value asked for (``--kernel lstm``), or None for any.
    """
    for column, value in wanted.items():
        if value is None:
            continue
        valid = sorted({str(v) for v in present[column]})
        if value not in valid:
            choices = _listed(valid) if valid else "none: the sweep has no cells"
            raise BadInput(f"no cell has {column} {value!r} (valid: {choices})",
                           key=f"--{column}")


def normal_shape(shape: str | None) -> str | None:
    """A shape as the cells store it: ``"N=16, T=32"`` -> ``"N=16,T=32"``."""
    return None if shape is None else "".join(shape.split())


def filter_cells(frame: pd.DataFrame, kernel: str | None = None, shape: str | None = None,
                 dtype: str | None = None) -> pd.DataFrame:
    """The rows of ``frame`` (one sweep's cells) with this kernel, shape and dtype.

    Parameters
    ----------
    frame : pandas.DataFrame
        Cells with columns ``kernel``, ``shape`` and ``dtype`` (e.g. ``store.read``).
    kernel, shape, dtype : str, optional
        Exact values; None selects all. Spaces in ``shape`` are ignored.

    Returns
    -------
    pandas.DataFrame
        The matching rows, index kept.

    Raises
    ------
    BadInput
        A value that no row holds, naming the values the frame does hold
        (``--kernel: no cell has kernel 'lstmm' (valid: gru, lstm)``).
    """
    wanted = dict(zip(CHOICE_COLUMNS, (kernel, normal_shape(shape), dtype)))
    check_choices({c: frame[c].dropna().unique() for c, v in wanted.items() if v is not None},
                  wanted)
    keep = pd.Series(True, index=frame.index)
    for column, value in wanted.items():
        if value is not None:
            keep &= frame[column] == value
    return frame[keep]


def select_cells(dataset: store.Dataset, sweep_id: str, filt: CellFilter) -> Listing:
    """The cells of one sweep that pass ``filt``, sorted, :data:`SHOW_COLUMNS` only.

    A kernel, shape or dtype that no cell of the sweep has is BadInput naming the
    valid ones (checked when nothing matched, so the common case reads once).
    """
    check_dims(filt.where)
    filt = CellFilter(filt.kernel, filt.variant, filt.dtype, normal_shape(filt.shape),
                      filt.where)
    loaded = store.read_table(dataset, "cells", [sweep_id], list(SHOW_COLUMNS),
                              filt.expression())
    frame = loaded.table.to_pandas()
    if not len(frame):
        wanted = {"kernel": filt.kernel, "shape": filt.shape, "dtype": filt.dtype}
        if any(v is not None for v in wanted.values()):
            present = store.read(dataset, "cells", [sweep_id], columns=list(CHOICE_COLUMNS))
            check_choices({c: present[c] for c in CHOICE_COLUMNS}, wanted)
    if filt.variant is not None and (frame["variant"] == filt.variant).any():
        frame = frame[frame["variant"] == filt.variant]
    frame = frame.sort_values(["kernel", "shape", "dtype", "median_ns"], kind="stable")
    return Listing(frame[list(SHOW_COLUMNS)].reset_index(drop=True), loaded.corrupt)


def referenced_tables(query: str) -> list[str]:
    """Table names that occur as words in ``query``."""
    return [t for t in TABLES if re.search(rf"\b{t}\b", query, re.IGNORECASE)]


def run_sql(dataset: store.Dataset, query: str) -> Listing:
    """Run ``query`` with DuckDB over the tables, each a view by its name.

    Views hold what readers return (migrated, newest row per key, ``sweep_id``
    a column). DuckDB's file access is off: a query reads the dataset only.
    """
    import duckdb

    con = duckdb.connect(config={"enable_external_access": False})
    corrupt: list[store.CorruptFile] = []
    try:
        for table in referenced_tables(query):
            loaded = store.read_table(dataset, table)
            corrupt += loaded.corrupt
            con.register(table, loaded.table)
        frame = con.execute(query).df()
    except duckdb.Error as exc:
        raise BadInput(str(exc).splitlines()[0], key="SQL") from None
    finally:
        con.close()
    return Listing(frame, tuple(corrupt))


def _flatten(frame: pd.DataFrame) -> pd.DataFrame:
    """List and map cells joined as text, for CSV."""
    def flat(v):
        if isinstance(v, list | tuple) or hasattr(v, "tolist"):
            return "; ".join(map(str, list(v)))
        return v
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(flat)
    return out


def export(frame: pd.DataFrame, fmt: str, output: str | None = None) -> str:
    """``frame`` as CSV or JSON text, or written to ``output`` as Parquet (returns "")."""
    if fmt == "csv":
        buf = io.StringIO()
        _flatten(frame).to_csv(buf, index=False)
        return buf.getvalue()
    if fmt == "json":
        return frame.to_json(orient="records", date_format="iso", indent=1) + "\n"
    if fmt == "parquet":
        if not output:
            raise BadInput("--format parquet needs -o FILE", key="--output")
        frame.to_parquet(output, index=False)
        return ""
    raise BadInput(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}",
                   key="--format")


@dataclass(frozen=True)
class CompactionSummary:
    """What ``results compact`` prints: a line per merged partition and a total, and
    the unreadable files compaction moved aside (to name as warnings)."""

    lines: tuple[str, ...]
    set_aside: tuple[store.CorruptFile, ...] = ()


def compaction_summary(done: Sequence[store.Compacted]) -> CompactionSummary:
    """The lines and set-aside files of :func:`store.compact`'s outcome."""
    merged = [c for c in done if c.rows >= 0]
    aside = tuple(bad for c in done for bad in c.set_aside)
    lines = [f"{c.table}/{store.PARTITION}={c.sweep_id}: {c.files_before} files -> 1 "
             f"({c.rows} rows)" for c in merged]
    total = f"compacted {len(merged)} partitions; {len(done) - len(merged)} left as they were"
    if aside:
        total += f"; {len(aside)} unreadable file(s) moved aside, their rows are missing"
    return CompactionSummary((*lines, total), aside)


def short_cell_id(cell_id: str) -> str:
    """The first :data:`SHORT_CELL_ID_HEX` hex digits of a cell id, as tables print it."""
    return str(cell_id)[:SHORT_CELL_ID_HEX]


def match_cell_id(cell_ids: Iterable[str], prefix: str) -> str | None:
    """The one id of ``cell_ids`` equal to or starting with ``prefix``; None when none.

    Raises
    ------
    BadInput
        When ``prefix`` is empty or starts several ids (naming some of them).
    """
    if not prefix:
        raise BadInput("empty cell id (expected a cell id or a unique prefix of one)",
                       key="CELL")
    ids = set(cell_ids)
    if prefix in ids:
        return prefix
    found = sorted(i for i in ids if i.startswith(prefix))
    if len(found) > 1:
        raise BadInput(f"{prefix!r} starts {len(found)} cell ids ({_listed(found)}): give "
                       "more digits", key="CELL")
    return found[0] if found else None


def resolve_cell_id(dataset: store.Dataset, prefix: str) -> str:
    """The cell id of ``dataset`` that ``prefix`` names (the id itself or a unique prefix,
    such as the :data:`SHORT_CELL_ID_HEX` digits that tables print), in any sweep.

    Raises
    ------
    BadInput
        When no stored cell id starts with ``prefix``, or several do.
    """
    ids = [str(i) for i in
           store.read(dataset, "cells", columns=["cell_id"])["cell_id"].dropna().unique()]
    text = prefix.strip()
    found = match_cell_id(ids, text) or match_cell_id(ids, text.lower())
    if found is None:
        raise BadInput(f"no sweep in {dataset.uri} holds a cell whose id starts with "
                       f"{prefix!r} (results show prints cell ids)", key="CELL")
    return found


def resolve_any(dataset: store.Dataset, sweep: str) -> str:
    """A sweep id with data in any table (``latest`` as in :func:`store.resolve_sweep`)."""
    if sweep == "latest":
        return store.resolve_sweep(dataset, sweep)
    store.check_sweep_id(sweep)
    if sweep not in store.known_sweeps(dataset):
        raise BadInput(f"unknown sweep {sweep!r} in {dataset.uri}")
    return sweep
