"""``gradsweep report``: rankings, speed-ups, memory, Pareto fronts, roofline fractions.

:func:`build` turns a sweep's ``cells`` rows into a :class:`Report` of frozen
records (pure); :func:`load_report` reads a sweep from a dataset and loads the
registry its spec names; :func:`to_markdown` and :func:`to_csv` render it
(``gradsweep.cli.views.print_report`` renders it with rich).

Exit code: a report exists to rank, so it exits 0 even when cells failed
(they are listed apart, never ranked); 2 for bad input (unknown sweep,
unknown format). ``run``, ``verify`` and ``compare`` are the commands that
exit 1 on failures.
"""

from __future__ import annotations

import csv
import io
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from itertools import groupby

import pandas as pd

from gradsweep import query, rank, store
from gradsweep.errors import BadInput
from gradsweep.impls.registry import Registry
from gradsweep.spec import registry_for

FORMATS = ("rich", "md", "csv")
NS_PER_MS = 1e6
BYTES_PER_MIB = 2**20
PERCENT = 100.0
UNRANKED = ("incorrect", "error", "crashed", "timeout", "skipped")


@dataclass(frozen=True)
class RankedCell:
    """One ``ok`` cell in its (kernel, shape, dtype) ranking.

    ``speedup`` is the baseline's median over this one (above 1: faster than
    the baseline), ``speedup_peer`` the same against ``KERNEL/peer=torch``.
    ``memory_place`` ranks peak bytes (equal peaks share); ``pareto`` marks
    the front of time against memory. ``warnings`` are ``"code: detail"``.
    """

    kernel: str
    shape: str
    dtype: str
    place: int
    variant: str
    median_ns: float
    ci_low_ns: float | None
    ci_high_ns: float | None
    speedup: float | None
    speedup_peer: float | None
    peak_bytes: int | None
    memory_place: int | None
    pareto: bool
    flops: int | None
    gflops: float | None
    peak_fraction: float | None
    warnings: tuple[str, ...]
    cell_id: str
    ratio_fastest: float | None = None
    ratio_low: float | None = None
    ratio_high: float | None = None
    speedup_low: float | None = None
    speedup_high: float | None = None
    speedup_peer_low: float | None = None
    speedup_peer_high: float | None = None
    paired: bool = False
    answer: str = ""
    blocks_slowed: int = 0
    letters: str = ""


@dataclass(frozen=True)
class OverallEntry:
    """A variant's standing across the shapes of its kernel and dtype.

    ``geomean`` is the geometric mean of its time over the fastest's at each shape
    (``ratio_fastest``, paired where the sweep has blocks; 1.0: fastest everywhere).
    ``place`` is None when the variant lacks ``ok`` cells at some shapes
    (``shapes < total_shapes``): it is then not comparable and listed after the
    placed ones.
    """

    kernel: str
    dtype: str
    place: int | None
    variant: str
    geomean: float
    shapes: int
    total_shapes: int


@dataclass(frozen=True)
class FailedCell:
    """A cell that is not ``ok``: never ranked, listed with its error."""

    kernel: str
    variant: str
    shape: str
    dtype: str
    status: str
    error: str
    cell_id: str


@dataclass(frozen=True)
class Report:
    """Everything ``gradsweep report`` shows for one sweep."""

    sweep_id: str
    name: str
    status: str
    cells: tuple[RankedCell, ...]
    overall: tuple[OverallEntry, ...]
    failed: tuple[FailedCell, ...]
    notes: tuple[str, ...] = ()

    def groups(self) -> list[tuple[tuple[str, str, str], list[RankedCell]]]:
        """Ranked cells grouped by (kernel, dtype, shape), in report order."""
        return [(k, list(g)) for k, g in
                groupby(self.cells, key=lambda c: (c.kernel, c.dtype, c.shape))]


