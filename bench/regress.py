"""Regression alerts: compare two sweeps cell by cell, decide, and report.

A candidate sweep is compared with a base sweep cell by cell (joined on
``cell_id``). When both sweeps share a ``ci_run`` (the paired A B B A gate of
``gradsweep ci``) sample i of one side was taken next to sample i of the
other, so the comparison is paired: the ratio is ``exp(median(log(c_i/b_i)))``
with a paired bootstrap interval and a Wilcoxon signed-rank p-value on the
log-ratios. Otherwise it is unpaired: the ratio of medians with an
independent bootstrap interval and a Mann-Whitney U p-value. A cell
*regressed* when p < alpha and the candidate is slower by more than the
threshold (ratio > 1 + threshold); it *improved* when p < alpha and ratio <
1 - threshold (DESIGN.md, Statistics).

Outputs: a rich table, Markdown (also appended to ``$GITHUB_STEP_SUMMARY``)
and JUnit XML (one testcase per cell, a failure per regression).

References
----------
Wilcoxon, F. (1945). Individual comparisons by ranking methods. Biometrics Bull. 1(6), 80-83.
Mann, H. B. & Whitney, D. R. (1947). Ann. Math. Statist. 18(1), 50-60.
Efron, B. & Tibshirani, R. J. (1993). *An Introduction to the Bootstrap*. Chapman & Hall.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gradsweep import stats, store
from gradsweep.defaults import ALPHA, MIN_EFFECT
from gradsweep.errors import BadInput
from gradsweep.report import md_escape

#: Minimum effect: the candidate must be this fraction slower (or faster).
THRESHOLD = MIN_EFFECT
from gradsweep.stats import IMPROVEMENT, REGRESSION, UNCHANGED  # noqa: E402

#: Cell columns that describe the machine; a difference between the sides is warned about.
MACHINE_FIELDS = ("host", "cpu", "blas", "numpy_version", "python_version", "threads")
#: Environment variable GitHub Actions sets to a Markdown file shown on the run's page.
STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
NS_PER_MS = 1e6
#: Identity columns of a cell carried into every comparison row.
IDENTITY = ("cell_id", "kernel", "variant", "shape", "dtype")


@dataclass(frozen=True)
class CellComparison:
    """One cell compared: candidate / base.

    Attributes
    ----------
    cell_id, kernel, variant, shape, dtype : str
    paired : bool
        Whether samples were paired by index.
    n_base, n_candidate : int
        Samples on each side.
    base_median_ns, candidate_median_ns : float
    ratio : float
        Candidate over base: the paired ratio or the ratio of medians; > 1 is slower.
    ci_low, ci_high : float
        95% percentile-bootstrap interval of ``ratio``.
    p_value : float
        Wilcoxon signed-rank (paired) or Mann-Whitney U (unpaired), two-sided.
    verdict : str
        ``regression``, ``improvement`` or ``unchanged``.
    """

    cell_id: str
    kernel: str
    variant: str
    shape: str
    dtype: str
    paired: bool
    n_base: int
    n_candidate: int
    base_median_ns: float
    candidate_median_ns: float
    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str


@dataclass(frozen=True)
class Uncompared:
    """A cell that is not ok on a side (or missing there), listed but not compared."""

    cell_id: str
    variant: str
    shape: str
    dtype: str
    base_status: str
    candidate_status: str
    reason: str


@dataclass(frozen=True)
class Comparison:
    """Every cell of two sweeps compared, with the settings and any warnings."""

    base_sweep: str
    candidate_sweep: str
    paired: bool
    alpha: float
    threshold: float
    cells: tuple[CellComparison, ...]
    uncompared: tuple[Uncompared, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def regressions(self) -> tuple[CellComparison, ...]:
        """Cells that got significantly slower by more than the threshold."""
        return tuple(c for c in self.cells if c.verdict == REGRESSION)

    @property
    def improvements(self) -> tuple[CellComparison, ...]:
        """Cells that got significantly faster by more than the threshold."""
        return tuple(c for c in self.cells if c.verdict == IMPROVEMENT)

    @property
    def exit_code(self) -> int:
        """1 when any cell regressed, else 0."""
        return 1 if self.regressions else 0


# --------------------------------------------------------------------------- statistics


def check_settings(alpha: float, threshold: float) -> None:
    """BadInput unless 0 < alpha < 1 and threshold >= 0."""
    if not 0.0 < alpha < 1.0:
        raise BadInput(f"must be in (0, 1), got {alpha}", key="--alpha")
    if not threshold >= 0.0:
        raise BadInput(f"must be 0 or more, got {threshold}", key="--threshold")


def ratio_statistics(base: Sequence[float], candidate: Sequence[float],
                     paired: bool) -> tuple[float, float, float, float]:
    """Ratio candidate/base, its 95% bootstrap interval and a two-sided p-value.

    Paired: ``exp(median(log(c_i / b_i)))``, a bootstrap over pairs and the
    Wilcoxon signed-rank test on the log-ratios (Wilcoxon 1945). Unpaired: the
    ratio of medians, independent bootstraps (Efron & Tibshirani 1993) and the
    Mann-Whitney U test (Mann & Whitney 1947).

    Parameters
    ----------
    base, candidate : sequence of float, shape (n,) and (m,); m == n when paired
        Positive times (ns per call).
    paired : bool

    Returns
    -------
    (ratio, ci_low, ci_high, p_value) : tuple of float
    """
    if paired:
        ratio = stats.paired_ratio(candidate, base)
        p = stats.wilcoxon_signed_rank(stats.paired_log_ratios(candidate, base))
    else:
        ratio = stats.ratio_of_medians(candidate, base)
        p = stats.mann_whitney(candidate, base)
    low, high = stats.bootstrap_ci_ratio(candidate, base, paired=paired)
    return ratio, low, high, p


def decide(ratio: float, p_value: float, alpha: float = ALPHA,
           threshold: float = THRESHOLD) -> str:
    """The verdict: significant (p < alpha) and beyond the threshold either way.

    Parameters
    ----------
    ratio : float
        Candidate over base.
    p_value, alpha, threshold : float

    Returns
    -------
    str
        ``regression`` when ratio > 1 + threshold, ``improvement`` when ratio <
        1 - threshold, each only when p < alpha; else ``unchanged``.
    """
    if p_value >= alpha:
        return UNCHANGED
    if ratio > 1.0 + threshold:
        return REGRESSION
    if ratio < 1.0 - threshold:
        return IMPROVEMENT
    return UNCHANGED


def compare_cell(base: pd.Series, candidate: pd.Series, paired: bool,
                 alpha: float = ALPHA, threshold: float = THRESHOLD) -> CellComparison:
    """Compare one ok cell's samples; pairs only when both sides have as many samples."""
    b = [float(x) for x in base["samples_ns"]]
    c = [float(x) for x in candidate["samples_ns"]]
    paired = paired and len(b) == len(c)
    ratio, low, high, p = ratio_statistics(b, c, paired)
    return CellComparison(
        **{k: str(candidate[k]) for k in IDENTITY}, paired=paired, n_base=len(b),
        n_candidate=len(c), base_median_ns=stats.median(b), candidate_median_ns=stats.median(c),
        ratio=ratio, ci_low=low, ci_high=high, p_value=p,
        verdict=decide(ratio, p, alpha, threshold))


