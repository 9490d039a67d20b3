"""Plotly figure specs (plain dicts) for the dashboard, one set per kernel.

Every function is pure: DataFrames in, ``{"id", "title", "data", "layout"}``
dicts out, ready for ``Plotly.newPlot``. Plotly renders trace names and hover
text as a small subset of HTML, so every string that comes from results
(variant, shape, cell id) is ``html.escape``d: ``<script>`` shows as text.
Traces are per variant (a line per dtype or per cell inside one trace, broken
by ``None``), so 10,000 cells stay a few dozen traces per plot.
"""

from __future__ import annotations

import hashlib
import html
import math
from collections.abc import Iterable

import pandas as pd

from gradsweep.report import short

NS_PER_MS = 1e6
BYTES_PER_MIB = 2**20
PERCENT = 100.0
#: Significant digits kept in plotted numbers (keeps the page small).
DIGITS = 4
DTYPE_SYMBOL = {"float64": "circle", "float32": "diamond"}
DTYPE_DASH = {"float64": "solid", "float32": "dot"}
PARETO_COLOR = "#d62728"
PLOT_HEIGHT = 520
LEGEND_FONT = 10


def esc(text: object) -> str:
    """The one HTML escaper: ``text`` as plain text in HTML and in plotly's names and
    hover labels (which read HTML); quotes too, so safe in attributes; None is ""."""
    return html.escape("" if text is None else str(text), quote=True)


def slug(name: str) -> str:
    """A stable id for ``name`` safe in HTML ids and URLs (``k`` + 10 hex digits)."""
    return "k" + hashlib.sha256(name.encode()).hexdigest()[:10]


def num(x: object) -> float | None:
    """A plotted number rounded to :data:`DIGITS` significant digits; None when missing."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return float(f"{float(x):.{DIGITS}g}")


def layout(title: str, x_title: str, y_title: str, *, x_log: bool = True,
           y_log: bool = True, x_type: str | None = None) -> dict:
    """A plot layout: titled axes (log by default) and a legend on the right."""
    return {"title": {"text": esc(title), "x": 0.01, "xanchor": "left", "font": {"size": 14}},
            "height": PLOT_HEIGHT,
            "xaxis": {"title": {"text": x_title}, "type": x_type or ("log" if x_log else "linear")},
            "yaxis": {"title": {"text": y_title}, "type": "log" if y_log else "linear"},
            "legend": {"font": {"size": LEGEND_FONT}, "groupclick": "togglegroup"},
            "hovermode": "closest", "margin": {"t": 50, "r": 10}}


def figure(fig_id: str, title: str, data: list[dict], lay: dict) -> dict:
    """One figure spec."""
    return {"id": fig_id, "title": title, "data": data, "layout": lay}


def _trace(variant: str, dtype: str, x: Iterable, y: Iterable, text: Iterable,
           mode: str, first: bool, hover_y: str) -> dict:
    """A variant's trace for one dtype; the legend shows each variant once."""
    return {"type": "scatter", "mode": mode, "name": esc(short(variant)),
            "legendgroup": esc(variant), "showlegend": first,
            "x": [num(v) for v in x], "y": [num(v) for v in y], "text": [esc(t) for t in text],
            "marker": {"symbol": DTYPE_SYMBOL.get(dtype, "circle"), "size": 6},
            "line": {"dash": DTYPE_DASH.get(dtype, "solid"), "width": 1},
            "hovertemplate": f"%{{text}}<br>{hover_y}<extra>%{{fullData.name}} "
                             f"{esc(dtype)}</extra>"}


def _per_variant(ranked: pd.DataFrame, x: str, y: pd.Series, mode: str,
                 hover_y: str) -> list[dict]:
    """A trace per variant and dtype of ``y`` against column ``x``, sorted by ``x``."""
    frame = ranked.assign(_y=y).sort_values([x, "shape"], kind="stable")
    traces = []
    seen: set[str] = set()
    for (variant, dtype), g in frame.groupby(["variant", "dtype"], sort=True):
        text = g["shape"].astype(str) + " " + g["dtype"].astype(str)
        traces.append(_trace(variant, dtype, g[x], g["_y"], text, mode, variant not in seen,
                             hover_y))
        seen.add(variant)
    return traces


def time_vs_size(kernel: str, ranked: pd.DataFrame) -> dict:
    """Median time against the problem's FLOPs, per variant (log-log)."""
    data = _per_variant(ranked, "flops", ranked["median_ns"] / NS_PER_MS, "lines+markers",
                        "%{y:.3g} ms at %{x:.3g} FLOP")
    return figure(f"size-{slug(kernel)}", f"{kernel}: time vs problem size", data,
                  layout(f"{kernel}: time vs FLOPs (○ float64, ◇ float32)",
                         "backward FLOPs", "median ms"))


