"""``ci --clock instructions``: instruction verdicts, joining counts with the times, reports."""

import math
import xml.etree.ElementTree as ET

import pytest

from gradsweep import regress
from gradsweep.gate import counts
from gradsweep.gate.instructions import InstructionCount, NotCounted, SimdNote
from gradsweep.records import Cell

SHAPE = (("N", 2), ("T", 2), ("D", 2), ("H", 2))
NATIVE = ("SSE", "AVX2", "AVX512F")
NOTE = SimdNote(NATIVE, ("SSE", "AVX2"), "openblas SkylakeX", "openblas Haswell")


def cell(name: str) -> Cell:
    return Cell("rnn", f"rnn/buffers={name},wgrad=step,clip=none", SHAPE, "float64", 1, 0,
                1.0, 5.0)


def counted(c: Cell, per_call: float, simd: SimdNote = NOTE) -> InstructionCount:
    return InstructionCount(c.cell_id, 4, 10**9, 10**9 + 4 * int(per_call), 1700.0, 20,
                            per_call, 1e-12, simd, 1.0)


def timed(c: Cell, ratio: float, low: float, high: float, verdict: str
          ) -> regress.CellComparison:
    return regress.CellComparison(c.cell_id, "rnn", c.variant, c.shape_text, "float64", True,
                                  30, 30, 1e6, ratio * 1e6, ratio, low, high, 0.5, verdict,
                                  regress.RANDOM_EFFECTS, 5, 0.5)


@pytest.mark.parametrize("ratio, verdict", [(1.02, "regression"), (1.0099, "unchanged"),
                                             (0.98, "improvement"), (1.0, "unchanged")])
def test_instruction_verdict_is_the_ratio_against_one_percent(ratio, verdict):
    assert counts.instruction_verdict(ratio) == verdict


def test_join_flags_cells_where_the_instruction_ratio_leaves_the_time_interval():
    same, slower, memory, failed = (cell(n) for n in ("same", "slower", "memory", "failed"))
    cells = [same, slower, memory, failed]
    found = {"base": (counted(same, 1e6), counted(slower, 1e6), counted(memory, 1e6),
                      counted(failed, 1e6)),
             "candidate": (counted(same, 1e6 + 3), counted(slower, 1.03e6),
                           counted(memory, 1.001e6),
                           NotCounted(failed.cell_id, "error", "RuntimeError: x"))}
    comparison = regress.Comparison("b", "c", True, 0.01, 0.05, cells=(
        timed(same, 0.99, 0.97, 1.01, "unchanged"),
        timed(slower, 1.03, 1.01, 1.05, "inconclusive"),
        timed(memory, 1.12, 1.08, 1.16, "regression")))
    report = counts.join(cells, found, comparison)
    rows = {c.variant.split("=")[1].split(",")[0]: c for c in report.cells}
    assert rows["same"].verdict == "unchanged" and not rows["same"].disagrees
    assert rows["slower"].verdict == "regression" and not rows["slower"].disagrees
    assert rows["slower"].ratio == pytest.approx(1.03)
    assert rows["memory"].verdict == "unchanged" and rows["memory"].disagrees
    assert rows["failed"].verdict == "not counted" and "candidate error" in rows["failed"].error
    assert math.isnan(rows["failed"].ratio) and not rows["failed"].disagrees
    assert [c.variant for c in report.regressions] == [slower.variant]
    assert [c.variant for c in report.disagreements] == [memory.variant]
    assert "numpy sees no AVX512F under valgrind" in report.note


def test_reports_name_the_note_the_gating_verdicts_and_disagreements():
    a, b = cell("a"), cell("b")
    found = {"base": (counted(a, 1e6), counted(b, 1e6)),
             "candidate": (counted(a, 1.05e6), counted(b, 1e6))}
    comparison = regress.Comparison("b", "c", True, 0.01, 0.05, cells=(
        timed(a, 1.0, 0.98, 1.02, "unchanged"),))
    report = counts.join([a, b], found, comparison)
    text = counts.to_markdown(report)
    assert "> :warning: counted path differs" in text and "AVX512F" in text
    assert "1 regression(s) in 2 cell(s) counted" in text and ":warning: no" in text
    line = next(x for x in text.splitlines() if "buffers=b" in x)
    assert "| unchanged |" in line and "1.00000x" in line
    root = ET.fromstring(counts.to_junit(report))
    failures = root.findall(".//failure")
    assert len(failures) == 1 and "1.0500x" in failures[0].get("message")


def test_same_paths_have_no_note():
    same = SimdNote(NATIVE, NATIVE, "openblas Haswell", "openblas Haswell")
    a = cell("a")
    report = counts.join([a], {"base": (counted(a, 1e6, same),),
                               "candidate": (counted(a, 1e6, same),)},
                         regress.Comparison("b", "c", True, 0.01, 0.05, cells=()))
    assert report.note == "" and report.cells[0].time_verdict == ""
    row = next(x for x in counts.to_markdown(report).splitlines() if "buffers=a" in x)
    assert row.split("|")[8].strip() == ""  # no time ratio: the cell was not compared