def _none(value):
    """None for missing values (None, NaN, pandas NA)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _int(value) -> int | None:
    value = _none(value)
    return None if value is None else int(value)


def _float(value) -> float | None:
    value = _none(value)
    return None if value is None else float(value)


def ranked_records(ranked: pd.DataFrame) -> tuple[RankedCell, ...]:
    """Ranked rows as records ordered by kernel, dtype, problem size, shape, place."""
    size = ranked.groupby(list(rank.GROUP_KEYS))["flops"].transform("min")
    ordered = ranked.assign(_size=size.fillna(0)).sort_values(
        ["kernel", "dtype", "_size", "shape", "place", "ratio_fastest", "median_ns"],
        kind="stable")
    return tuple(
        RankedCell(kernel=r.kernel, shape=r.shape, dtype=r.dtype, place=int(r.place),
                   variant=r.variant, median_ns=float(r.median_ns),
                   ci_low_ns=_float(r.ci_low_ns), ci_high_ns=_float(r.ci_high_ns),
                   speedup=_float(r.speedup), speedup_peer=_float(r.speedup_peer),
                   peak_bytes=_int(r.peak_bytes), memory_place=_int(r.memory_place),
                   pareto=bool(r.pareto), flops=_int(r.flops), gflops=_float(r.gflops),
                   peak_fraction=_float(r.peak_fraction),
                   warnings=tuple(r.warnings) if _none_list(r.warnings) else (),
                   cell_id=str(r.cell_id), ratio_fastest=_float(r.ratio_fastest),
                   ratio_low=_float(r.ratio_low), ratio_high=_float(r.ratio_high),
                   speedup_low=_float(r.speedup_low), speedup_high=_float(r.speedup_high),
                   speedup_peer_low=_float(r.speedup_peer_low),
                   speedup_peer_high=_float(r.speedup_peer_high), paired=bool(r.paired),
                   answer=str(r.answer or ""),
                   blocks_slowed=_int(r.blocks_slowed) or 0, letters=_text(r.letters))
        for r in ordered.itertuples(index=False))


def _text(value) -> str:
    value = _none(value)
    return "" if value is None else str(value)


def _none_list(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) \
        and len(value) > 0


def _overall_records(table: pd.DataFrame) -> tuple[OverallEntry, ...]:
    return tuple(
        OverallEntry(kernel=r.kernel, dtype=r.dtype, place=_int(r.place), variant=r.variant,
                     geomean=float(r.geomean), shapes=int(r.shapes),
                     total_shapes=int(r.total_shapes))
        for r in table.itertuples(index=False))


#: Columns a failed cell's record adds to those the ranking reads (``cell_id`` is a key).
FAILED_COLUMNS = ["error"]


def _failed_records(cells: pd.DataFrame) -> tuple[FailedCell, ...]:
    bad = cells[(cells["status"] != "ok") | cells["median_ns"].isna()]
    bad = bad.sort_values(["kernel", "status", "variant", "shape", "dtype"], kind="stable")
    return tuple(
        FailedCell(kernel=str(r.kernel), variant=str(r.variant), shape=str(r.shape),
                   dtype=str(r.dtype), status=str(r.status),
                   error=str(_none(r.error) or ("no timing" if r.status == "ok" else "")),
                   cell_id=str(r.cell_id))
        for r in bad.itertuples(index=False))


def build(cells: pd.DataFrame, registry: Registry | None = None, *, sweep_id: str = "",
          name: str = "", status: str = "", notes: Sequence[str] = ()) -> Report:
    """The report of one sweep's ``cells`` rows (pure).

    Parameters
    ----------
    cells : pd.DataFrame
        Rows of the ``cells`` table of one sweep.
    registry : Registry, optional
        For each variant's baseline; without it ``speedup`` is None
        (``speedup_peer`` needs no registry).
    sweep_id, name, status : str
        Shown in the title.
    notes : sequence of str
        Shown under the report (e.g. a plugin that could not be imported).
    """
    ranked = rank.rank(cells, registry)
    return Report(sweep_id=sweep_id, name=name, status=status,
                  cells=ranked_records(ranked), overall=_overall_records(rank.overall(ranked)),
                  failed=_failed_records(cells), notes=tuple(notes))


def plugins_of(spec_text: str | None) -> tuple[str, ...]:
    """The ``plugins`` list of a stored spec's TOML text (empty if unreadable)."""
    if not isinstance(spec_text, str):  # null in the store (read as None or NaN)
        return ()
    try:
        plugins = tomllib.loads(spec_text).get("plugins", [])
    except tomllib.TOMLDecodeError:
        return ()
    return tuple(p for p in plugins if isinstance(p, str)) if isinstance(plugins, list) else ()


def sweep_row(dataset: store.Dataset, sweep_id: str) -> dict:
    """The latest ``sweeps`` row of ``sweep_id`` as a dict (empty if it has none)."""
    known = store.sweeps(dataset)
    rows = known[known[store.PARTITION] == sweep_id]
    return rows.iloc[-1].to_dict() if len(rows) else {}