def _status(frame: pd.DataFrame, cell_id: str) -> str:
    return str(frame.loc[cell_id, "status"]) if cell_id in frame.index else "missing"


def _uncompared(cell_id: str, row: pd.Series, base: pd.DataFrame,
                candidate: pd.DataFrame) -> Uncompared:
    b, c = _status(base, cell_id), _status(candidate, cell_id)
    errors = [f"{side}: {frame.loc[cell_id, 'error']}" for side, frame in
              (("base", base), ("candidate", candidate))
              if cell_id in frame.index and isinstance(frame.loc[cell_id, "error"], str)]
    reason = "; ".join(errors) or f"base {b}, candidate {c}"
    return Uncompared(cell_id=cell_id, variant=str(row["variant"]), shape=str(row["shape"]),
                      dtype=str(row["dtype"]), base_status=b, candidate_status=c, reason=reason)


def _usable(frame: pd.DataFrame, cell_id: str) -> bool:
    if cell_id not in frame.index or frame.loc[cell_id, "status"] != "ok":
        return False
    samples = frame.loc[cell_id, "samples_ns"]
    return samples is not None and len(samples) > 0


def compare_frames(base: pd.DataFrame, candidate: pd.DataFrame, *, paired: bool,
                   alpha: float = ALPHA, threshold: float = THRESHOLD,
                   base_sweep: str = "base", candidate_sweep: str = "candidate") -> Comparison:
    """Compare two sweeps' ``cells`` rows, matched by ``cell_id``.

    Parameters
    ----------
    base, candidate : pandas.DataFrame
        Rows of the ``cells`` table (at least the identity columns, status,
        error, samples_ns and the machine fields).
    paired : bool
        Pair samples by index (the sweeps share a ``ci_run``).
    alpha, threshold : float
    base_sweep, candidate_sweep : str
        Names for the report.

    Returns
    -------
    Comparison
        Cells ok on both sides compared (in the candidate's order, then the
        base's), the others listed as :class:`Uncompared`.
    """
    check_settings(alpha, threshold)
    b, c = base.set_index("cell_id", drop=False), candidate.set_index("cell_id", drop=False)
    order = list(dict.fromkeys([*c.index, *b.index]))
    compared, skipped = [], []
    for cell_id in order:
        if _usable(b, cell_id) and _usable(c, cell_id):
            compared.append(compare_cell(b.loc[cell_id], c.loc[cell_id], paired, alpha,
                                         threshold))
        else:
            row = c.loc[cell_id] if cell_id in c.index else b.loc[cell_id]
            skipped.append(_uncompared(cell_id, row, b, c))
    return Comparison(base_sweep=base_sweep, candidate_sweep=candidate_sweep, paired=paired,
                      alpha=alpha, threshold=threshold, cells=tuple(compared),
                      uncompared=tuple(skipped), warnings=machine_differences(base, candidate))


