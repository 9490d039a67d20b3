"""``gradsweep ci`` and ``gradsweep compare``: run the gate or compare two sweeps, print."""

from __future__ import annotations

from gradsweep import regress, store
from gradsweep.cli.views import fmt_ms as _ms
from gradsweep.errors import BadInput
from gradsweep.gate import counts
from gradsweep.gate.pairs import CLOCKS, DEFAULT_SPEC, CellRows, Look, default_rule, run_ab
from gradsweep.gate.sequential import BUDGET_S
from gradsweep.gate.sequential import THRESHOLD as GATE_THRESHOLD
from gradsweep.gate.trees import gate_trees, repository_root, resolve_revision
from gradsweep.regress import (
    ALPHA,
    IMPROVEMENT,
    INCONCLUSIVE,
    REGRESSION,
    THRESHOLD,
    UNCHANGED,
    Comparison,
    compare_sweeps,
    fmt_p,
    fmt_ratio,
    ordered,
    summary_line,
)
from gradsweep.spec import expand, load_spec

STYLE = {REGRESSION: "bold red", IMPROVEMENT: "green", INCONCLUSIVE: "yellow", UNCHANGED: ""}
#: ``gradsweep ci --clock``: the timed clocks, or instruction counts beside CPU time.
INSTRUCTIONS = "instructions"
CI_CLOCKS = (*CLOCKS, INSTRUCTIONS)


def print_comparison(console, c: Comparison) -> None:
    """A rich table of the compared cells, the cells not compared, and the summary."""
    from rich.markup import escape
    from rich.table import Table

    for w in c.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    table = Table(title=f"{c.base_sweep} (base) vs {c.candidate_sweep} (candidate)")
    for col in ("verdict", "variant", "shape", "dtype", "base ms", "cand. ms",
                "ratio [95% CI]", "pairs", "p (BH)"):
        table.add_column(col, overflow="fold")
    for x in ordered(c):
        style = STYLE[x.verdict]
        verdict = f"[{style}]{x.verdict}[/]" if style else x.verdict
        table.add_row(verdict, escape(x.variant), x.shape, x.dtype, _ms(x.base_median_ns),
                      _ms(x.candidate_median_ns), fmt_ratio(x), str(x.blocks),
                      fmt_p(x.p_adjusted))
    console.print(table)
    for u in c.uncompared:
        console.print(f"not compared: {u.variant} {u.shape} {u.dtype}: base {u.base_status}, "
                      f"candidate {u.candidate_status} ({u.reason})", markup=False,
                      highlight=False)
    console.print(summary_line(c), markup=False, highlight=False)


def compare_command(base: str, candidate: str, *, results: str | None = None,
                    candidate_results: str | None = None, alpha: float = ALPHA,
                    threshold: float = THRESHOLD, markdown: str | None = None,
                    junit: str | None = None, unpaired: bool = False, console) -> int:
    """Everything ``gradsweep compare`` does; returns the exit code.

    1 on a regression, except when the sweeps are unpaired (no shared ``ci_run``)
    and ``unpaired`` is not set: then the verdicts are advisory and the code is 0.
    """
    base_ds = store.resolve(results)
    candidate_ds = store.resolve(candidate_results) if candidate_results else base_ds
    comparison = compare_sweeps(base_ds, base, candidate_ds, candidate, alpha, threshold,
                                unpaired_ok=unpaired)
    print_comparison(console, comparison)
    regress.write_reports(comparison, markdown, junit)
    return comparison.exit_code


def _progress(console, total: int):
    """Callbacks printing one line per cell measured and one per process pair."""
    def on_cell(c: CellRows) -> None:
        base, cand = c.rows["base"][-1], c.rows["candidate"][-1]
        if base.status == cand.status == "ok":
            what = (f"base {base.median_ns / 1e6:.3g} ms, candidate "
                    f"{cand.median_ns / 1e6:.3g} ms")
        else:
            what = f"base {base.status}, candidate {cand.status}"
        console.print(f"  {c.cell.variant} {c.cell.shape_text} {c.cell.dtype}: {what}",
                      markup=False, highlight=False)

    def on_pair(look: Look) -> None:
        console.print(f"pair {look.pair + 1}: {look.cells} of {total} cell(s), "
                      f"{look.seconds:.0f} s so far", markup=False, highlight=False)
    return on_cell, on_pair