def load_report(dataset: store.Dataset, sweep: str, *, kernel: str | None = None,
                shape: str | None = None, dtype: str | None = None) -> Report:
    """The report of ``sweep`` (an id or ``latest``) in ``dataset``, optionally only the
    cells of one kernel, shape and/or dtype; BadInput for an unknown sweep or value."""
    sweep_id = store.resolve_sweep(dataset, sweep)
    row = sweep_row(dataset, sweep_id)
    registry, notes = registry_for(plugins_of(row.get("spec")), fallback=True)
    columns = [*rank.READ_COLUMNS, *FAILED_COLUMNS]
    cells = query.filter_cells(store.read(dataset, "cells", [sweep_id], columns=columns),
                               kernel=kernel, shape=shape, dtype=dtype)
    return build(cells, registry, sweep_id=sweep_id, name=str(row.get("name") or ""),
                 status=str(row.get("status") or ""), notes=notes)


# ---- formatting helpers shared by every format --------------------------------------------

def short(variant: str) -> str:
    """The variant without its kernel prefix (``buffers=list,wgrad=step,clip=none``)."""
    return variant.split("/", 1)[-1]


def varying_names(variants: Sequence[str]) -> dict[str, str]:
    """Each variant shown by the axes that vary among ``variants`` only
    (``buffers=list,wgrad=step`` when every one has ``clip=none``); a peer keeps
    its ``peer=torch``. Full names stay in csv, json and Markdown."""
    parsed = {v: dict(p.split("=", 1) for p in short(v).split(",") if "=" in p)
              for v in variants}
    varying = [k for k in dict.fromkeys(k for axes in parsed.values() for k in axes)
               if len({axes[k] for axes in parsed.values() if k in axes}) > 1]
    return {v: ",".join(f"{k}={axes[k]}" for k in varying if k in axes) or short(v)
            for v, axes in parsed.items()}


def fmt(value: float | None, spec: str = ".3g", scale: float = 1.0) -> str:
    """``value / scale`` formatted with ``spec``; "" when missing."""
    return "" if value is None else format(value / scale, spec)


def codes(warnings: Sequence[str]) -> str:
    """The distinct codes of ``"code: detail"`` warnings, comma separated."""
    return ", ".join(dict.fromkeys(w.split(":", 1)[0] for w in warnings))


relative = rank.relative


def _inverse(x: float | None) -> float | None:
    return 1.0 / x if x else None


def place_order(c: RankedCell) -> tuple[int, float, float]:
    """Sort key of a group's cells: place, then time over the fastest, then median."""
    return c.place, rank.sort_ratio(c.ratio_fastest), c.median_ns


def cell_fields(c: RankedCell) -> dict[str, str]:
    """A ranked cell's displayed values (plain text, not escaped)."""
    ci = f"{fmt(c.ci_low_ns, scale=NS_PER_MS)}–{fmt(c.ci_high_ns, scale=NS_PER_MS)}" \
        if c.ci_low_ns is not None else ""
    vs_fastest = "fastest" if c.ratio_fastest == 1.0 else relative(
        c.ratio_fastest, c.ratio_low, c.ratio_high)
    return {"place": str(c.place), "letters": c.letters, "variant": short(c.variant),
            "cell": c.cell_id[:8],
            "median ms": fmt(c.median_ns, scale=NS_PER_MS), "95% CI ms": ci,
            "vs fastest": vs_fastest,
            "vs baseline": relative(_inverse(c.speedup), _inverse(c.speedup_high),
                                    _inverse(c.speedup_low)),
            "vs torch": relative(_inverse(c.speedup_peer), _inverse(c.speedup_peer_high),
                                 _inverse(c.speedup_peer_low)),
            "peak MiB": fmt(c.peak_bytes, scale=BYTES_PER_MIB),
            "mem place": "" if c.memory_place is None else str(c.memory_place),
            "Pareto": "◆" if c.pareto else "", "GFLOP/s": fmt(c.gflops),
            "% GEMM peak": fmt(c.peak_fraction, ".1f", 1 / PERCENT),
            "warnings": codes(c.warnings)}


CELL_HEADERS = tuple(cell_fields(RankedCell("", "", "", 1, "k/v", 1.0, *[None] * 4, None,
                                            None, False, None, None, None, (), "")))
OVERALL_HEADERS = ("place", "variant", "geomean time / fastest", "shapes")
FAILED_HEADERS = ("status", "variant", "shape", "dtype", "error")