def _values(frame: pd.DataFrame, column: str) -> list[str]:
    if column not in frame.columns:
        return []
    return sorted({str(v) for v in frame[column].dropna()})


def machine_differences(base: pd.DataFrame, candidate: pd.DataFrame,
                        fields: Sequence[str] = MACHINE_FIELDS) -> tuple[str, ...]:
    """One warning per machine field whose values differ between the two sweeps.

    Returns
    -------
    tuple of str
        e.g. ``"different machines: host a (base) vs b (candidate)"``; empty
        when every field agrees (fields missing on a side are not compared).
    """
    found = []
    for name in fields:
        b, c = _values(base, name), _values(candidate, name)
        if b and c and b != c:
            found.append(f"different machines: {name} {', '.join(b)} (base) vs "
                         f"{', '.join(c)} (candidate)")
    return tuple(found)


# --------------------------------------------------------------------------- reading sweeps


def shared_ci_run(base_sweeps: pd.DataFrame, base_id: str, candidate_sweeps: pd.DataFrame,
                  candidate_id: str) -> str | None:
    """The ``ci_run`` both sweeps belong to, or None (then samples are unpaired)."""
    def run_of(frame: pd.DataFrame, sweep_id: str) -> str | None:
        if "ci_run" not in frame.columns:
            return None
        rows = frame.loc[frame[store.PARTITION] == sweep_id, "ci_run"].dropna()
        return str(rows.iloc[-1]) if len(rows) else None

    b, c = run_of(base_sweeps, base_id), run_of(candidate_sweeps, candidate_id)
    return b if b is not None and b == c else None


def compare_sweeps(base_ds: store.Dataset, base: str, candidate_ds: store.Dataset,
                   candidate: str, alpha: float = ALPHA,
                   threshold: float = THRESHOLD) -> Comparison:
    """Read two sweeps (ids or ``latest``) and compare them; BadInput for unknown ids.

    ``latest`` on both sides of one dataset names the newest sweep twice; use ids.
    """
    check_settings(alpha, threshold)
    base_id = store.resolve_sweep(base_ds, base)
    candidate_id = store.resolve_sweep(candidate_ds, candidate)
    if base_ds.uri == candidate_ds.uri and base_id == candidate_id:
        raise BadInput(f"base and candidate are the same sweep {base_id}")
    run = shared_ci_run(store.sweeps(base_ds), base_id, store.sweeps(candidate_ds),
                        candidate_id)
    b = store.read(base_ds, "cells", [base_id])
    c = store.read(candidate_ds, "cells", [candidate_id])
    if not len(b) or not len(c):
        empty = base_id if not len(b) else candidate_id
        raise BadInput(f"sweep {empty} has no cells")
    return compare_frames(b, c, paired=run is not None, alpha=alpha, threshold=threshold,
                          base_sweep=base_id, candidate_sweep=candidate_id)


# --------------------------------------------------------------------------- text


def fmt_ratio(c: CellComparison) -> str:
    """``"1.98x [1.95, 2.01]"``."""
    return f"{c.ratio:.3f}x [{c.ci_low:.3f}, {c.ci_high:.3f}]"


def fmt_p(p: float) -> str:
    """A p-value with 2 significant digits."""
    return f"{p:.2g}" if not math.isnan(p) else ""


def _ms(ns: float) -> str:
    return f"{ns / NS_PER_MS:.3g}"


def summary_line(c: Comparison) -> str:
    """One line: counts of regressions, improvements and cells compared."""
    mode = "paired" if c.paired else "unpaired"
    return (f"{len(c.regressions)} regression(s), {len(c.improvements)} improvement(s) in "
            f"{len(c.cells)} cell(s) compared ({mode}, alpha {c.alpha:g}, threshold "
            f"{100 * c.threshold:g}%); {len(c.uncompared)} not compared")


