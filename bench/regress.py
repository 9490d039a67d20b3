"""Regression alerts: compare two sweeps cell by cell, decide, and report.

A candidate sweep is compared with a base sweep cell by cell (joined on
``cell_id``), in one of three ways (``CellComparison.method``):

- ``random-effects`` (the gate's): both sweeps share a ``ci_run`` and carry
  blocks (schema 3), so block ``p`` of both sides is process pair ``p`` of
  ``gradsweep ci`` and sample ``(p, r)`` of one side was taken next to sample
  ``(p, r)`` of the other. ``stats.paired_estimate`` gives the ratio and its
  interval over pairs (DerSimonian-Laird, modified Hartung-Knapp): a process
  pair's own bias is between-pair variance, part of the interval.
- ``wilcoxon``: a shared ``ci_run`` without blocks (older gate runs): paired by
  sample index, ``exp(median(log(c_i/b_i)))``, paired bootstrap interval,
  Wilcoxon signed-rank p-value.
- ``mann-whitney``: no shared ``ci_run``: ratio of medians, independent
  bootstraps, Mann-Whitney U. Separate runs differ by process effects
  (PLATFORM.md: unpaired A/A differed by more than 5% in 9 of 10 pairs), which
  these samples cannot show; such a comparison says so first and its verdicts
  are advisory (exit 0) unless ``unpaired_ok`` (``compare --unpaired``).

The p-values of all compared cells are adjusted together by Benjamini-Hochberg
(a false discovery rate at alpha). A cell *regressed* when its adjusted p <
alpha and the candidate is slower by more than the threshold (ratio > 1 +
threshold), *improved* when adjusted p < alpha and ratio < 1 - threshold. With
random effects it is *unchanged* only when its ``1 - alpha`` interval lies
inside ``1 +- threshold`` and *inconclusive* otherwise (``stats.gate_verdict``);
the other methods call everything else unchanged (DESIGN.md, Statistics).

Outputs: a rich table, Markdown (also appended to ``$GITHUB_STEP_SUMMARY``)
and JUnit XML (one testcase per cell, a failure per regression).

References
----------
Benjamini, Y. & Hochberg, Y. (1995). Controlling the false discovery rate. JRSS B 57(1), 289-300.
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

import numpy as np
import pandas as pd

from gradsweep import stats, store
from gradsweep.defaults import ALPHA, CONFIDENCE, MIN_EFFECT
from gradsweep.errors import BadInput
from gradsweep.records import CellResult
from gradsweep.report import md_escape
from gradsweep.stats import IMPROVEMENT, INCONCLUSIVE, REGRESSION, UNCHANGED, RatioEstimate

#: Minimum effect: the candidate must be this fraction slower (or faster).
THRESHOLD = MIN_EFFECT
#: ``CellComparison.method`` values.
RANDOM_EFFECTS, WILCOXON, MANN_WHITNEY = "random-effects", "wilcoxon", "mann-whitney"
#: The first thing an unpaired comparison says (its verdicts are advisory unless asked).
UNPAIRED_WARNING = (
    "unpaired: these sweeps were not measured side by side (no shared ci_run), and separate "
    "runs differ by process effects the samples cannot show (the same code in two processes "
    "differed by more than 5% in 9 of 10 runs on a shared machine)")
ADVISORY = "verdicts are advisory and the exit code is 0; pass --unpaired to gate on them"
GATED_UNPAIRED = "gating on them anyway (--unpaired)"

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
        Whether samples were paired (by block and round, or by index).
    n_base, n_candidate : int
        Samples on each side.
    base_median_ns, candidate_median_ns : float
    ratio : float
        Candidate over base: the random-effects or paired ratio, or the ratio of
        medians; > 1 is slower.
    ci_low, ci_high : float
        95% interval of ``ratio`` (random effects: t over pairs; else bootstrap).
    p_value : float
        Two-sided: the random-effects t-test, Wilcoxon signed-rank or Mann-Whitney U.
    verdict : str
        ``regression``, ``improvement``, ``unchanged`` or ``inconclusive``.
    method : str
        :data:`RANDOM_EFFECTS`, :data:`WILCOXON` or :data:`MANN_WHITNEY`.
    blocks : int
        Process pairs (random effects), else 1.
    p_adjusted : float
        ``p_value`` adjusted by Benjamini-Hochberg across the compared cells.
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
    method: str = MANN_WHITNEY
    blocks: int = 1
    p_adjusted: float = math.nan


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
    advisory: bool = False

    @property
    def regressions(self) -> tuple[CellComparison, ...]:
        """Cells that got significantly slower by more than the threshold."""
        return tuple(c for c in self.cells if c.verdict == REGRESSION)

    @property
    def improvements(self) -> tuple[CellComparison, ...]:
        """Cells that got significantly faster by more than the threshold."""
        return tuple(c for c in self.cells if c.verdict == IMPROVEMENT)

    @property
    def inconclusive(self) -> tuple[CellComparison, ...]:
        """Cells neither flagged nor shown unchanged (the gate's budget ran out)."""
        return tuple(c for c in self.cells if c.verdict == INCONCLUSIVE)

    @property
    def exit_code(self) -> int:
        """1 when any cell regressed and the verdicts are not advisory, else 0."""
        return 1 if self.regressions and not self.advisory else 0


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


@dataclass(frozen=True)
class BlockSamples:
    """One side's samples of a cell with the block (process pair) and round of each.

    Attributes
    ----------
    samples, blocks, rounds : tuple, each of shape (n,)
    """

    samples: tuple[float, ...]
    blocks: tuple[int, ...]
    rounds: tuple[int, ...]


def merged_samples(rows: Sequence[CellResult]) -> BlockSamples:
    """The samples of one side's rows (one per block), with their blocks and rounds."""
    return BlockSamples(tuple(t for r in rows for t in r.samples_ns),
                        tuple(b for r in rows for b in r.sample_block),
                        tuple(k for r in rows for k in r.sample_round))


def block_grids(base: BlockSamples, candidate: BlockSamples) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as arrays (blocks, rounds) on one grid, NaN where a sample is missing.

    Rows are the blocks either side has, in order; equal indices are a pair.
    """
    ids = sorted({*base.blocks, *candidate.blocks})
    row = {b: i for i, b in enumerate(ids)}
    width = 1 + max((*base.rounds, *candidate.rounds), default=-1)
    grids = []
    for side in (base, candidate):
        grid = np.full((len(ids), width), np.nan)
        for t, b, r in zip(side.samples, side.blocks, side.rounds):
            grid[row[b], r] = t
        grids.append(grid)
    return grids[0], grids[1]


def paired_block_estimate(base: BlockSamples, candidate: BlockSamples,
                          confidence: float = CONFIDENCE) -> RatioEstimate | None:
    """Candidate over base, random effects over blocks (``stats.paired_estimate``);
    None when no block has ``stats.MIN_ROUNDS`` complete pairs."""
    b, c = block_grids(base, candidate)
    return stats.paired_estimate(c, b, confidence=confidence)


def _block_samples(row: pd.Series) -> BlockSamples | None:
    """The row's samples with blocks and rounds, or None when it has none (schema < 3)."""
    samples = row.get("samples_ns")
    blocks, rounds = row.get("sample_block"), row.get("sample_round")
    if blocks is None or rounds is None or not isinstance(blocks, (list, tuple, np.ndarray)):
        return None
    if len(blocks) != len(samples) or len(rounds) != len(samples) or not len(samples):
        return None
    return BlockSamples(tuple(float(x) for x in samples), tuple(int(x) for x in blocks),
                        tuple(int(x) for x in rounds))


@dataclass(frozen=True)
class _Stats:
    """One cell's statistics before the verdict (which needs every cell's p-value)."""

    method: str
    ratio: float
    low: float
    high: float
    p: float
    blocks: int = 1
    estimate: RatioEstimate | None = None


def cell_statistics(base: pd.Series, candidate: pd.Series, paired: bool) -> _Stats:
    """The method that fits the two rows (module docstring) and its ratio, interval, p."""
    if paired:
        b, c = _block_samples(base), _block_samples(candidate)
        est = paired_block_estimate(b, c) if b is not None and c is not None else None
        if est is not None:
            return _Stats(RANDOM_EFFECTS, est.ratio, est.low, est.high, est.p_value,
                          est.blocks, est)
    bs = [float(x) for x in base["samples_ns"]]
    cs = [float(x) for x in candidate["samples_ns"]]
    by_index = paired and len(bs) == len(cs)
    ratio, low, high, p = ratio_statistics(bs, cs, by_index)
    return _Stats(WILCOXON if by_index else MANN_WHITNEY, ratio, low, high, p)


def _verdict(found: _Stats, p_adjusted: float, alpha: float, threshold: float) -> str:
    if found.estimate is not None:
        return stats.gate_verdict(found.estimate, threshold, True, alpha=alpha,
                                  p_value=p_adjusted)
    return decide(found.ratio, p_adjusted, alpha, threshold)


def compare_cells(pairs: Sequence[tuple[pd.Series, pd.Series]], paired: bool,
                  alpha: float = ALPHA, threshold: float = THRESHOLD) -> list[CellComparison]:
    """Compare ok cells ``(base row, candidate row)``, p-values BH-adjusted across them."""
    found = [cell_statistics(b, c, paired) for b, c in pairs]
    if not found:
        return []
    adjusted = stats.fdr_adjusted([f.p for f in found])
    out = []
    for (b, c), f, p_adj in zip(pairs, found, adjusted):
        bs, cs = b["samples_ns"], c["samples_ns"]
        out.append(CellComparison(
            **{k: str(c[k]) for k in IDENTITY}, paired=f.method != MANN_WHITNEY,
            n_base=len(bs), n_candidate=len(cs), base_median_ns=_centre(b),
            candidate_median_ns=_centre(c), ratio=f.ratio, ci_low=f.low, ci_high=f.high,
            p_value=f.p, verdict=_verdict(f, float(p_adj), alpha, threshold),
            method=f.method, blocks=f.blocks, p_adjusted=float(p_adj)))
    return out


def _centre(row: pd.Series) -> float:
    """The row's time: its stored ``median_ns`` (over blocks) or the samples' median."""
    value = row.get("median_ns")
    if value is not None and not pd.isna(value):
        return float(value)
    return stats.median([float(x) for x in row["samples_ns"]])


def compare_cell(base: pd.Series, candidate: pd.Series, paired: bool,
                 alpha: float = ALPHA, threshold: float = THRESHOLD) -> CellComparison:
    """Compare one ok cell alone (no other cells to adjust its p-value with)."""
    return compare_cells([(base, candidate)], paired, alpha, threshold)[0]


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
                   base_sweep: str = "base", candidate_sweep: str = "candidate",
                   unpaired_ok: bool = False) -> Comparison:
    """Compare two sweeps' ``cells`` rows, matched by ``cell_id``.

    Parameters
    ----------
    base, candidate : pandas.DataFrame
        Rows of the ``cells`` table (at least the identity columns, status,
        error, samples_ns and the machine fields).
    paired : bool
        The sweeps share a ``ci_run``: pair samples by block and round (or by index).
    alpha, threshold : float
    base_sweep, candidate_sweep : str
        Names for the report.
    unpaired_ok : bool
        Gate on an unpaired comparison (else its verdicts are advisory: exit 0).

    Returns
    -------
    Comparison
        Cells ok on both sides compared (in the candidate's order, then the
        base's), the others listed as :class:`Uncompared`; an unpaired
        comparison's first warning says it is unpaired.
    """
    check_settings(alpha, threshold)
    b, c = base.set_index("cell_id", drop=False), candidate.set_index("cell_id", drop=False)
    order = list(dict.fromkeys([*c.index, *b.index]))
    usable, skipped = [], []
    for cell_id in order:
        if _usable(b, cell_id) and _usable(c, cell_id):
            usable.append((b.loc[cell_id], c.loc[cell_id]))
        else:
            row = c.loc[cell_id] if cell_id in c.index else b.loc[cell_id]
            skipped.append(_uncompared(cell_id, row, b, c))
    warnings = machine_differences(base, candidate)
    if not paired:
        warnings = (f"{UNPAIRED_WARNING}; {GATED_UNPAIRED if unpaired_ok else ADVISORY}",
                    *warnings)
    return Comparison(base_sweep=base_sweep, candidate_sweep=candidate_sweep, paired=paired,
                      alpha=alpha, threshold=threshold,
                      cells=tuple(compare_cells(usable, paired, alpha, threshold)),
                      uncompared=tuple(skipped), warnings=warnings,
                      advisory=not paired and not unpaired_ok)


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
                   candidate: str, alpha: float = ALPHA, threshold: float = THRESHOLD,
                   unpaired_ok: bool = False) -> Comparison:
    """Read two sweeps (ids or ``latest``) and compare them; BadInput for unknown ids.

    Paired when both share a ``ci_run`` (see :func:`compare_frames`, also for
    ``unpaired_ok``). ``latest`` on both sides of one dataset names the newest
    sweep twice; use ids.
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
                          base_sweep=base_id, candidate_sweep=candidate_id,
                          unpaired_ok=unpaired_ok)


# --------------------------------------------------------------------------- text


def fmt_ratio(c: CellComparison) -> str:
    """``"1.98x [1.95, 2.01]"``."""
    return f"{c.ratio:.3f}x [{c.ci_low:.3f}, {c.ci_high:.3f}]"


def fmt_p(p: float) -> str:
    """A p-value with 2 significant digits."""
    return f"{p:.2g}" if not math.isnan(p) else ""


def _ms(ns: float) -> str:
    return f"{ns / NS_PER_MS:.3g}"


def mode_text(c: Comparison) -> str:
    """How the cells were compared, e.g. ``paired over process pairs (random effects)``."""
    methods = {x.method for x in c.cells}
    if RANDOM_EFFECTS in methods:
        pairs = sorted({x.blocks for x in c.cells if x.method == RANDOM_EFFECTS})
        span = f"{pairs[0]}" if len(pairs) == 1 else f"{pairs[0]}-{pairs[-1]}"
        return f"paired over {span} process pairs (random effects)"
    if WILCOXON in methods:
        return "paired by sample (one process per side)"
    return "unpaired" + (", advisory" if c.advisory else "")


def summary_line(c: Comparison) -> str:
    """One line: counts per verdict, how the cells were compared, the settings."""
    counts = (f"{len(c.regressions)} regression(s), {len(c.improvements)} improvement(s)"
              f"{f', {len(c.inconclusive)} inconclusive' if c.inconclusive else ''}")
    return (f"{counts} in {len(c.cells)} cell(s) compared ({mode_text(c)}; BH false "
            f"discovery rate {c.alpha:g}, threshold {100 * c.threshold:g}%); "
            f"{len(c.uncompared)} not compared")


VERDICT_RANK = {REGRESSION: 0, IMPROVEMENT: 1, INCONCLUSIVE: 2, UNCHANGED: 3}


def ordered(c: Comparison) -> list[CellComparison]:
    """Regressions first (largest ratio first), then improvements, inconclusive, the rest."""
    return sorted(c.cells, key=lambda x: (VERDICT_RANK[x.verdict], -x.ratio))


MD_ICON = {REGRESSION: ":red_circle: regression", IMPROVEMENT: ":green_circle: improvement",
           INCONCLUSIVE: ":white_circle: inconclusive", UNCHANGED: "unchanged"}


def heading(c: Comparison) -> str:
    """The report's first line: regressions, and whether they count."""
    note = " (unpaired, advisory)" if c.advisory else " (unpaired)" if not c.paired else ""
    return f"gradsweep: {len(c.regressions)} regression(s){note}"


