"""Plotly figure specs (plain dicts) for the dashboard, one set per kernel.

Every function is pure: DataFrames in, ``{"id", "title", "data", "layout"}``
dicts out, ready for ``Plotly.newPlot``. Plotly renders trace names, tick
labels and hover text as a small subset of HTML, so every string that comes
from results (variant, shape, dtype, cell id) is ``html.escape``d.

Conventions shared by every plot of a kernel:

- **one colour per variant** (:func:`variant_colors`), set explicitly on the
  markers, lines, bars and error bars of every trace of that variant, so
  plotly never cycles to its next colour for a second dtype;
- **dtypes are facets** (one panel each, titled with the dtype) and also
  differ by marker symbol; a variant has one trace per dtype, all in one
  ``legendgroup``, and only its first trace shows in the legend: one legend
  entry per variant, whose colour is the colour of all its traces;
- **error bars** on every point and bar: the 95% interval of the ratio to the
  group's fastest when the ranking gives it (``ratio_fastest``,
  ``ratio_low``, ``ratio_high``), else the median's interval (``ci_low_ns``,
  ``ci_high_ns``) over the fastest median (:func:`ratios`);
- **a plot chosen for the data**: several shapes get time and the ratio to the
  fastest against FLOPs; a single shape gets ranked horizontal bars.
"""

from __future__ import annotations

import hashlib
import html
import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from plotly import colors as plotly_colors
from scipy import stats as sps

from gradsweep.report import short

NS_PER_MS = 1e6
PERCENT = 100.0
#: Significant digits kept in plotted numbers (keeps the page small).
DIGITS = 4
#: Coverage of the history plot's interval over shapes.
CONFIDENCE = 0.95
GROUP_KEYS = ["kernel", "shape", "dtype"]
#: Columns the ranking may give: each member's time over its group's fastest
#: and that ratio's 95% interval.
RATIO_COLUMNS = ("ratio_fastest", "ratio_low", "ratio_high")
#: One answer line per (kernel, shape, dtype) group, when the ranking gives it.
ANSWER_COLUMN = "answer"
DTYPE_SYMBOL = {"float64": "circle", "float32": "diamond"}
DTYPE_DASH = {"float64": "solid", "float32": "dot"}
PARETO_COLOR = "#d62728"
PARETO_GROUP = "pareto"
PLOT_HEIGHT = 520
LEGEND_FONT = 10
#: Fraction of the figure between two facets.
FACET_GAP = 0.07
#: Pixels per bar and around each bar panel of a ranked bar chart.
BAR_PX = 18
BAR_PANEL_PX = 70
BAR_MARGIN_PX = 110
ERROR_WIDTH_PX = 3
#: Palette colours lighter than this are hard to see on white.
MAX_LUMINANCE = 0.75


def esc(text: object) -> str:
    """The one HTML escaper: ``text`` as plain text in HTML and in plotly's names and
    hover labels (which read HTML); quotes too, so safe in attributes; None is ""."""
    return html.escape("" if text is None else str(text), quote=True)


def slug(name: str) -> str:
    """A stable id for ``name`` safe in HTML ids and URLs (``k`` + 10 hex digits)."""
    return "k" + hashlib.sha256(name.encode()).hexdigest()[:10]


def num(x: object) -> float | None:
    """A plotted number rounded to :data:`DIGITS` significant digits; None when missing."""
    if x is None or x is pd.NA:
        return None
    value = float(x)
    return float(f"{value:.{DIGITS}g}") if math.isfinite(value) else None


def luminance(hex_color: str) -> float:
    """Relative luminance in [0, 1] of ``#rrggbb`` (Rec. 709 weights on the sRGB values)."""
    r, g, b = plotly_colors.hex_to_rgb(hex_color)
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def readable_palette() -> list[str]:
    """Plotly's Dark24, Alphabet and Light24 colours, without repeats or the too light."""
    q = plotly_colors.qualitative
    out: list[str] = []
    for color in (c.upper() for c in [*q.Dark24, *q.Alphabet, *q.Light24]):
        if color not in out and luminance(color) <= MAX_LUMINANCE:
            out.append(color)
    return out


def variant_colors(variants: Iterable[str]) -> dict[str, str]:
    """One distinct colour per variant (sorted by name, so stable across plots).

    Plotly's default palette up to 10 variants, then :func:`readable_palette`
    (64 colours), beyond that evenly spaced samples of the Turbo scale.
    """
    names = sorted(set(variants))
    for palette in (plotly_colors.qualitative.Plotly, readable_palette()):
        if len(names) <= len(palette):
            return dict(zip(names, palette))
    return dict(zip(names, plotly_colors.sample_colorscale("Turbo", len(names))))