def ci_command(base: str, *, spec: str = DEFAULT_SPEC, results: str | None = None,
               alpha: float = regress.ALPHA, threshold: float | None = None,
               markdown: str | None = None, junit: str | None = None, clock: str = "cpu",
               budget_s: float = BUDGET_S, console) -> int:
    """Everything ``gradsweep ci`` does; returns the exit code.

    1 when a cell regressed or a candidate cell failed (incorrect, error,
    crashed, timeout); 0 otherwise, inconclusive cells included; BadInput
    (exit 2) for a bad revision, spec or setting. With ``clock="instructions"``
    the cells are timed on CPU time and then counted (docs/gate.md): the
    instruction verdicts gate, the time verdicts are shown beside them.
    ``threshold`` None is the gate's own default (``sequential.THRESHOLD``, 3%).
    """
    threshold = GATE_THRESHOLD if threshold is None else threshold
    _check_ci_settings(alpha, threshold, clock, budget_s)
    repo = repository_root()
    commit = resolve_revision(repo, base)
    sweep_spec = load_spec(spec)
    cells = expand(sweep_spec).cells
    if clock == INSTRUCTIONS:
        counts.check_countable(cells)
    dataset = store.resolve(results)
    rule = default_rule(sweep_spec.measure, threshold=threshold, alpha=alpha, budget_s=budget_s)

    def on_start(run: str, base_id: str, cand_id: str) -> None:
        console.print(f"ci run {run}: base {base_id} ({base} = {commit[:12]}), candidate "
                      f"{cand_id} (working tree {repo}); {len(cells)} cells, {rule.min_pairs} "
                      f"process pairs, more for undecided cells within {budget_s:g} s",
                      markup=False, highlight=False)

    on_cell, on_pair = _progress(console, len(cells))
    report = None
    with gate_trees(repo, commit, _harness()) as trees:
        outcome = run_ab(sweep_spec, dataset, trees, repo, rule=rule,
                         clock="cpu" if clock == INSTRUCTIONS else clock,
                         on_start=on_start, on_pair=on_pair, on_cell=on_cell)
        comparison = regress.compare_sweeps(dataset, outcome.base_sweep, dataset,
                                            outcome.candidate_sweep, alpha, threshold)
        if clock == INSTRUCTIONS:
            console.print("counting instructions under valgrind (both sides at once)...",
                          markup=False, highlight=False)
            found = counts.count_both(cells, trees, repo, sweep_spec.plugins)
            report = counts.join(cells, found, comparison)
    return _report(console, comparison, report, outcome.failed("candidate"), markdown, junit)


def _report(console, comparison: Comparison, report: counts.CountReport | None, failed: int,
            markdown: str | None, junit: str | None) -> int:
    """Print and write the gate's results; its exit code."""
    print_comparison(console, comparison)
    gated = comparison.exit_code
    if report is None:
        regress.write_reports(comparison, markdown, junit)
    else:
        print_counts(console, report)
        _write_count_reports(comparison, report, markdown, junit)
        gated = 1 if report.regressions else 0
    if failed:
        console.print(f"{failed} candidate cell(s) failed", markup=False, highlight=False)
    return max(gated, 1 if failed else 0)


def _check_ci_settings(alpha: float, threshold: float, clock: str, budget_s: float) -> None:
    """BadInput (exit 2) for a setting out of range."""
    regress.check_settings(alpha, threshold)
    if clock not in CI_CLOCKS:
        raise BadInput(f"unknown clock {clock!r} (expected one of {', '.join(CI_CLOCKS)})",
                       key="--clock")
    if not budget_s > 0:
        raise BadInput(f"must be positive, got {budget_s}", key="--budget-s")


def print_counts(console, report: counts.CountReport) -> None:
    """The instruction counts beside the times, the SIMD note, the summary."""
    from rich.markup import escape
    from rich.table import Table

    if report.note:
        console.print(f"[yellow]note:[/] {escape(report.note)}")
    table = Table(title="instructions per call (cachegrind): these verdicts gate")
    for col in ("verdict", "variant", "shape", "dtype", "base", "cand.", "instr. ratio",
                "time ratio [95% CI]", "agree"):
        table.add_column(col, overflow="fold")
    for c in report.cells:
        style = STYLE.get(c.verdict, "")
        verdict = f"[{style}]{c.verdict}[/]" if style else c.verdict
        ratio = "" if c.error else f"{c.ratio:.5f}x"
        agree = "[bold yellow]NO[/]" if c.disagrees else escape(c.error) if c.error else "yes"
        table.add_row(verdict, escape(c.variant), c.shape, c.dtype, counts.fmt_count(c.base),
                      counts.fmt_count(c.candidate), ratio, counts.fmt_time(c), agree)
    console.print(table)
    console.print(counts.summary(report), markup=False, highlight=False)


def _write_count_reports(comparison: Comparison, report: counts.CountReport,
                         markdown: str | None, junit: str | None) -> None:
    """Markdown (time and instructions, also to the step summary) and the instruction JUnit."""
    import os
    from pathlib import Path

    text = regress.to_markdown(comparison) + counts.to_markdown(report)
    if markdown:
        Path(markdown).write_text(text)
    if junit:
        Path(junit).write_text(counts.to_junit(report))
    summary = os.environ.get(regress.STEP_SUMMARY_ENV)
    if summary:
        with open(summary, "a") as fh:
            fh.write(text)
def _harness() -> str:
    """The ``gradsweep`` package both sides load (this one)."""
    from pathlib import Path

    import gradsweep

    return str(Path(gradsweep.__file__).resolve().parent)