def ordered(c: Comparison) -> list[CellComparison]:
    """Regressions first (largest ratio first), then improvements, then the rest."""
    rank = {REGRESSION: 0, IMPROVEMENT: 1, UNCHANGED: 2}
    return sorted(c.cells, key=lambda x: (rank[x.verdict], -x.ratio))


MD_ICON = {REGRESSION: ":red_circle: regression", IMPROVEMENT: ":green_circle: improvement",
           UNCHANGED: "unchanged"}


def to_markdown(c: Comparison) -> str:
    """The comparison as GitHub-flavoured Markdown: summary, warnings, tables."""
    lines = [f"## gradsweep: {len(c.regressions)} regression(s)", "",
             f"base `{c.base_sweep}` vs candidate `{c.candidate_sweep}`: {summary_line(c)}.",
             ""]
    lines += [f"> :warning: {md_escape(w)}" for w in c.warnings]
    if c.warnings:
        lines.append("")
    lines += ["| verdict | variant | shape | dtype | base ms | candidate ms | "
              "ratio [95% CI] | p |", "|---|---|---|---|---:|---:|---|---:|"]
    for x in ordered(c):
        lines.append(f"| {MD_ICON[x.verdict]} | `{md_escape(x.variant)}` | {x.shape} | "
                     f"{x.dtype} | {_ms(x.base_median_ns)} | {_ms(x.candidate_median_ns)} | "
                     f"{fmt_ratio(x)} | {fmt_p(x.p_value)} |")
    if c.uncompared:
        lines += ["", "### Not compared", "", "| variant | shape | dtype | base | candidate | "
                  "reason |", "|---|---|---|---|---|---|"]
        lines += [f"| `{md_escape(u.variant)}` | {u.shape} | {u.dtype} | {u.base_status} | "
                  f"{u.candidate_status} | {md_escape(u.reason)} |" for u in c.uncompared]
    return "\n".join(lines) + "\n"


def _testcase(suite: ET.Element, x: CellComparison) -> None:
    case = ET.SubElement(suite, "testcase", classname=f"gradsweep.{x.kernel}.{x.dtype}",
                         name=f"{x.variant} {x.shape} {x.dtype}", time="0")
    detail = (f"{x.variant} {x.shape} {x.dtype}: candidate/base {fmt_ratio(x)}, p "
              f"{fmt_p(x.p_value)}, base {_ms(x.base_median_ns)} ms, candidate "
              f"{_ms(x.candidate_median_ns)} ms ({'paired' if x.paired else 'unpaired'}, "
              f"n {x.n_base}/{x.n_candidate})")
    if x.verdict == REGRESSION:
        failure = ET.SubElement(case, "failure", type="regression",
                                message=f"{x.ratio:.3f}x slower (p {fmt_p(x.p_value)})")
        failure.text = detail
    else:
        ET.SubElement(case, "system-out").text = f"{x.verdict}: {detail}"


def to_junit(c: Comparison) -> str:
    """JUnit XML: a testcase per cell, a ``<failure>`` per regression, skipped ones listed."""
    suites = ET.Element("testsuites", name="gradsweep compare")
    suite = ET.SubElement(suites, "testsuite", name=f"{c.base_sweep}..{c.candidate_sweep}",
                          tests=str(len(c.cells) + len(c.uncompared)),
                          failures=str(len(c.regressions)), errors="0",
                          skipped=str(len(c.uncompared)), time="0")
    props = ET.SubElement(suite, "properties")
    for name, value in (("base", c.base_sweep), ("candidate", c.candidate_sweep),
                        ("paired", str(c.paired).lower()), ("alpha", f"{c.alpha:g}"),
                        ("threshold", f"{c.threshold:g}"), *(("warning", w) for w in c.warnings)):
        ET.SubElement(props, "property", name=name, value=value)
    for x in ordered(c):
        _testcase(suite, x)
    for u in c.uncompared:
        case = ET.SubElement(suite, "testcase", classname="gradsweep.not-compared",
                             name=f"{u.variant} {u.shape} {u.dtype}", time="0")
        ET.SubElement(case, "skipped", message=f"base {u.base_status}, candidate "
                      f"{u.candidate_status}: {u.reason}")
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"



def write_reports(c: Comparison, markdown: str | os.PathLike | None = None,
                  junit: str | os.PathLike | None = None) -> None:
    """Write the Markdown and JUnit files asked for; append Markdown to the step summary."""
    text = to_markdown(c)
    if markdown:
        Path(markdown).write_text(text)
    if junit:
        Path(junit).write_text(to_junit(c))
    summary = os.environ.get(STEP_SUMMARY_ENV)
    if summary:
        with open(summary, "a") as fh:
            fh.write(text)