def dtypes_of(frame: pd.DataFrame) -> list[str]:
    """The dtypes in ``frame`` in facet order (sorted)."""
    return sorted(str(d) for d in frame["dtype"].unique())


def ratios(ranked: pd.DataFrame) -> pd.DataFrame:
    """Each member's time over its group's fastest, with an interval.

    Rows with the ranking's ``ratio_fastest`` and its 95% interval
    (``ratio_low``, ``ratio_high``; paired sweeps) use them; other rows fall back to
    ``median_ns`` over the group's smallest median, with ``ci_low_ns`` and
    ``ci_high_ns`` over that same median as the interval (the member's own
    uncertainty only).

    Parameters
    ----------
    ranked : pd.DataFrame, shape (n, ...)
        Ranked cells: kernel, shape, dtype, median_ns, ci_low_ns, ci_high_ns and
        optionally the :data:`RATIO_COLUMNS`.

    Returns
    -------
    pd.DataFrame, shape (n, 4)
        ``ratio``, ``low``, ``high`` (floats, NaN when unknown) and ``paired``
        (bool: from the ranking's interval), on ``ranked``'s index.
    """
    fastest = ranked.groupby(GROUP_KEYS)["median_ns"].transform("min")
    fallback = [ranked["median_ns"] / fastest, ranked["ci_low_ns"] / fastest,
                ranked["ci_high_ns"] / fastest]
    given = [pd.to_numeric(ranked[c], errors="coerce") if c in ranked
             else pd.Series(np.nan, index=ranked.index) for c in RATIO_COLUMNS]
    paired = given[0].notna() & given[1].notna() & given[2].notna()  # an interval is known
    out = {name: g.where(paired, f).astype(float)
           for name, g, f in zip(("ratio", "low", "high"), given, fallback)}
    return pd.DataFrame({**out, "paired": paired}, index=ranked.index)


def error_bars(value: Sequence, low: Sequence, high: Sequence, color: str) -> dict:
    """An asymmetric plotly error bar from ``low <= value <= high`` (None where unknown)."""
    def gap(a, b) -> list:
        return [None if v is None else max(v, 0.0) for v in (num(x - y) for x, y in zip(a, b))]

    return {"type": "data", "symmetric": False, "visible": True, "color": color,
            "thickness": 1, "width": ERROR_WIDTH_PX,
            "array": gap(high, value), "arrayminus": gap(value, low)}


def axis_suffix(index: int) -> str:
    """Plotly's axis suffix of facet ``index`` ("" for the first, then "2", "3"...)."""
    return "" if index == 0 else str(index + 1)


def _domains(count: int) -> list[tuple[float, float]]:
    """``count`` equal panel extents on [0, 1] with gaps between them (none for 0)."""
    if count < 1:
        return []
    width = (1.0 - FACET_GAP * (count - 1)) / count
    return [(i * (width + FACET_GAP), i * (width + FACET_GAP) + width) for i in range(count)]


def facet_layout(title: str, facets: Sequence[str], x_title: str, y_title: str, *,
                 x_type: str = "log", y_type: str = "log", rows: bool = False,
                 height: int = PLOT_HEIGHT) -> dict:
    """A layout with one panel per facet (side by side, or stacked with ``rows``).

    Side by side, the panels share their y axis; stacked, they share x. Each
    panel is titled with its (escaped) facet name.
    """
    lay = {"title": {"text": esc(title), "x": 0.01, "xanchor": "left", "font": {"size": 14}},
           "height": height, "hovermode": "closest", "margin": {"t": 70, "r": 10},
           "legend": {"font": {"size": LEGEND_FONT}, "groupclick": "togglegroup"},
           "annotations": []}
    domains = _domains(len(facets))
    for i, (facet, (lo, hi)) in enumerate(zip(facets, domains)):
        s = axis_suffix(i)
        x = {"type": x_type, "anchor": f"y{s}"}
        y = {"type": y_type, "anchor": f"x{s}", "automargin": True}
        if rows:
            lo, hi = 1.0 - hi, 1.0 - lo  # the first facet on top
            y["domain"] = [lo, hi]
            y["title"] = {"text": y_title}
            x["matches"] = "x" if i else None
            x["title"] = {"text": x_title} if i == len(facets) - 1 else None
        else:
            x["domain"] = [lo, hi]
            x["title"] = {"text": x_title}
            y["matches"] = "y" if i else None
            y["title"] = {"text": y_title} if i == 0 else None
        lay[f"xaxis{s}"] = {k: v for k, v in x.items() if v is not None}
        lay[f"yaxis{s}"] = {k: v for k, v in y.items() if v is not None}
        lay["annotations"].append(
            {"text": f"<b>{esc(facet)}</b>", "showarrow": False, "xref": "paper",
             "yref": "paper", "x": 0.5 if rows else (lo + hi) / 2,
             "y": hi if rows else 1.0, "xanchor": "center", "yanchor": "bottom"})
    return lay


