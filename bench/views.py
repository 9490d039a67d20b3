"""Terminal tables (rich) for the CLI: kernels, verification, cells, rankings."""

from __future__ import annotations

import math

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from impls.registry import Registry

NS_PER_MS = 1e6
BYTES_PER_MIB = 2**20


def fmt_ms(ns: float | None) -> str:
    """Nanoseconds as milliseconds with 3 significant digits ("" when missing)."""
    if ns is None or (isinstance(ns, float) and math.isnan(ns)):
        return ""
    return f"{ns / NS_PER_MS:.3g}"


def fmt_num(x: float | None, spec: str = ".3g") -> str:
    """A number with ``spec`` ("" when missing)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return format(x, spec)


def fmt_mib(n: float | None) -> str:
    """Bytes as MiB ("" when missing)."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return ""
    return f"{n / BYTES_PER_MIB:.3g}"


def print_kernels(console: Console, registry: Registry) -> None:
    """One table row per kernel, then its variants."""
    table = Table(title="kernels")
    for col in ("kernel", "dims (default, min)", "axes", "baseline", "variants"):
        table.add_column(col)
    for k in registry.kernels.values():
        dims = " ".join(f"{d.name}={d.default}(≥{d.minimum})" for d in k.dims)
        axes = "; ".join(f"{a.name}: {', '.join(a.values)}" for a in k.axes)
        table.add_row(escape(k.name), dims, escape(axes), escape(k.baseline), str(len(k.variants)))
    console.print(table)
    for k in registry.kernels.values():
        console.print(f"[bold]{escape(k.name)}[/]: " + ", ".join(map(escape, k.variants)))


def print_verification(console: Console, report) -> None:
    """Every check: variant, dtype, status, max_rel_err."""
    table = Table(title="verification against the float64 reference")
    for col in ("variant", "dtype", "shape", "status", "max_rel_err", "detail"):
        table.add_column(col)
    for c in report.checks:
        style = {"ok": "green", "skipped": "yellow"}.get(c.status, "red")
        table.add_row(escape(c.variant), c.dtype, c.shape, f"[{style}]{c.status}[/]",
                      fmt_num(c.max_rel_err, ".2e"), escape(c.detail))
    console.print(table)


def print_ranking(console: Console, ranked: pd.DataFrame, title: str = "ranking") -> None:
    """Ranked variants, one section per kernel, shape and dtype."""
    table = Table(title=title)
    for col in ("kernel · shape · dtype", "place", "variant", "median ms", "95% CI ms",
                "speed-up", "peak MiB", "GFLOP/s", "% peak", "warnings"):
        table.add_column(col, overflow="fold")
    previous = None
    for r in ranked.itertuples(index=False):
        group = f"{r.kernel} {r.shape} {r.dtype}"
        if previous is not None and group != previous:
            table.add_section()
        ci = f"{fmt_ms(r.ci_low_ns)}–{fmt_ms(r.ci_high_ns)}"
        warnings = r.warnings if r.warnings is not None else []
        codes = ", ".join(dict.fromkeys(w.split(":")[0] for w in warnings))
        pct = fmt_num(100 * r.peak_fraction, ".0f") if r.peak_fraction == r.peak_fraction \
            and r.peak_fraction is not None else ""
        table.add_row(group if group != previous else "", str(r.place),
                      escape(r.variant.split("/", 1)[1]), fmt_ms(r.median_ns), ci,
                      fmt_num(r.speedup, ".2f"), fmt_mib(r.peak_bytes), fmt_num(r.gflops, ".3g"),
                      pct, escape(codes))
        previous = group
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
        table.add_row(escape(r.variant), r.shape, r.dtype, r.status, escape(str(r.error or "")))
    console.print(table)
