"""Terminal tables (rich) for the CLI: kernels, verification, cells, rankings, jobs, history.

Every value that comes from the user or the dataset (names, variants, errors,
warnings) is shown through :func:`text`: control characters escaped
(:func:`gradsweep.errors.printable`) and rich markup escaped, so a sweep named
``\x1b[2J`` or ``[red]`` prints as what it is. pandas is imported only by the
functions that need it, so importing this module stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from gradsweep.errors import printable
from gradsweep.impls.registry import Registry
from gradsweep.units import NS_PER_MS

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

    from gradsweep.impls.registry import Registry

BYTES_PER_MIB = 2**20


def missing(value) -> bool:
    """None, NaN, NaT or NA (without importing pandas: each of those differs from itself,
    and NA's comparisons are NA, which has no truth value)."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except TypeError:  # pandas.NA
        return True
    except ValueError:  # an array: a value, not missing
        return False


def plain(value) -> str:
    """Any cell value as plain text ("" when missing)."""
    return "" if missing(value) else str(value)


def text(value) -> str:
    """A value from the user or the dataset, safe in a rich table: "" when missing,
    control characters escaped (:func:`~gradsweep.errors.printable`), markup escaped."""
    return escape(printable(plain(value)))


def fmt_ms(ns: float | None) -> str:
    """Nanoseconds as milliseconds with 3 significant digits ("" when missing)."""
    if missing(ns):
        return ""
    return f"{ns / NS_PER_MS:.3g}"


def fmt_num(x: float | None, spec: str = ".3g") -> str:
    """A number with ``spec`` ("" when missing)."""
    return "" if missing(x) else format(x, spec)


def fmt_mib(n: float | None) -> str:
    """Bytes as MiB ("" when missing)."""
    return "" if missing(n) else f"{n / BYTES_PER_MIB:.3g}"


def print_kernels(console: Console, registry: Registry) -> None:
    """One table row per kernel, then its variants."""
    table = Table(title="kernels")
    for col in ("kernel", "dims (default, min)", "axes", "baseline", "variants"):
        table.add_column(col)
    for k in registry.kernels.values():
        dims = " ".join(f"{d.name}={d.default}(≥{d.minimum})" for d in k.dims)
        axes = "; ".join(f"{a.name}: {', '.join(a.values)}" for a in k.axes)
        table.add_row(text(k.name), text(dims), text(axes), text(k.baseline),
                      str(len(k.variants)))
    console.print(table)
    for k in registry.kernels.values():
        console.print(f"[bold]{text(k.name)}[/]: " + ", ".join(map(text, k.variants)))


def print_verification(console: Console, report) -> None:
    """Every check: variant, dtype, status, max_rel_err."""
    table = Table(title="verification against the float64 reference")
    for col in ("variant", "dtype", "shape", "status", "max_rel_err", "detail"):
        table.add_column(col)
    for c in report.checks:
        style = {"ok": "green", "skipped": "yellow"}.get(c.status, "red")
        table.add_row(text(c.variant), text(c.dtype), text(c.shape),
                      f"[{style}]{text(c.status)}[/]", fmt_num(c.max_rel_err, ".2e"),
                      text(c.detail))
    console.print(table)


#: Columns never wrapped: ids, times and numbers (names and messages wrap instead).
UNBROKEN = {"sweep", "job", "started", "started (UTC)", "ended", "commit", "git", "status",
            "ok", "failed", "cells", "median ms", "95% CI ms", "step", "role", "name", "letters"}
#: Columns of ``run``'s ranking: each ratio carries its interval ("1.37x faster [1.31, 1.44]").
RANKING_COLUMNS = ("place", "letters", "variant", "median ms", "vs fastest", "vs baseline",
                   "vs torch")


def print_ranking(console: Console, ranked: pd.DataFrame, title: str = "ranking") -> None:
    """Per kernel, shape and dtype: the one-line answer, then each member's place, time
    and its time relative to the group's fastest, the baseline and torch, with 95%
    intervals. Variants show only the axes that vary, with a space after each comma so a
    narrow terminal wraps between axes, never inside a name or a number."""
    from gradsweep import report as rp

    console.print(f"[bold]{escape(printable(title))}[/]")
    groups: dict[tuple, list] = {}
    for c in rp.ranked_records(ranked):
        groups.setdefault((c.kernel, c.shape, c.dtype), []).append(c)
    for (kernel, shape, dtype), cells in groups.items():
        console.print(f"\n[bold]{text(kernel)} {text(shape)} {dtype}[/]: "
                      f"{text(cells[0].answer)}", highlight=False)
        names = rp.varying_names([c.variant for c in cells])
        longest = max(len(axis) for n in names.values() for axis in n.split(","))
        table = Table(box=None, pad_edge=False, show_edge=False)
        for col in RANKING_COLUMNS:
            table.add_column(col, justify="right" if col in ("place", "median ms") else "left",
                             overflow="fold", min_width=longest if col == "variant" else None)
        for c in sorted(cells, key=rp.place_order):
            fields = rp.cell_fields(c)
            table.add_row(*[text(names[c.variant].replace(",", ", ")) if col == "variant"
                            else text(fields[col]) for col in RANKING_COLUMNS])
        console.print(table)


def print_failures(console: Console, cells: pd.DataFrame) -> None:
    """Cells that are not ok, with status and error."""
    bad = cells[cells["status"] != "ok"]
    if not len(bad):
        return
    table = Table(title="cells not ranked")
    for col in ("variant", "shape", "dtype", "status", "error"):
        table.add_column(col, overflow="fold")
    for r in bad.itertuples(index=False):
        table.add_row(text(r.variant), text(r.shape), text(r.dtype), text(r.status),
                      text(r.error))
    console.print(table)


def _report_table(title: str, headers, rows) -> Table:
    """A rich table of plain-text rows (every value escaped)."""
    table = Table(title=text(title), title_justify="left")
    for col in headers:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(text(row[h]) for h in headers))
    return table