def figure(fig_id: str, title: str, data: list[dict], lay: dict) -> dict:
    """One figure spec."""
    return {"id": fig_id, "title": title, "data": data, "layout": lay}


def _axes(index: int) -> dict:
    s = axis_suffix(index)
    return {"xaxis": f"x{s}", "yaxis": f"y{s}"}


def _scatter(variant: str, dtype: str, facet: int, color: str, mode: str, first: bool,
             points: pd.DataFrame) -> dict:
    """A variant's trace in one dtype's panel: points has _x, _y, _low, _high, _text."""
    y = list(points["_y"])
    return {"type": "scatter", "mode": mode, "name": esc(short(variant)),
            "legendgroup": esc(variant), "showlegend": first, **_axes(facet),
            "x": [num(v) if isinstance(v, (int, float)) else esc(v) for v in points["_x"]],
            "y": [num(v) for v in y], "text": [esc(t) for t in points["_text"]],
            "marker": {"symbol": DTYPE_SYMBOL.get(dtype, "circle"), "size": 6, "color": color},
            "line": {"dash": DTYPE_DASH.get(dtype, "solid"), "width": 1, "color": color},
            "error_y": error_bars(y, list(points["_low"]), list(points["_high"]), color),
            "hovertemplate": f"%{{text}}<extra>%{{fullData.name}} {esc(dtype)}</extra>"}


def per_variant(frame: pd.DataFrame, colors: dict[str, str], dtypes: Sequence[str],
                mode: str) -> list[dict]:
    """A trace per variant and dtype (in that dtype's panel), points in ``frame`` order.

    ``frame`` has variant, dtype and _x, _y, _low, _high, _text columns; each
    variant shows once in the legend (its first dtype) and keeps its colour.
    """
    traces, seen = [], set()
    for variant in sorted(frame["variant"].unique()):
        for facet, dtype in enumerate(dtypes):
            points = frame[(frame["variant"] == variant) & (frame["dtype"] == dtype)]
            if not len(points):
                continue
            traces.append(_scatter(variant, dtype, facet, colors[variant], mode,
                                   variant not in seen, points))
            seen.add(variant)
    return traces


def size_axis(ranked: pd.DataFrame) -> tuple[pd.Series, str, str]:
    """The x of a plot over shapes: FLOPs (log) when every cell has them, else the shape."""
    flops = pd.to_numeric(ranked["flops"], errors="coerce")
    if len(flops) and flops.notna().all():
        return flops.astype(float), "log", "backward FLOPs"
    return ranked["shape"].astype(str), "category", "shape"


def single_shape(ranked: pd.DataFrame) -> bool:
    """Whether ``ranked`` (one kernel) has one shape: then bars, not a scatter over size."""
    return ranked["shape"].nunique() <= 1


def _fmt_interval(value: float, low: float, high: float, unit: str) -> str:
    if not math.isfinite(low) or not math.isfinite(high):
        return f"{value:.3g}{unit}"
    return f"{value:.3g}{unit} [{low:.3g}, {high:.3g}]"


def _over_size(ranked: pd.DataFrame, y: pd.Series, low: pd.Series, high: pd.Series,
               label: str) -> tuple[pd.DataFrame, str]:
    """Points ordered by size with hover text; returns them and the x axis type."""
    x, x_type, _ = size_axis(ranked)
    text = [f"{s} {d}: " + _fmt_interval(v, lo, hi, label) for s, d, v, lo, hi in
            zip(ranked["shape"], ranked["dtype"], y, low, high)]
    frame = ranked.assign(_x=x, _y=y, _low=low, _high=high, _text=text,
                          _order=pd.to_numeric(ranked["flops"], errors="coerce"))
    return frame.sort_values(["_order", "shape"], kind="stable"), x_type


