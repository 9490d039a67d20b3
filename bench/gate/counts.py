"""``gradsweep ci --clock instructions``: instruction counts of both sides beside the times.

After the timed process pairs, each side's cells are counted under cachegrind
(:mod:`.instructions`: instructions per backward call, by the difference of a
``k`` and a ``2k`` call child forked from one verified state), each from its own
tree, both sides at once (one valgrind process each). Counts of the same code
from two trees agreed within 1.6e-5 on jobs/ci.toml (:mod:`.instructions`), so a
count needs no interval: the instruction verdict is the ratio against
:data:`INSTRUCTION_THRESHOLD`, 1%, several hundred times that spread. That verdict gates
(exit 1 on an instruction regression); the time verdicts are shown beside it.

Instructions are not time: an extra pass over memory costs few instructions and
much time, and valgrind emulates no AVX-512, so numpy and OpenBLAS may run
other loops under it than natively (``SimdNote``). A cell whose instruction
ratio lies outside its time ratio's 95% interval is flagged: the two clocks
disagree there, and the time says what the instruction count missed (or the
time's interval is off).
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gradsweep.gate import instructions
from gradsweep.gate.instructions import InstructionCount, NotCounted
from gradsweep.gate.trees import Trees, map_pythonpath
from gradsweep.records import Cell
from gradsweep.regress import Comparison
from gradsweep.report import md_escape
from gradsweep.stats import IMPROVEMENT, REGRESSION, UNCHANGED

#: Smallest change in instructions per call that is a regression or an improvement.
INSTRUCTION_THRESHOLD = 0.01
ROLES = ("base", "candidate")
Counted = InstructionCount | NotCounted


@dataclass(frozen=True)
class CountedCell:
    """One cell's instruction counts beside its time ratio.

    Attributes
    ----------
    cell_id, variant, shape, dtype : str
    base, candidate : float or None
        Instructions per backward call (None: not counted, see ``error``).
    ratio : float
        ``candidate / base`` (NaN when not counted).
    verdict : str
        ``regression``, ``improvement``, ``unchanged`` or ``not counted``.
    time_ratio, time_low, time_high : float
        The timed comparison's ratio and 95% interval (NaN when not compared).
    time_verdict : str
    disagrees : bool
        The instruction ratio lies outside the time ratio's 95% interval.
    error : str
        Why a side was not counted ("" when both were).
    """

    cell_id: str
    variant: str
    shape: str
    dtype: str
    base: float | None
    candidate: float | None
    ratio: float
    verdict: str
    time_ratio: float = math.nan
    time_low: float = math.nan
    time_high: float = math.nan
    time_verdict: str = ""
    disagrees: bool = False
    error: str = ""


@dataclass(frozen=True)
class CountReport:
    """Every cell's counts, the SIMD note and the threshold."""

    cells: tuple[CountedCell, ...]
    note: str
    threshold: float = INSTRUCTION_THRESHOLD

    @property
    def regressions(self) -> tuple[CountedCell, ...]:
        """Cells whose instruction count rose by more than the threshold."""
        return tuple(c for c in self.cells if c.verdict == REGRESSION)

    @property
    def disagreements(self) -> tuple[CountedCell, ...]:
        """Cells whose instruction ratio lies outside the time ratio's interval."""
        return tuple(c for c in self.cells if c.disagrees)


def instruction_verdict(ratio: float, threshold: float = INSTRUCTION_THRESHOLD) -> str:
    """``regression`` above ``1 + threshold``, ``improvement`` below ``1 - threshold``."""
    if ratio > 1.0 + threshold:
        return REGRESSION
    if ratio < 1.0 - threshold:
        return IMPROVEMENT
    return UNCHANGED


def check_countable(cells: Sequence[Cell]) -> None:
    """InstructionCountError (exit 2) unless valgrind is installed and every cell has one
    thread: checked before the timed pairs, not after them."""
    instructions.check_cells(cells, instructions.DEFAULT_CALLS)
    instructions.check_valgrind()


def count_both(cells: Sequence[Cell], trees: Trees, repo: str, plugins: Sequence[str],
               calls: int = instructions.DEFAULT_CALLS) -> dict[str, tuple[Counted, ...]]:
    """Each side's counts of ``cells``, each from its own tree, both at once.

    Raises
    ------
    instructions.InstructionCountError
        valgrind is missing or failed (a BadInput: one line, exit 2).
    """
    entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]

    def count(role: str) -> tuple[Counted, ...]:
        tree = trees.paths[role]
        return instructions.count_cells(cells, tree=tree, plugins=plugins, calls=calls,
                                        pythonpath=map_pythonpath(entries, repo, tree))

    with ThreadPoolExecutor(max_workers=len(ROLES)) as pool:
        found = dict(zip(ROLES, pool.map(count, ROLES)))
    return found


