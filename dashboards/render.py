"""The static dashboard: one ``index.html`` plus ``plotly.min.js`` and ``style.css``.

:func:`write_site` reads the sweeps from a dataset and writes the site;
:func:`render_page` turns collected data into the page (pure). The page works
from disk with no network: plotly.min.js is copied from the installed plotly
package. Every name and message is escaped (``html.escape`` in tables,
escaped strings in the figures' JSON, and the JSON made safe inside
``<script>``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from string import Template

import pandas as pd

from gradsweep import report as rp
from gradsweep import store
from gradsweep.dashboards import figures as fg

TEMPLATES = Path(__file__).parent / "templates"
PLOTLY_JS = "plotly.min.js"
STYLE = "style.css"
INDEX = "index.html"
#: Hottest source lines shown per profiled variant.
PROFILE_TOP = 10
#: Places per kernel and dtype in the summary at the top.
LEADERS = 3
#: Shapes per kernel and dtype whose one-line answers and ranking tables the page shows,
#: smallest problem first; the others are counted, with the command that ranks them all.
#: The plots show every shape. (Every table of a sweep of 10,000 shapes made a 78 MB page.)
SHOWN_SHAPES = 100
#: Rows of the table of cells not ranked; ``gradsweep report`` lists them all.
SHOWN_FAILED = 200
HISTORY_COLUMNS = ["cell_id", "kernel", "variant", "shape", "dtype", "status", "median_ns",
                   "ci_low_ns", "ci_high_ns"]
NS_PER_MS = 1e6
PROFILE_CPU = ("cpu_percent_python", "cpu_percent_native", "cpu_percent_system")


@dataclass(frozen=True)
class SiteData:
    """Everything the page shows, read from the dataset."""

    report: rp.Report
    sweeps: pd.DataFrame          # one row per shown sweep, oldest first
    history: pd.DataFrame | None  # ok cells of every shown sweep (None for one sweep)
    nodes: pd.DataFrame
    profiles: pd.DataFrame


@dataclass(frozen=True)
class Shown:
    """The shapes of one kernel and dtype the page details, and how many it does not."""

    shapes: tuple[str, ...]
    hidden: int


e = fg.esc


def script_json(value: object) -> str:
    """JSON safe inside ``<script>``: ``<``, ``>`` and ``&`` as ``\\u`` escapes."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# ---- reading -------------------------------------------------------------------------------

def _iso(value) -> str:
    return "" if value is None or pd.isna(value) else pd.Timestamp(value).isoformat()


def collect(dataset: store.Dataset, sweep_ids: Sequence[str]) -> SiteData:
    """Read what the page needs; the newest of ``sweep_ids`` is the one ranked."""
    if not sweep_ids:
        raise ValueError("no sweep to show")
    known = store.sweeps(dataset)
    shown = known[known[store.PARTITION].isin(list(sweep_ids))].sort_values("started_at")
    ids = list(shown[store.PARTITION]) or list(sweep_ids)
    primary = ids[-1]
    history = None
    if len(ids) > 1:
        history = store.read(dataset, "cells", ids, columns=HISTORY_COLUMNS)
        history = history[(history["status"] == "ok") & history["median_ns"].notna()]
    return SiteData(report=rp.load_report(dataset, primary), sweeps=shown.reset_index(drop=True),
                    history=history, nodes=store.read(dataset, "nodes", [primary]),
                    profiles=store.read(dataset, "profiles", [primary]))


# ---- tables --------------------------------------------------------------------------------