def ratio_vs_size(kernel: str, ranked: pd.DataFrame) -> dict:
    """Each variant's time over the fastest at each shape, against FLOPs, per dtype panel."""
    r = ratios(ranked)
    frame, x_type = _over_size(ranked, r["ratio"], r["low"], r["high"], "× the fastest")
    dtypes = dtypes_of(ranked)
    data = per_variant(frame, variant_colors(ranked["variant"]), dtypes, "lines+markers")
    _, _, x_title = size_axis(ranked)
    return figure(f"ratio-{slug(kernel)}", f"{kernel}: time relative to the fastest", data,
                  facet_layout(f"{kernel}: time / fastest at the shape (95% interval)", dtypes,
                               x_title, "time / fastest", x_type=x_type))


def time_vs_size(kernel: str, ranked: pd.DataFrame) -> dict:
    """Median time (ms, with its interval) against the problem's FLOPs, per dtype panel."""
    ms = [ranked[c] / NS_PER_MS for c in ("median_ns", "ci_low_ns", "ci_high_ns")]
    frame, x_type = _over_size(ranked, *ms, " ms")
    dtypes = dtypes_of(ranked)
    data = per_variant(frame, variant_colors(ranked["variant"]), dtypes, "lines+markers")
    _, _, x_title = size_axis(ranked)
    return figure(f"size-{slug(kernel)}", f"{kernel}: time vs problem size", data,
                  facet_layout(f"{kernel}: median time vs problem size", dtypes, x_title,
                               "median ms", x_type=x_type))