def overall_fields(o: OverallEntry) -> dict[str, str]:
    """An overall entry's displayed values (plain text)."""
    return {"place": "—" if o.place is None else str(o.place), "variant": short(o.variant),
            "geomean time / fastest": f"{o.geomean:.3f}",
            "shapes": f"{o.shapes}/{o.total_shapes}"}


def failed_fields(f: FailedCell) -> dict[str, str]:
    """A failed cell's displayed values (plain text)."""
    return {"status": f.status, "variant": f.variant, "shape": f.shape, "dtype": f.dtype,
            "error": " ".join(f.error.split())}


def title(report: Report) -> str:
    """``name (sweep_id, status)``."""
    extra = ", ".join(p for p in (report.sweep_id, report.status) if p)
    return f"{report.name} ({extra})" if extra else report.name


def overall_by(report: Report) -> dict[tuple[str, str], list[OverallEntry]]:
    """Overall entries by (kernel, dtype)."""
    out: dict[tuple[str, str], list[OverallEntry]] = {}
    for o in report.overall:
        out.setdefault((o.kernel, o.dtype), []).append(o)
    return out


# ---- Markdown ------------------------------------------------------------------------------

def md_escape(text: str) -> str:
    """Text safe in a Markdown table cell: HTML special characters and pipes escaped."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("|", "\\|").replace("\n", " "))


def md_table(headers: Sequence[str], rows: Sequence[dict[str, str]]) -> list[str]:
    """Lines of a Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(md_escape(r[h]) for h in headers) + " |" for r in rows]
    return lines


def to_markdown(report: Report) -> str:
    """The report as Markdown: per kernel and dtype, each shape's ranking, then overall."""
    lines = [f"# gradsweep report: {md_escape(title(report))}", ""]
    overall = overall_by(report)
    groups = report.groups()
    for i, ((kernel, dtype, shape), cells) in enumerate(groups):
        key = (kernel, dtype)
        if i == 0 or groups[i - 1][0][:2] != key:
            lines += [f"## {md_escape(kernel)} · {dtype}", ""]
        lines += [f"### {md_escape(shape)}", ""]
        lines += md_table(CELL_HEADERS, [cell_fields(c) for c in cells]) + [""]
        if i + 1 == len(groups) or groups[i + 1][0][:2] != key:
            lines += ["### overall: geometric mean of time / fastest across shapes", ""]
            lines += md_table(OVERALL_HEADERS,
                              [overall_fields(o) for o in overall.get(key, [])]) + [""]
    if report.failed:
        lines += [f"## cells not ranked ({len(report.failed)})", ""]
        lines += md_table(FAILED_HEADERS, [failed_fields(f) for f in report.failed]) + [""]
    lines += [f"> note: {md_escape(n)}" for n in report.notes]
    return "\n".join(lines).rstrip() + "\n"


# ---- CSV -----------------------------------------------------------------------------------

CSV_COLUMNS = ("record", "kernel", "dtype", "shape", "variant", "status", "place",
               "letters", "median_ns", "ci_low_ns", "ci_high_ns", "ratio_fastest", "ratio_low",
               "ratio_high", "speedup", "speedup_low", "speedup_high", "speedup_peer",
               "speedup_peer_low", "speedup_peer_high", "paired", "blocks_slowed", "answer",
               "peak_bytes", "memory_place", "pareto", "flops", "gflops", "peak_fraction",
               "geomean", "shapes", "total_shapes", "warnings", "error", "cell_id")


def _csv_rows(report: Report):
    ranked = {f.name for f in fields(RankedCell)}
    for c in report.cells:
        row = {k: getattr(c, k) for k in ranked}
        yield {**row, "record": "cell", "status": "ok", "warnings": "; ".join(c.warnings)}
    for o in report.overall:
        yield {"record": "overall", **{f.name: getattr(o, f.name) for f in fields(o)}}
    for f in report.failed:
        yield {"record": "failed", **{k.name: getattr(f, k.name) for k in fields(f)}}


def to_csv(report: Report) -> str:
    """The report as one CSV: ``record`` is ``cell``, ``overall`` or ``failed``; raw units."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in _csv_rows(report):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def check_format(fmt_name: str) -> str:
    """``fmt_name`` if known, else BadInput naming the known formats."""
    if fmt_name not in FORMATS:
        raise BadInput(f"unknown format {fmt_name!r} (expected one of {', '.join(FORMATS)})",
                       key="--format")
    return fmt_name