#: Columns of the rich report's shape tables (all columns: --format md or csv).
REPORT_COLUMNS = ("place", "letters", "variant", "cell", "median ms", "vs fastest", "vs baseline",
                  "vs torch", "peak MiB", "warnings")


def _ranking_table(title: str, cells) -> Table:
    """A shape's ranking under its one-line answer: variants by the axes that vary (a space
    after each comma, so a narrow terminal wraps between axes), ratios with intervals."""
    from gradsweep import report as rp

    names = rp.varying_names([c.variant for c in cells])
    longest = max(len(axis) for n in names.values() for axis in n.split(","))
    caption = f"{title}: {cells[0].answer}" if cells[0].answer else title
    common = set(common_warnings(cells))
    table = Table(title=text(caption), title_justify="left", box=None, pad_edge=False)
    for col in REPORT_COLUMNS:
        table.add_column(col, overflow="fold", no_wrap=col in UNBROKEN | {"cell", "peak MiB"},
                         min_width=longest + 1 if col == "variant" else None)
    for c in cells:
        fields = {**rp.cell_fields(c), "variant": names[c.variant].replace(",", ", "),
                  "warnings": ", ".join(w for w in _codes(c.warnings) if w not in common)}
        table.add_row(*(text(fields[h]) for h in REPORT_COLUMNS))
    if common:
        table.caption = text(summary_line(sorted(common), len(cells)))
        table.caption_justify = "left"
    return table


#: Ranked rows the rich report prints at most (rich renders ~0.7 ms a row); shapes
#: beyond a kernel and dtype's share are counted, and left to --format md/csv.
REPORT_MAX_ROWS = 400