def table(headers: Sequence[str], rows: Sequence[str], left: Sequence[str] = ()) -> str:
    """An HTML table; ``rows`` are ready ``<tr>`` strings, headers are escaped."""
    head = "".join(f'<th class="{"t" if h in left else ""}">{e(h)}</th>' for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def tr(cells: Sequence[tuple[str, str]], cls: str = "") -> str:
    """A row of ``(text, css class)`` cells; the text is escaped."""
    tds = "".join(f'<td class="{c}">{e(t)}</td>' for t, c in cells)
    return f'<tr class="{cls}">{tds}</tr>'


LEFT = ("variant", "shape", "status", "error", "dtype", "file", "function", "code")


def _ranked_row(c: rp.RankedCell) -> str:
    values = rp.cell_fields(c)
    cells = [(values[h], "t" if h in LEFT else "") for h in rp.CELL_HEADERS]
    cells[rp.CELL_HEADERS.index("Pareto")] = (values["Pareto"], "pareto")
    row = tr(cells, "p1" if c.place == 1 else "")
    if c.warnings:  # full warning text on hover, beside the cell it concerns
        code = e(values["warnings"])
        row = row.replace(f'<td class="">{code}</td>',
                          f'<td class="warn" title="{e("; ".join(c.warnings))}">{code}</td>')
    return row


def ranking_tables(report: rp.Report, kernel: str, shown: dict[str, Shown]) -> str:
    """Per dtype, the ranking of ``kernel`` at each shape ``shown`` (a header row per
    shape, in its order), then how many shapes are not shown and how to rank them."""
    groups = {(d, shape): cells for (k, d, shape), cells in report.groups() if k == kernel}
    parts = []
    span = len(rp.CELL_HEADERS)
    for dtype, part in shown.items():
        rows = []
        for shape in part.shapes:
            rows.append(f'<tr class="shape"><td colspan="{span}">{e(shape)}</td></tr>')
            rows += [_ranked_row(c) for c in groups.get((dtype, shape), ())]
        parts.append(f"<h3>{e(kernel)} · {e(dtype)}: each shape's ranking</h3>"
                     + table(rp.CELL_HEADERS, rows, LEFT)
                     + more_shapes(part.hidden, report.sweep_id, kernel, dtype))
    return "".join(parts)


def more_shapes(hidden: int, sweep_id: str, kernel: str, dtype: str) -> str:
    """The line under a kernel and dtype's tables when ``hidden`` shapes are not shown."""
    if not hidden:
        return ""
    noun = "shape" if hidden == 1 else "shapes"
    command = f"gradsweep report {sweep_id} --kernel {kernel} --dtype {dtype}"
    return (f'<p class="more">{hidden} more {noun} of {e(kernel)} · {e(dtype)} not shown '
            f"here (the plots have every shape): <code>{e(command)}</code> ranks them all.</p>")


def leaders_table(report: rp.Report, top: int = LEADERS) -> str:
    """The first ``top`` places overall of every kernel and dtype, one row each."""
    rows = []
    for (kernel, dtype), entries in rp.overall_by(report).items():
        best = [f"{rp.short(o.variant)} ({o.geomean:.2f})" for o in entries[:top]
                if o.place is not None]
        rows.append(tr([(kernel, "t"), (dtype, "t"), *[(b, "t") for b in best],
                        *[("", "")] * (top - len(best))]))
    headers = ("kernel", "dtype", *[f"place {i + 1} (geomean)" for i in range(top)])
    return table(headers, rows, headers)


def overall_tables(report: rp.Report, kernel: str) -> str:
    """The overall ranking of ``kernel`` at every dtype."""
    parts = []
    for (k, dtype), entries in rp.overall_by(report).items():
        if k != kernel:
            continue
        rows = [tr([(v, "t" if h in LEFT else "") for h, v in rp.overall_fields(o).items()],
                   "p1" if o.place == 1 else "") for o in entries]
        parts.append(f"<h3>{e(kernel)} · {e(dtype)}</h3>"
                     + table(rp.OVERALL_HEADERS, rows, LEFT))
    return "".join(parts)


def failed_table(report: rp.Report, limit: int = SHOWN_FAILED) -> str:
    """Cells not ranked, with their errors: the first ``limit``, then how many more."""
    if not report.failed:
        return "<p>Every cell is ok.</p>"
    rows = [tr([(f.status, "t"), (f.variant, "t"), (f.shape, "t"), (f.dtype, "t"),
                (f.error, "err")]) for f in report.failed[:limit]]
    hidden = len(report.failed) - len(rows)
    more = (f'<p class="more">{hidden} more not shown here: '
            f"<code>{e(f'gradsweep report {report.sweep_id}')}</code> lists them all.</p>"
            if hidden > 0 else "")
    return table(rp.FAILED_HEADERS, rows, LEFT) + more


def hot_lines(profiles: pd.DataFrame, top: int = PROFILE_TOP) -> dict[str, pd.DataFrame]:
    """Per variant, its ``top`` source lines by CPU % (mean over its profiled cells)."""
    if not len(profiles):
        return {}
    frame = profiles.assign(cpu=profiles[list(PROFILE_CPU)].fillna(0).sum(axis=1))
    keys = ["variant", "file", "line", "function", "code"]
    agg = (frame.fillna({"function": "", "code": ""}).groupby(keys, dropna=False)
           .agg(cpu=("cpu", "mean"), peak_mb=("peak_mb", "max"), alloc_mb=("alloc_mb", "mean"))
           .reset_index())
    return {str(v): g.sort_values("cpu", ascending=False).head(top)
            for v, g in agg.groupby("variant", sort=True)}


def profile_tables(profiles: pd.DataFrame) -> str:
    """Hot spots of every profiled variant."""
    hot = hot_lines(profiles)
    if not hot:
        return "<p>No line profiles in this sweep (run with <code>profile = true</code>).</p>"
    headers = ("file", "line", "function", "code", "CPU %", "peak MB", "alloc MB")
    parts = []
    for variant, g in hot.items():
        rows = [tr([(r.file, "t"), (str(r.line), ""), (r.function, "t"), (r.code, "code"),
                    (f"{r.cpu:.1f}", ""), (rp.fmt(fg.num(r.peak_mb)), ""),
                    (rp.fmt(fg.num(r.alloc_mb)), "")]) for r in g.itertuples(index=False)]
        parts.append(f"<h3>{e(variant)}</h3>" + table(headers, rows, LEFT))
    return "".join(parts)


def meta(data: SiteData) -> str:
    """The sweeps shown and the node peaks."""
    rows = [tr([(r.sweep_id, "t"), (r.name, "t"), (r.status, "t"), (_iso(r.started_at), "t"),
                (str(rp._none(r.git_commit) or "")[:12], "t")])
            for r in data.sweeps.itertuples(index=False)]
    parts = [table(("sweep", "name", "status", "started", "git commit"), rows,
                   ("sweep", "name", "status", "started", "git commit"))]
    if len(data.nodes):
        rows = [tr([(r.node, "t"), (r.cpu, "t"), (str(r.cores), ""),
                    (rp.fmt(fg.num(r.gemm_gflops_float64)), ""),
                    (rp.fmt(fg.num(r.gemm_gflops_float32)), "")])
                for r in data.nodes.itertuples(index=False)]
        parts.append(table(("node", "cpu", "cores", "GEMM GFLOP/s float64",
                            "GEMM GFLOP/s float32"), rows, ("node", "cpu")))
    counts = pd.Series([f.status for f in data.report.failed]).value_counts()
    summary = ", ".join([f"{len(data.report.cells)} ok"]
                        + [f"{n} {s}" for s, n in counts.items()])
    notes = "".join(f'<p class="warn">note: {e(n)}</p>' for n in data.report.notes)
    return f'<p class="meta">cells: {e(summary)}</p>' + "".join(parts) + notes


# ---- page ----------------------------------------------------------------------------------

def ranked_frame(report: rp.Report) -> pd.DataFrame:
    """The report's ranked cells as a DataFrame (for the figures)."""
    return pd.DataFrame([vars(c) for c in report.cells],
                        columns=[*rp.RankedCell.__dataclass_fields__])


def _started(data: SiteData) -> dict[str, str]:
    return {r.sweep_id: _iso(r.started_at) for r in data.sweeps.itertuples(index=False)}


def size_order(ranked: pd.DataFrame) -> pd.DataFrame:
    """The first row of each (dtype, shape) group, by dtype, then problem size (FLOPs),
    then shape."""
    sized = ranked.assign(_size=pd.to_numeric(ranked["flops"], errors="coerce"))
    ordered = sized.sort_values(["dtype", "_size", "shape"], kind="stable")
    return ordered.drop_duplicates(["dtype", "shape"])


def shown_shapes(ranked: pd.DataFrame, limit: int = SHOWN_SHAPES) -> dict[str, Shown]:
    """Which shapes of one kernel the page details: per dtype, the ``limit`` smallest.

    Returns
    -------
    dict of str to Shown
        Per dtype (ascending): the shapes shown, smallest problem first, and how
        many others the kernel has at that dtype.
    """
    shown: dict[str, Shown] = {}
    for dtype, group in size_order(ranked).groupby("dtype", sort=True):
        shapes = [str(x) for x in group["shape"]]
        shown[str(dtype)] = Shown(tuple(shapes[:limit]), max(len(shapes) - limit, 0))
    return shown


def group_answers(ranked: pd.DataFrame,
                  shown: dict[str, Shown] | None = None) -> list[tuple[str, str, str]]:
    """The ranking's one-line answer of each (shape, dtype) group of one kernel, if given.

    Read from the ``answer`` column (:data:`dashboards.figures.ANSWER_COLUMN`,
    the same text on every member of a group); groups without one are skipped,
    and so are shapes not in ``shown`` when it is given.

    Returns
    -------
    list of (dtype, shape, answer)
        Ordered by dtype, then problem size.
    """
    if fg.ANSWER_COLUMN not in ranked or not len(ranked):
        return []
    known = ranked[ranked[fg.ANSWER_COLUMN].notna() & (ranked[fg.ANSWER_COLUMN] != "")]
    first = size_order(known)
    if shown is not None:
        keep = {(d, shape) for d, part in shown.items() for shape in part.shapes}
        first = first[[(str(d), str(x)) in keep for d, x in zip(first["dtype"], first["shape"])]]
    return [(str(r.dtype), str(r.shape), str(getattr(r, fg.ANSWER_COLUMN)))
            for r in first.itertuples(index=False)]


def answers_list(answers: list[tuple[str, str, str]]) -> str:
    """The answers as a list at the top of a kernel section (escaped); empty without any."""
    if not answers:
        return ""
    items = "".join(f'<li><span class="group">{e(d)} · {e(s)}</span>: {e(a)}</li>'
                    for d, s, a in answers)
    return f'<ul class="answers">{items}</ul>'


def kernel_section(kernel: str, ranked: pd.DataFrame, data: SiteData,
                   figs: list[dict]) -> str:
    """A kernel's answers, plots (divs filled by plotly) and rankings (all open)."""
    divs = "".join(f'<div class="plot" id="{f["id"]}" title="{e(f["title"])}"></div>'
                   for f in figs)
    shown = shown_shapes(ranked, SHOWN_SHAPES)
    return (f'<section id="{fg.slug(kernel)}"><h2>{e(kernel)}</h2>'
            f"{answers_list(group_answers(ranked, shown))}"
            f'<div class="plots">{divs}</div>'
            f'<div class="rankings"><h3 class="part">overall ranking of {e(kernel)}</h3>'
            f"{overall_tables(data.report, kernel)}"
            f'<h3 class="part">rankings of {e(kernel)} by shape ({len(ranked)} cells)</h3>'
            f"{ranking_tables(data.report, kernel, shown)}</div>"
            "</section>")


def step_rows(history: pd.DataFrame | None, started: dict[str, str]) -> list[dict]:
    """Steps in each cell's medians across the shown sweeps (asv-style, bench.history)."""
    from gradsweep.history import detect_steps

    if history is None or history["sweep_id"].nunique() < 2:
        return []
    frame = history.assign(_at=history["sweep_id"].map(started)).sort_values(
        ["cell_id", "_at"], kind="stable")
    rows = []
    for _, cell in frame.groupby("cell_id", sort=False):
        for step in detect_steps(cell["median_ns"].to_numpy()):
            at = cell.iloc[step.index]
            rows.append({"variant": at["variant"], "shape": at["shape"], "dtype": at["dtype"],
                         "sweep": at["sweep_id"], "before": step.before, "after": step.after,
                         "ratio": step.ratio})
    return sorted(rows, key=lambda r: -abs(r["ratio"] - 1))


def steps_table(rows: list[dict]) -> str:
    """The detected steps, largest change first (escaped)."""
    if not rows:
        return "<p>No step detected (or a single sweep shown).</p>"
    body = [tr([(r["variant"], "t"), (r["shape"], "t"), (r["dtype"], "t"), (r["sweep"], "t"),
                (f"{r['before'] / NS_PER_MS:.3g}", ""), (f"{r['after'] / NS_PER_MS:.3g}", ""),
                (f"{r['ratio']:.2f}×", "")]) for r in rows]
    headers = ["variant", "shape", "dtype", "first sweep after the step", "before ms",
               "after ms", "ratio"]
    return table(headers, body, headers[:4])


def render_page(data: SiteData) -> str:
    """The whole ``index.html`` (pure)."""
    ranked = ranked_frame(data.report)
    started = _started(data)
    sections, figures, nav = [], [], ['<a href="#overall">overall</a>']
    for kernel, group in ranked.groupby("kernel", sort=True):
        hist = None if data.history is None else data.history[data.history["kernel"] == kernel]
        figs = fg.kernel_figures(str(kernel), group, hist, started)
        figures += figs
        sections.append(kernel_section(str(kernel), group, data, figs))
        nav.append(f'<a href="#{fg.slug(str(kernel))}">{e(kernel)}</a>')
    nav += ['<a href="#failed">not ranked</a>', '<a href="#profiles">profiles</a>']
    body = (meta(data) + '<section id="overall"><h2>overall leaders</h2>'
            "<p>Geometric mean over shapes of each variant's time over the fastest's at "
            "that shape (its paired ratio, as in the rankings); variants missing at some "
            "shapes are not placed. Full rankings under each kernel: a member is placed "
            "behind another only when shown slower by 5% or more, and two members that "
            "share no letter were shown that far apart, within a place too.</p>"
            + leaders_table(data.report) + "</section>" + "".join(sections)
            + f'<section id="failed"><h2>cells not ranked ({len(data.report.failed)})</h2>'
            + failed_table(data.report) + "</section>"
            + '<section id="steps"><h2>steps in each cell\'s history</h2>'
            + steps_table(step_rows(data.history, started)) + "</section>"
            + '<section id="profiles"><h2>line-profile hot spots</h2>'
            + profile_tables(data.profiles) + "</section>")
    page = Template((TEMPLATES / INDEX).read_text())
    return page.substitute(title=e(f"gradsweep: {rp.title(data.report)}"), nav="".join(nav),
                           body=body, figures=script_json([_plain(f) for f in figures]),
                           generated=e(datetime.now(UTC).isoformat(timespec="seconds")))


def _plain(fig: dict) -> dict:
    return {"id": fig["id"], "data": fig["data"], "layout": fig["layout"]}


def plotly_js() -> Path:
    """The installed plotly package's plotly.min.js."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / PLOTLY_JS


def write_site(dataset: store.Dataset, sweep_ids: Sequence[str], out_dir: str | Path) -> Path:
    """Write the dashboard of ``sweep_ids`` (the newest is ranked; several add history).

    Parameters
    ----------
    dataset : store.Dataset
    sweep_ids : sequence of str
        Resolved sweep ids (see ``store.resolve_sweep``).
    out_dir : path
        Created if missing; ``index.html``, ``plotly.min.js`` and ``style.css``
        are (over)written.

    Returns
    -------
    Path
        The ``index.html`` written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page = render_page(collect(dataset, sweep_ids))
    shutil.copyfile(plotly_js(), out / PLOTLY_JS)
    shutil.copyfile(TEMPLATES / STYLE, out / STYLE)
    index = out / INDEX
    temporary = out / f".{INDEX}.tmp"
    temporary.write_text(page, encoding="utf-8")
    temporary.replace(index)
    return index.resolve()