def to_markdown(c: Comparison) -> str:
    """The comparison as GitHub-flavoured Markdown: summary, warnings, tables."""
    lines = [f"## {heading(c)}", ""]
    lines += [f"> :warning: {md_escape(w)}" for w in c.warnings]
    if c.warnings:
        lines.append("")
    lines += [f"base `{c.base_sweep}` vs candidate `{c.candidate_sweep}`: {summary_line(c)}.",
              "", "| verdict | variant | shape | dtype | base ms | candidate ms | "
              "ratio [95% CI] | pairs | p (BH) |", "|---|---|---|---|---:|---:|---|---:|---:|"]
    for x in ordered(c):
        lines.append(f"| {MD_ICON[x.verdict]} | `{md_escape(x.variant)}` | {x.shape} | "
                     f"{x.dtype} | {_ms(x.base_median_ns)} | {_ms(x.candidate_median_ns)} | "
                     f"{fmt_ratio(x)} | {x.blocks} | {fmt_p(x.p_adjusted)} |")
    if c.uncompared:
        lines += ["", "### Not compared", "", "| variant | shape | dtype | base | candidate | "
                  "reason |", "|---|---|---|---|---|---|"]
        lines += [f"| `{md_escape(u.variant)}` | {u.shape} | {u.dtype} | {u.base_status} | "
                  f"{u.candidate_status} | {md_escape(u.reason)} |" for u in c.uncompared]
    return "\n".join(lines) + "\n"