def roofline_bounds(ranked: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Percent of the GEMM peak and its interval (from the median's interval: time inverts)."""
    pct = ranked["peak_fraction"].astype(float) * PERCENT
    median = ranked["median_ns"].astype(float)
    return pct, pct * median / ranked["ci_high_ns"], pct * median / ranked["ci_low_ns"]


def roofline(kernel: str, ranked: pd.DataFrame) -> dict:
    """Percent of the node's GEMM peak against problem size, per dtype panel."""
    known = ranked[ranked["peak_fraction"].notna()]
    frame, x_type = _over_size(known, *roofline_bounds(known), "% of GEMM peak")
    dtypes = dtypes_of(known)
    data = per_variant(frame, variant_colors(ranked["variant"]), dtypes, "lines+markers")
    _, _, x_title = size_axis(known)
    return figure(f"roofline-{slug(kernel)}", f"{kernel}: roofline fraction", data,
                  facet_layout(f"{kernel}: % of the GEMM peak", dtypes, x_title,
                               "% of GEMM peak", x_type=x_type, y_type="linear"))


def relative(ranked: pd.DataFrame, column: str) -> pd.Series:
    """``column`` over its minimum at the same kernel, shape and dtype (1 = best there)."""
    return ranked[column] / ranked.groupby(GROUP_KEYS)[column].transform("min")


def _front_traces(known: pd.DataFrame, dtypes: Sequence[str]) -> list[dict]:
    """Open stars on the Pareto-front members, one trace per dtype panel, one legend entry."""
    traces = []
    for facet, dtype in enumerate(dtypes):
        front = known[known["pareto"].astype(bool) & (known["dtype"] == dtype)]
        if not len(front):
            continue
        traces.append({
            "type": "scatter", "mode": "markers", "name": "Pareto front", **_axes(facet),
            "legendgroup": PARETO_GROUP, "showlegend": not traces,
            "x": [num(v) for v in front["_x"]], "y": [num(v) for v in front["_y"]],
            "text": [esc(f"{short(v)} {s} {d}") for v, s, d in
                     zip(front["variant"], front["shape"], front["dtype"])],
            "marker": {"symbol": "star-open", "size": 11, "color": PARETO_COLOR},
            "hovertemplate": "%{text}<br>%{y:.3g}× fastest, %{x:.3g}× leanest"
                             "<extra>Pareto front</extra>"})
    return traces


def time_vs_memory(kernel: str, ranked: pd.DataFrame) -> dict:
    """Time against peak memory, each relative to the best at its shape and dtype.

    Every shape lands on one scale (1, 1 = fastest and leanest); the time has
    the interval of :func:`ratios`; open stars mark each shape's Pareto front.
    """
    known = ranked[ranked["peak_bytes"].notna()]
    r = ratios(known)
    text = [f"{s} {d}: " + _fmt_interval(v, lo, hi, "× fastest") + f", {m:.3g}× leanest"
            for s, d, v, lo, hi, m in zip(known["shape"], known["dtype"], r["ratio"], r["low"],
                                          r["high"], relative(known, "peak_bytes"))]
    frame = known.assign(_x=relative(known, "peak_bytes"), _y=r["ratio"], _low=r["low"],
                         _high=r["high"], _text=text)
    dtypes = dtypes_of(known)
    data = per_variant(frame, variant_colors(ranked["variant"]), dtypes, "markers")
    data += _front_traces(frame, dtypes)
    return figure(f"memory-{slug(kernel)}", f"{kernel}: time vs memory", data,
                  facet_layout(f"{kernel}: time vs memory, ☆ Pareto", dtypes,
                               "peak memory / leanest at the shape",
                               "median time / fastest at the shape"))


def _bar(variant: str, facet: int, color: str, first: bool, row: pd.Series) -> dict:
    """One horizontal bar (a variant in one dtype's panel) with its error bar."""
    return {"type": "bar", "orientation": "h", "name": esc(short(variant)),
            "legendgroup": esc(variant), "showlegend": first, **_axes(facet),
            "x": [num(row["_y"])], "y": [esc(short(variant))],
            "hovertext": [esc(row["_text"])], "textposition": "none", "marker": {"color": color},
            "error_x": error_bars([row["_y"]], [row["_low"]], [row["_high"]], "#333"),
            "hovertemplate": "%{hovertext}<extra>%{fullData.name}</extra>"}


def ranked_bars(fig_id: str, title: str, frame: pd.DataFrame, colors: dict[str, str],
                x_title: str, *, best_low: bool = True) -> dict:
    """Horizontal bars, one panel per dtype stacked, each ranked best on top.

    ``frame`` has variant, dtype, _y (the bar), _low, _high, _text; with
    ``best_low`` the smallest _y is best (times), else the largest (% of peak).
    """
    dtypes = dtypes_of(frame)
    data, seen, order = [], set(), {}
    for facet, dtype in enumerate(dtypes):
        g = frame[frame["dtype"] == dtype].sort_values("_y", ascending=best_low, kind="stable")
        order[facet] = [esc(short(v)) for v in g["variant"]]
        for _, row in g.iterrows():
            data.append(_bar(row["variant"], facet, colors[row["variant"]],
                             row["variant"] not in seen, row))
            seen.add(row["variant"])
    bars = max((len(o) for o in order.values()), default=1)
    height = BAR_MARGIN_PX + len(dtypes) * (bars * BAR_PX + BAR_PANEL_PX)
    lay = facet_layout(title, dtypes, x_title, "", x_type="linear", y_type="category",
                       rows=True, height=max(height, PLOT_HEIGHT))
    for facet, names in order.items():
        axis = lay[f"yaxis{axis_suffix(facet)}"]
        axis.update(categoryorder="array", categoryarray=names, autorange="reversed",
                    title={"text": ""}, tickfont={"size": LEGEND_FONT})
    lay.update(barmode="overlay", bargap=0.25)
    return figure(fig_id, title, data, lay)


def ranking_bars(kernel: str, ranked: pd.DataFrame) -> dict:
    """A single shape's ranking: time over the fastest per variant, bars with intervals."""
    r = ratios(ranked)
    text = [f"{s} {d}: " + _fmt_interval(v, lo, hi, "× the fastest") + f" ({m / NS_PER_MS:.3g} ms)"
            for s, d, v, lo, hi, m in zip(ranked["shape"], ranked["dtype"], r["ratio"],
                                          r["low"], r["high"], ranked["median_ns"])]
    frame = ranked.assign(_y=r["ratio"], _low=r["low"], _high=r["high"], _text=text)
    shape = esc(ranked["shape"].iloc[0]) if len(ranked) else ""
    return ranked_bars(f"ratio-{slug(kernel)}", f"{kernel}: ranking at {shape}", frame,
                       variant_colors(ranked["variant"]), "time / fastest (95% interval)")


def roofline_bars(kernel: str, ranked: pd.DataFrame) -> dict:
    """A single shape's % of the GEMM peak per variant, bars with intervals, best on top."""
    known = ranked[ranked["peak_fraction"].notna()]
    pct, low, high = roofline_bounds(known)
    text = [f"{s} {d}: " + _fmt_interval(v, lo, hi, "% of GEMM peak") for s, d, v, lo, hi in
            zip(known["shape"], known["dtype"], pct, low, high)]
    frame = known.assign(_y=pct, _low=low, _high=high, _text=text)
    return ranked_bars(f"roofline-{slug(kernel)}", f"{kernel}: % of the GEMM peak", frame,
                       variant_colors(ranked["variant"]), "% of GEMM peak",
                       best_low=False)


def history_summary(cells: pd.DataFrame, started: dict[str, str]) -> pd.DataFrame:
    """Per variant, dtype and sweep: the geometric mean over shapes of each cell's median
    over its first shown median, with a 95% interval.

    The interval is Student's t interval of the mean log ratio over the shapes
    (``scipy.stats.t``); a variant with one shape in a sweep falls back to that
    cell's median interval (``ci_low_ns``, ``ci_high_ns``) over its first median.

    Parameters
    ----------
    cells : pd.DataFrame, shape (n, ...)
        ``ok`` cells over several sweeps: sweep_id, cell_id, variant, dtype,
        median_ns and optionally ci_low_ns, ci_high_ns.
    started : dict
        sweep_id -> ISO start time.

    Returns
    -------
    pd.DataFrame
        variant, dtype, sweep_id, at, ratio, low, high, shapes; sorted by
        variant, dtype, at.
    """
    frame = cells.assign(at=cells["sweep_id"].map(started)).sort_values(
        ["cell_id", "at"], kind="stable")
    first = frame.groupby("cell_id")["median_ns"].transform("first")
    bounds = [frame[c] / first if c in frame else np.nan for c in ("ci_low_ns", "ci_high_ns")]
    frame = frame.assign(_log=np.log(frame["median_ns"] / first), _lo=bounds[0],
                         _hi=bounds[1])
    keys = ["variant", "dtype", "sweep_id", "at"]
    agg = frame.groupby(keys, sort=True).agg(
        mean=("_log", "mean"), sd=("_log", "std"), shapes=("_log", "size"),
        one_low=("_lo", "first"), one_high=("_hi", "first")).reset_index()
    n = agg["shapes"].to_numpy()
    t = sps.t.ppf(0.5 + CONFIDENCE / 2, np.maximum(n - 1, 1))
    half = t * agg["sd"].fillna(0.0).to_numpy() / np.sqrt(n)
    mean = agg["mean"].to_numpy()
    one = n == 1
    return agg[keys].assign(
        ratio=np.exp(mean), low=np.where(one, agg["one_low"], np.exp(mean - half)),
        high=np.where(one, agg["one_high"], np.exp(mean + half)), shapes=n).sort_values(
        ["variant", "dtype", "at"], kind="stable", ignore_index=True)


def history(kernel: str, cells: pd.DataFrame, started: dict[str, str]) -> dict:
    """Each variant's time over the shown sweeps relative to its first, per dtype panel.

    One line per variant and dtype (:func:`history_summary`: geometric mean
    over its shapes, 95% interval), 1 = unchanged.
    """
    summary = history_summary(cells, started)
    text = [f"{d} in {w} ({s} shapes): " + _fmt_interval(v, lo, hi, "× its first")
            for d, w, s, v, lo, hi in zip(summary["dtype"], summary["sweep_id"],
                                          summary["shapes"], summary["ratio"], summary["low"],
                                          summary["high"])]
    frame = summary.assign(_x=summary["at"], _y=summary["ratio"], _low=summary["low"],
                           _high=summary["high"], _text=text)
    dtypes = dtypes_of(cells)
    data = per_variant(frame, variant_colors(cells["variant"]), dtypes, "lines+markers")
    return figure(f"history-{slug(kernel)}", f"{kernel}: history", data,
                  facet_layout(f"{kernel}: history (geomean over shapes, 95% interval)",
                               dtypes, "sweep started", "median / the cell's first median",
                               x_type="date"))


def kernel_figures(kernel: str, ranked: pd.DataFrame, history_cells: pd.DataFrame | None,
                   started: dict[str, str]) -> list[dict]:
    """Every figure of one kernel, chosen for its data.

    One shape: ranked bars of the time over the fastest, time vs memory, bars
    of the % of the GEMM peak. Several: the time over the fastest and the
    time against FLOPs, time vs memory, the roofline fraction against FLOPs.
    History with more than one sweep. Plots with no data are left out.
    """
    if single_shape(ranked):
        figs = [ranking_bars(kernel, ranked), time_vs_memory(kernel, ranked),
                roofline_bars(kernel, ranked)]
    else:
        figs = [ratio_vs_size(kernel, ranked), time_vs_size(kernel, ranked),
                time_vs_memory(kernel, ranked), roofline(kernel, ranked)]
    if history_cells is not None and history_cells["sweep_id"].nunique() > 1:
        figs.append(history(kernel, history_cells, started))
    return [f for f in figs if f["data"]]