def _counted_cell(cell: Cell, base: Counted, cand: Counted, threshold: float,
                  timed: dict) -> CountedCell:
    """One cell's row: the ratio, its verdict and how it sits against the time."""
    t = timed.get(cell.cell_id)
    times = ({"time_ratio": t.ratio, "time_low": t.ci_low, "time_high": t.ci_high,
              "time_verdict": t.verdict} if t is not None else {})
    ident = {"cell_id": cell.cell_id, "variant": cell.variant, "shape": cell.shape_text,
             "dtype": cell.dtype}
    missing = [f"{role} {c.status}: {c.error}" for role, c in zip(ROLES, (base, cand))
               if isinstance(c, NotCounted)]
    if missing:
        return CountedCell(**ident, base=getattr(base, "per_call", None),
                           candidate=getattr(cand, "per_call", None), ratio=math.nan,
                           verdict="not counted", error="; ".join(missing), **times)
    ratio = cand.per_call / base.per_call
    outside = t is not None and not t.ci_low <= ratio <= t.ci_high
    return CountedCell(**ident, base=base.per_call, candidate=cand.per_call, ratio=ratio,
                       verdict=instruction_verdict(ratio, threshold), disagrees=outside,
                       **times)


def join(cells: Sequence[Cell], counts: dict[str, tuple[Counted, ...]],
         comparison: Comparison, threshold: float = INSTRUCTION_THRESHOLD) -> CountReport:
    """The counts of both sides per cell, beside the timed comparison's ratios."""
    timed = {c.cell_id: c for c in comparison.cells}
    rows = tuple(_counted_cell(cell, b, c, threshold, timed)
                 for cell, b, c in zip(cells, counts["base"], counts["candidate"]))
    notes = {c.simd.text() for side in counts.values() for c in side
             if isinstance(c, InstructionCount) and c.simd.text()}
    return CountReport(rows, "; ".join(sorted(notes)), threshold)


def fmt_count(n: float | None) -> str:
    """Instructions per call in millions, e.g. ``43.46M``."""
    return "" if n is None else f"{n / 1e6:.2f}M"


def fmt_time(c: CountedCell) -> str:
    """The time ratio and its interval, or empty."""
    if math.isnan(c.time_ratio):
        return ""
    return f"{c.time_ratio:.3f}x [{c.time_low:.3f}, {c.time_high:.3f}]"


def summary(report: CountReport) -> str:
    """One line: instruction regressions and disagreements."""
    counted = sum(c.verdict != "not counted" for c in report.cells)
    return (f"instructions: {len(report.regressions)} regression(s) in {counted} cell(s) "
            f"counted (threshold {100 * report.threshold:g}%); {len(report.disagreements)} "
            "cell(s) where instructions and time disagree")


def to_markdown(report: CountReport) -> str:
    """The instruction section of the gate's Markdown report."""
    lines = ["", "### Instruction counts (cachegrind), beside the times", ""]
    if report.note:
        lines += [f"> :warning: {md_escape(report.note)}", ""]
    lines += [f"{summary(report)}.", "",
              "| verdict | variant | shape | dtype | base instr. | candidate instr. | "
              "instr. ratio | time ratio [95% CI] | agree |",
              "|---|---|---|---|---:|---:|---:|---|---|"]
    for c in report.cells:
        ratio = "" if math.isnan(c.ratio) else f"{c.ratio:.5f}x"
        agree = ":warning: no" if c.disagrees else ("" if c.error else "yes")
        lines.append(f"| {c.verdict} | `{md_escape(c.variant)}` | {c.shape} | {c.dtype} | "
                     f"{fmt_count(c.base)} | {fmt_count(c.candidate)} | {ratio} | "
                     f"{fmt_time(c)} | {agree or md_escape(c.error)} |")
    return "\n".join(lines) + "\n"


def to_junit(report: CountReport) -> str:
    """JUnit XML of the instruction verdicts: a testcase per cell, a failure per regression."""
    suites = ET.Element("testsuites", name="gradsweep ci --clock instructions")
    suite = ET.SubElement(suites, "testsuite", name="instructions",
                          tests=str(len(report.cells)), failures=str(len(report.regressions)),
                          errors="0", skipped=str(sum(bool(c.error) for c in report.cells)),
                          time="0")
    for c in report.cells:
        case = ET.SubElement(suite, "testcase", classname=f"gradsweep.instructions.{c.dtype}",
                             name=f"{c.variant} {c.shape} {c.dtype}", time="0")
        detail = (f"instructions {fmt_count(c.base)} -> {fmt_count(c.candidate)} per call "
                  f"({c.ratio:.4f}x); time {fmt_time(c) or 'not compared'}"
                  f"{' (disagrees)' if c.disagrees else ''}")
        if c.error:
            ET.SubElement(case, "skipped", message=c.error)
        elif c.verdict == REGRESSION:
            ET.SubElement(case, "failure", type="regression",
                          message=f"{c.ratio:.4f}x the instructions").text = detail
        else:
            ET.SubElement(case, "system-out").text = f"{c.verdict}: {detail}"
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