def _shape_budget(groups) -> dict[tuple[str, str], int]:
    """Rows each (kernel, dtype) may print: an equal share of :data:`REPORT_MAX_ROWS`."""
    keys = list(dict.fromkeys(k[:2] for k, _ in groups))
    return {k: REPORT_MAX_ROWS // max(1, len(keys)) for k in keys}


def print_report(console: Console, report) -> None:
    """A ``gradsweep.report.Report``: per kernel and dtype the shapes' rankings (up to a
    share of :data:`REPORT_MAX_ROWS`) and the overall ranking, then the cells not
    ranked and any notes."""
    from gradsweep import report as rp

    console.print(f"[bold]gradsweep report[/]: {escape(rp.title(report))}")
    overall = rp.overall_by(report)
    groups = report.groups()
    budget = _shape_budget(groups)
    omitted: dict[tuple[str, str], int] = {}
    for i, ((kernel, dtype, shape), cells) in enumerate(groups):
        key = (kernel, dtype)
        if len(cells) <= budget[key] or budget[key] == REPORT_MAX_ROWS // len(budget):
            budget[key] -= len(cells)
            console.print(_ranking_table(f"{kernel} · {dtype} · {shape}", cells))
        else:
            omitted[key] = omitted.get(key, 0) + 1
        if i + 1 == len(groups) or groups[i + 1][0][:2] != key:
            console.print(_report_table(
                f"{kernel} · {dtype} · overall (geometric mean of time / fastest)",
                rp.OVERALL_HEADERS, [rp.overall_fields(o) for o in overall.get(key, [])]))
    if report.failed:
        failed = report.failed[:REPORT_MAX_ROWS]
        console.print(_report_table(f"cells not ranked ({len(report.failed)})",
                                    rp.FAILED_HEADERS, [rp.failed_fields(f) for f in failed]))
    for (kernel, dtype), n in omitted.items():
        console.print(f"note: {kernel} {dtype}: {n} more shapes not shown; "
                      "see --format md or csv, or the dashboard", markup=False, highlight=False)
    if len(report.failed) > REPORT_MAX_ROWS:
        console.print(f"note: {len(report.failed) - REPORT_MAX_ROWS} more cells not ranked "
                      "not shown; see --format md or csv", markup=False, highlight=False)
    for note in report.notes:
        console.print(f"note: {note}", markup=False, highlight=False)


def print_sweeps(console: Console, sweeps: pd.DataFrame) -> None:
    """``results list``: one row per sweep, oldest first."""
    table = Table(title="sweeps", box=None, title_justify="left")
    for col in ("sweep", "name", "started (UTC)", "status", "ok", "failed", "cells", "git"):
        table.add_column(col, overflow="fold", no_wrap=col in UNBROKEN)
    styles = {"finished": "green", "running": "cyan", "incomplete": "yellow"}
    for r in sweeps.itertuples(index=False):
        style = styles.get(r.status, "red")
        started = "" if missing(r.started_at) else f"{r.started_at:%Y-%m-%d %H:%M:%S}"
        table.add_row(text(r.sweep_id), text(r.name), started,
                      f"[{style}]{text(r.status)}[/]", str(r.ok), str(r.failed),
                      str(r.cells), text(plain(r.git_commit)[:12]))
    console.print(table)


def _codes(warnings) -> list[str]:
    return list(dict.fromkeys(str(w).split(":")[0] for w in (warnings if warnings is not None
                                                             else [])))


def common_warnings(rows) -> list[str]:
    """Warning codes every row carries (``high-load`` on a loaded machine): said once in a
    summary line rather than on each row."""
    sets = [set(_codes(r.warnings)) for r in rows]
    return sorted(set.intersection(*sets)) if len(sets) > 1 else []


def summary_line(codes: list[str], n: int) -> str:
    """One line for warnings that every one of ``n`` cells carries."""
    what = {"high-load": "the machine was loaded (load average above its cores)",
            "descheduled": "samples were descheduled (wall time > 1.1 x CPU time)"}
    said = "; ".join(what.get(c, c) for c in codes)
    return f"warning: in all {n} cells {said}: absolute times are suspect, ratios less so"


def print_cells(console: Console, cells: pd.DataFrame, title: str) -> None:
    """``results show``: cells with their short id, median, CI, peak memory, GFLOP/s,
    status and warnings. A column with one value for every cell (kernel, shape, dtype) goes
    into the title; names and shapes wrap between axes, never inside a name or a number;
    warnings every cell carries are said once, after the table."""
    from gradsweep.query import short_cell_id

    rows = list(cells.itertuples(index=False))
    common = common_warnings(rows)
    constant = [c for c in ("kernel", "shape", "dtype")
                if rows and len({getattr(r, c) for r in rows}) == 1]
    heading = " · ".join([title, *(str(getattr(rows[0], c)) for c in constant)])
    shown = [c for c in ("cell", "kernel", "variant", "shape", "dtype", "median ms",
                         "95% CI ms", "peak MiB", "GFLOP/s", "status", "warnings")
             if c not in constant]
    longest = {c: max((len(t) for r in rows for t in str(getattr(r, c)).replace("/", ",")
                       .split(",")), default=1) for c in ("variant", "shape")}
    table = Table(title=text(heading), title_justify="left", box=None, pad_edge=False)
    for col in shown:
        width = longest.get(col)  # the longest axis and its comma, on one line
        table.add_column(col, overflow="fold", min_width=width + 1 if width else None,
                         no_wrap=col in ("cell", "median ms", "95% CI ms", "peak MiB",
                                         "GFLOP/s", "dtype"))
    for r in rows:
        ci = f"{fmt_ms(r.ci_low_ns)}–{fmt_ms(r.ci_high_ns)}" if fmt_ms(r.ci_low_ns) else ""
        values = {"cell": short_cell_id(r.cell_id), "kernel": r.kernel,
                  "variant": r.variant.split("/", 1)[-1].replace(",", ", "),
                  "shape": str(r.shape).replace(",", ", "), "dtype": r.dtype,
                  "median ms": fmt_ms(r.median_ns), "95% CI ms": ci,
                  "peak MiB": fmt_mib(r.peak_bytes), "GFLOP/s": fmt_num(r.gflops),
                  "status": r.status if r.status == "ok" else f"{r.status}: {plain(r.error)}",
                  "warnings": ", ".join(c for c in _codes(r.warnings) if c not in common)}
        table.add_row(*(text(values[c]) for c in shown))
    console.print(table)
    if common:
        console.print(text(summary_line(common, len(rows))), highlight=False)


def print_frame(console: Console, frame: pd.DataFrame, title: str | None = None) -> None:
    """Any frame (``results sql``) as a table, every value as text."""
    table = Table(title=text(title) if title else None)
    for col in frame.columns:
        table.add_column(text(col), overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*(text(v) for v in row))
    console.print(table)


#: Widest code column of ``print_profile``.
PROFILE_CODE_WIDTH = 56


def print_profile(console: Console, profile, top: int = 15) -> None:
    """``gradsweep profile``: the hottest lines of a cell's variant code (``gradsweep.profile``)."""
    cell = profile.cell
    console.print(printable(
        f"{cell.variant} {cell.shape_text} {cell.dtype} threads={cell.threads} "
        f"(cell {cell.cell_id}): {profile.calls} calls in {profile.elapsed_s:.2f} s "
        f"under scalene, {profile.ms_per_call:.3g} ms/call profiled"),
        markup=False, highlight=False)
    table = Table(title=text(f"hot lines of {', '.join(profile.files) or 'the variant'} "
                             "(% of the profiled CPU time)"))
    for col in ("line", "function", "CPU %", "Python %", "native %", "system %", "peak MB",
                "MB/call", "code"):
        table.add_column(col, overflow="ellipsis", no_wrap=True,
                         max_width=PROFILE_CODE_WIDTH if col == "code" else None,
                         min_width=None if col == "code" else len(col),
                         justify="left" if col in ("line", "function", "code") else "right")
    shown = profile.lines[:top]
    for r in shown:
        table.add_row(f"{text(r.file)}:{r.line}", text(r.function), f"{r.cpu_percent:.1f}",
                      f"{r.cpu_percent_python:.1f}", f"{r.cpu_percent_native:.1f}",
                      f"{r.cpu_percent_system:.1f}", fmt_num(r.peak_mb or None, ".3g"),
                      fmt_num(r.alloc_mb or None, ".3g"), text(r.code.strip()))
    console.print(table)
    total = sum(r.cpu_percent for r in profile.lines)
    console.print(f"{len(shown)} of {len(profile.lines)} lines shown, holding "
                  f"{sum(r.cpu_percent for r in shown):.0f} % of {total:.0f} % CPU.",
                  markup=False, highlight=False)
    console.print("MB/call: allocated per backward call (scalene samples allocations); time in "
                  "a native call can be charged to the next Python line (a callee's def).",
                  markup=False, highlight=False)


def _when(ms: int | None) -> str:
    return "" if not ms else f"{datetime.fromtimestamp(ms / 1000, UTC):%Y-%m-%d %H:%M:%S}Z"


def jobs_table(jobs: list) -> Table:
    """A rich table of jobs: id, status, sweep name, start, end, message."""
    table = Table(title="Ray jobs")
    for col in ("job", "status", "name", "started", "ended", "message"):
        table.add_column(col, overflow="fold", no_wrap=col in UNBROKEN)
    for j in jobs:
        meta = j.metadata or {}
        table.add_row(text(j.submission_id or j.job_id), text(j.status),
                      text(meta.get("gradsweep_name")), _when(j.start_time), _when(j.end_time),
                      text((j.message or "").splitlines()[0] if j.message else ""))
    return table


def status_lines(job) -> list[str]:
    """``gradsweep status``: the job's status, message, entrypoint and results (plain
    text: print each through :func:`~gradsweep.errors.printable`)."""
    meta = job.metadata or {}
    lines = [f"{job.submission_id}: {job.status}", f"entrypoint: {job.entrypoint}"]
    if meta.get("gradsweep_results"):
        lines.append(f"results: {meta['gradsweep_results']}")
    if job.message:  # a failed job's message carries its log tail: see ``logs``
        lines.append(f"message: {job.message.strip().splitlines()[0]}")
    if job.driver_exit_code is not None:
        lines.append(f"exit code: {job.driver_exit_code}")
    return lines


def print_history(console: Console, history: pd.DataFrame, steps: Sequence) -> None:
    """The sweeps of one cell with their medians, then the detected steps."""
    first = history.iloc[0]
    table = Table(box=None, title_justify="left",
                  title=text(f"{first['variant']} {first['shape']} {first['dtype']} "
                             f"(cell {first['cell_id']})"))
    for col in ("sweep", "started", "name", "role", "commit", "status", "median ms",
                "95% CI ms", "step"):
        table.add_column(col, overflow="fold", no_wrap=col in UNBROKEN)
    at = {s.index: s for s in steps}
    for i, r in history.iterrows():
        step = f"{at[i].ratio:.2f}x" if i in at else ""
        ci = "" if missing(r.ci_low_ns) else f"{fmt_ms(r.ci_low_ns)}–{fmt_ms(r.ci_high_ns)}"
        started = "" if missing(r.started_at) else f"{r.started_at:%m-%d %H:%M}"
        table.add_row(text(r.sweep_id), started, text(r["name"]), text(r.role),
                      text(plain(r.git_commit)[:10]), text(r.status), fmt_ms(r.median_ns), ci,
                      f"[bold]{step}[/]" if step else "")
    console.print(table)
    for s in steps:
        before = history.loc[:s.index - 1]
        prev = before[before["status"] == "ok"].iloc[-1]["sweep_id"] if len(before) else "?"
        console.print(printable(
            f"step at {history.loc[s.index, 'sweep_id']} (after {prev}): "
            f"{s.before / NS_PER_MS:.3g} ms -> {s.after / NS_PER_MS:.3g} ms, {s.ratio:.2f}x"),
            markup=False, highlight=False)
    if not steps:
        console.print(f"no step in {int((history['status'] == 'ok').sum())} ok sweep(s)",
                      markup=False, highlight=False)