def _testcase(suite: ET.Element, x: CellComparison, advisory: bool) -> None:
    case = ET.SubElement(suite, "testcase", classname=f"gradsweep.{x.kernel}.{x.dtype}",
                         name=f"{x.variant} {x.shape} {x.dtype}", time="0")
    detail = (f"{x.variant} {x.shape} {x.dtype}: candidate/base {fmt_ratio(x)}, p (BH) "
              f"{fmt_p(x.p_adjusted)}, base {_ms(x.base_median_ns)} ms, candidate "
              f"{_ms(x.candidate_median_ns)} ms ({x.method}, {x.blocks} pair(s), "
              f"n {x.n_base}/{x.n_candidate})")
    if x.verdict == REGRESSION and not advisory:
        failure = ET.SubElement(case, "failure", type="regression",
                                message=f"{x.ratio:.3f}x slower (p {fmt_p(x.p_adjusted)})")
        failure.text = detail
    else:
        note = " (advisory: unpaired)" if advisory and x.verdict == REGRESSION else ""
        ET.SubElement(case, "system-out").text = f"{x.verdict}{note}: {detail}"


def to_junit(c: Comparison) -> str:
    """JUnit XML: a testcase per cell, a ``<failure>`` per regression, skipped ones listed."""
    suites = ET.Element("testsuites", name="gradsweep compare")
    suite = ET.SubElement(suites, "testsuite", name=f"{c.base_sweep}..{c.candidate_sweep}",
                          tests=str(len(c.cells) + len(c.uncompared)),
                          failures=str(0 if c.advisory else len(c.regressions)), errors="0",
                          skipped=str(len(c.uncompared)), time="0")
    props = ET.SubElement(suite, "properties")
    for name, value in (("base", c.base_sweep), ("candidate", c.candidate_sweep),
                        ("paired", str(c.paired).lower()), ("advisory", str(c.advisory).lower()),
                        ("alpha", f"{c.alpha:g}"), ("threshold", f"{c.threshold:g}"),
                        *(("warning", w) for w in c.warnings)):
        ET.SubElement(props, "property", name=name, value=value)
    for x in ordered(c):
        _testcase(suite, x, c.advisory)
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