def roofline(kernel: str, ranked: pd.DataFrame) -> dict:
    """Fraction of the node's GEMM peak against problem size, per variant."""
    known = ranked[ranked["peak_fraction"].notna()]
    data = _per_variant(known, "flops", known["peak_fraction"] * PERCENT, "lines+markers",
                        "%{y:.3g}% of GEMM peak")
    return figure(f"roofline-{slug(kernel)}", f"{kernel}: roofline fraction", data,
                  layout(f"{kernel}: % of the GEMM peak", "backward FLOPs",
                         "% of GEMM peak", y_log=False))


def relative(ranked: pd.DataFrame, column: str) -> pd.Series:
    """``column`` over its minimum at the same kernel, shape and dtype (1 = best there)."""
    best = ranked.groupby(["kernel", "shape", "dtype"])[column].transform("min")
    return ranked[column] / best


def _front_trace(ranked: pd.DataFrame) -> dict:
    """Open stars on the Pareto-front members of every (shape, dtype)."""
    front = ranked[ranked["pareto"].astype(bool)]
    text = [esc(f"{short(v)} {s} {d}") for v, s, d in
            zip(front["variant"], front["shape"], front["dtype"])]
    return {"type": "scatter", "mode": "markers", "name": "Pareto front",
            "x": [num(v) for v in front["_mem"]], "y": [num(v) for v in front["_time"]],
            "text": text, "marker": {"symbol": "star-open", "size": 11, "color": PARETO_COLOR},
            "hovertemplate": "%{text}<br>%{y:.3g}× fastest, %{x:.3g}× leanest"
                             "<extra>Pareto front</extra>"}


def time_vs_memory(kernel: str, ranked: pd.DataFrame) -> dict:
    """Time against peak memory, each relative to the best at its shape and dtype.

    Every shape lands on one scale (1, 1 = fastest and leanest); open stars mark
    the members of each shape's Pareto front.
    """
    known = ranked[ranked["peak_bytes"].notna()]
    known = known.assign(_mem=relative(known, "peak_bytes"), _time=relative(known, "median_ns"))
    data = _per_variant(known, "_mem", known["_time"], "markers",
                        "%{y:.3g}× fastest, %{x:.3g}× leanest")
    data.append(_front_trace(known))
    return figure(f"memory-{slug(kernel)}", f"{kernel}: time vs memory", data,
                  layout(f"{kernel}: time vs memory, ☆ Pareto",
                         "peak memory / leanest at the shape",
                         "median time / fastest at the shape"))


def history(kernel: str, cells: pd.DataFrame, started: dict[str, str]) -> dict:
    """Each cell's median per sweep over time, over its first shown median: a trace
    per variant, a line per cell (1 = unchanged).

    Parameters
    ----------
    cells : pd.DataFrame
        ``ok`` cells of the kernel over several sweeps (sweep_id, cell_id,
        variant, shape, dtype, median_ns).
    started : dict
        sweep_id -> ISO start time (the x axis).
    """
    frame = cells.assign(_at=cells["sweep_id"].map(started)).sort_values(
        ["variant", "cell_id", "_at"], kind="stable")
    first = frame.groupby("cell_id")["median_ns"].transform("first")
    frame = frame.assign(_ratio=frame["median_ns"] / first)
    data = []
    for variant, g in frame.groupby("variant", sort=True):
        xs: list = []
        ys: list = []
        text: list = []
        for _, c in g.groupby("cell_id", sort=False):
            xs += list(c["_at"]) + [None]
            ys += [num(v) for v in c["_ratio"]] + [None]
            text += [esc(f"{s} {d} {i}: {m / NS_PER_MS:.3g} ms in {w}") for s, d, i, w, m in
                     zip(c["shape"], c["dtype"], c["cell_id"], c["sweep_id"],
                         c["median_ns"])] + [""]
        data.append({"type": "scatter", "mode": "lines+markers", "name": esc(short(variant)),
                     "x": xs, "y": ys, "text": text, "marker": {"size": 5},
                     "line": {"width": 1},
                     "hovertemplate": "%{text}<br>%{y:.3g}× its first<extra>%{fullData.name}"
                                      "</extra>"})
    return figure(f"history-{slug(kernel)}", f"{kernel}: history", data,
                  layout(f"{kernel}: history of each cell",
                         "sweep started", "median / the cell's first median", x_type="date"))


def kernel_figures(kernel: str, ranked: pd.DataFrame, history_cells: pd.DataFrame | None,
                   started: dict[str, str]) -> list[dict]:
    """Every figure of one kernel (history only with more than one sweep)."""
    figs = [time_vs_size(kernel, ranked), time_vs_memory(kernel, ranked),
            roofline(kernel, ranked)]
    if history_cells is not None and history_cells["sweep_id"].nunique() > 1:
        figs.append(history(kernel, history_cells, started))
    return figs
