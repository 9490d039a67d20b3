"""The instruction-count clock: cachegrind output parsing, the count's checks, one real count.

The fixtures in tests/fixtures/cachegrind are real cachegrind 3.19 outputs, trimmed:
``rnn-tiny-counted.out`` is the first 40 lines and the summary of a counted run of
``gate/count_target.py`` (rnn N=T=D=H=2, float64, 2 calls, ``--cache-sim=no``);
``python-pass-cache-sim.out`` the first 30 lines and the summary of ``python -c pass``
with the cache and branch simulations on (13 events).
"""

import os
import sys
from pathlib import Path

import pytest

from gradsweep.gate import instructions as ins
from gradsweep.records import Cell

FIXTURES = Path(__file__).parent.parent / "fixtures" / "cachegrind"
PLUGINS = Path(__file__).parent.parent / "plugins"
FAKE_VALGRIND = (sys.executable, str(Path(__file__).with_name("fake_valgrind.py")))
TINY = (("N", 2), ("T", 2), ("D", 2), ("H", 2))

needs_valgrind = pytest.mark.skipif(not ins.valgrind_available(), reason="valgrind not installed")


def rnn_cell(variant: str = "rnn/buffers=list,wgrad=step,clip=none", threads: int = 1) -> Cell:
    return Cell("rnn", variant, TINY, "float64", threads, 0, 1.0, 5.0)


# --------------------------------------------------------------------------- parsing


def test_parses_a_recorded_counted_run():
    assert ins.read_cachegrind(FIXTURES / "rnn-tiny-counted.out") == 702957355


def test_takes_ir_among_thirteen_events():
    assert ins.read_cachegrind(FIXTURES / "python-pass-cache-sim.out") == 39413119


def test_finds_ir_wherever_the_events_line_puts_it():
    assert ins.parse_cachegrind("events: Dr Dw Ir\nfl=x\n1 2 3 4\nsummary: 5 6 7\n") == 7


def test_reads_callgrinds_totals_line():
    assert ins.parse_cachegrind("events: Ir\ntotals: 1234\n") == 1234


@pytest.mark.parametrize("text, says", [
    ("hello world\n", "no 'events:' line"),
    ("", "no 'events:' line"),
    ("events: Dr Dw\nsummary: 1 2\n", "no Ir event"),
    ("events: Ir\nfl=a\n1 5\n", "no 'summary:' or 'totals:' line"),
    ("events: Dr Ir\nsummary: 12\n", "malformed total"),
    ("events: Ir\nsummary: 12x\n", "malformed total"),
    ("events: Ir\nsummary: -3\n", "malformed total"),
])
def test_garbage_is_a_one_line_error(text, says):
    with pytest.raises(ins.InstructionCountError, match=says) as caught:
        ins.parse_cachegrind(text, where="x.out")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("x.out: ")


def test_unreadable_file_names_the_path(tmp_path):
    missing = tmp_path / "none.out"
    with pytest.raises(ins.InstructionCountError, match=str(missing)):
        ins.read_cachegrind(missing)


# --------------------------------------------------------------------------- records


def note(native=("SSE", "AVX2", "GFNI", "AVX512F", "AVX512BW"), counted=("SSE", "AVX2"),
         native_blas="openblas SkylakeX", counted_blas="openblas Haswell") -> ins.SimdNote:
    return ins.SimdNote(tuple(native), tuple(counted), native_blas, counted_blas)


def test_simd_note_names_what_valgrind_hides_avx_first():
    n = note()
    assert n.hidden == ("AVX512F", "AVX512BW", "GFNI")
    assert n.differs
    assert n.text() == ("counted path differs from the timed one: numpy sees no AVX512F, "
                        "AVX512BW, GFNI under valgrind; BLAS openblas Haswell counted, "
                        "openblas SkylakeX natively")


def test_simd_note_is_silent_when_both_paths_agree():
    n = note(native=("SSE", "AVX2"), native_blas="openblas Haswell")
    assert not n.differs and n.text() == ""


def test_simd_note_shortens_a_long_list():
    n = note(native=("AVX2", "AVX512F", "AVX512CD", "AVX512BW", "AVX512DQ", "X86_V4"),
             counted=("AVX2",), native_blas="b", counted_blas="b")
    assert n.text().endswith("AVX512F, AVX512CD, AVX512BW (+2 more) under valgrind")


def count(per_call: float, cell_id: str = "c1", simd: ins.SimdNote | None = None):
    return ins.InstructionCount(cell_id, 4, 1000 + int(4 * per_call), 1700 + int(8 * per_call),
                                700.0, 0, per_call, 0.0, simd or note(), 1.0)


def test_compare_is_candidate_over_base():
    assert ins.compare_counts(count(200.0), count(250.0)) == pytest.approx(1.25)


def test_compare_refuses_different_cells_calls_or_paths():
    from dataclasses import replace

    with pytest.raises(ins.InstructionCountError, match="different cells"):
        ins.compare_counts(count(1.0, "a"), count(1.0, "b"))
    with pytest.raises(ins.InstructionCountError, match="different calls"):
        ins.compare_counts(count(1.0), replace(count(1.0), calls=2))
    other = note(counted=("SSE", "AVX2", "AVX512F"), counted_blas="openblas SkylakeX")
    with pytest.raises(ins.InstructionCountError, match="different paths"):
        ins.compare_counts(count(1.0), count(1.0, simd=other))


# --------------------------------------------------------------------------- the processes


def test_real_interpreter_is_a_binary_valgrind_can_follow():
    path = ins.real_interpreter()
    assert ins.is_elf(path) and os.access(path, os.X_OK)


def test_a_launcher_script_falls_back_to_the_base_binary(tmp_path, monkeypatch):
    shim = tmp_path / "python3"
    shim.write_text("#!/bin/sh\nexec python3 \"$@\"\n")
    base = sys._base_executable
    monkeypatch.setattr(sys, "executable", str(shim))
    assert ins.real_interpreter() == base
    monkeypatch.setattr(sys, "_base_executable", str(shim))
    with pytest.raises(ins.InstructionCountError, match="not an executable binary"):
        ins.real_interpreter()


def test_missing_valgrind_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(ins, "VALGRIND", ("gradsweep-no-such-valgrind",))
    assert not ins.valgrind_available()
    with pytest.raises(ins.InstructionCountError, match="not installed.*apt-get install "
                                                        "valgrind") as caught:
        ins.count_instructions(rnn_cell())
    assert "\n" not in str(caught.value)


def test_several_threads_are_refused():
    with pytest.raises(ins.InstructionCountError, match="threads = 1"):
        ins.count_instructions(rnn_cell(threads=2))


def test_counted_environment_is_fixed(tmp_path):
    env = ins._environment("/t", ["/p"], str(tmp_path), counted=True)
    assert env["PYTHONPATH"] == os.pathsep.join(["/t", "/p"])
    assert env["PYTHONPYCACHEPREFIX"] == str(tmp_path)
    assert {k: env[k] for k in ins.COUNT_ENV} == ins.COUNT_ENV
    native = ins._environment("/t", ["/p"], str(tmp_path), counted=False)
    assert "PYTHONDONTWRITEBYTECODE" not in native and native["OPENBLAS_NUM_THREADS"] == "1"


def test_offset_is_the_median_of_the_last_pairs():
    pairs = [(100, 3159), (100, 2482), (100, 1755), (100, 1870), (100, 1755), (100, 1761)]
    assert ins.offset_of(pairs) == (1661.0, 115)  # of 1770, 1655, 1661
    with pytest.raises(ins.InstructionCountError, match="2 offset pairs"):
        ins.offset_of(pairs[:2])


def test_per_call_takes_the_offset_out():
    assert ins.per_call_of(10_000, 10_000 + 4 * 500 + 1700, 1700.0, 0, 4, "v") == 500.0


@pytest.mark.parametrize("total_2k, spread", [(10_000 + 1700, 0), (10_000 + 4000, 3)])
def test_a_count_that_is_not_positive_or_not_stable_is_refused(total_2k, spread):
    # 4 calls of ~575 instructions cannot carry an offset known only to 3 instructions
    with pytest.raises(ins.InstructionCountError, match="unstable count for v"):
        ins.per_call_of(10_000, total_2k, 1700.0, spread, 4, "v")


def test_every_tree_is_counted_through_one_path_length(tmp_path):
    tree = tmp_path / "some" / "tree-at-a-long-path"
    (tree / "plugins").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    pycache, link, path = ins._same_paths(str(work), str(tree),
                                          [str(tree / "plugins"), "/elsewhere"])
    assert (link, pycache) == (str(work / "tree"), str(work / "pycache"))
    assert os.path.realpath(link) == str(tree)
    assert path == [str(work / "tree" / "plugins"), "/elsewhere"]


@pytest.fixture
def fake_valgrind(monkeypatch):
    """valgrind replaced by native runs reporting 10**6 + 3000 per call, offset 1700."""
    monkeypatch.setattr(ins, "VALGRIND", FAKE_VALGRIND)
    monkeypatch.setattr(ins, "valgrind_available", lambda: True)
    for name, value in {"STARTUP": 10**6, "PER_CALL": 3000, "OFFSET": 1700}.items():
        monkeypatch.setenv(f"FAKE_{name}", str(value))
    return monkeypatch


def test_per_call_is_the_difference_over_k(fake_valgrind):
    c = ins.count_instructions(rnn_cell(), calls=3)
    assert (c.total_k, c.total_2k) == (10**6 + 9000, 10**6 + 18000 + 1700)
    assert (c.per_call, c.offset, c.offset_spread, c.calls) == (3000, 1700, 0, 3)
    assert c.cell_id == rnn_cell().cell_id and c.max_rel_err < 1e-9 and c.wall_s > 0
    assert "AVX2" in c.simd.native and c.simd.native_blas == c.simd.counted_blas


def test_no_output_file_is_explained(fake_valgrind):
    fake_valgrind.setenv("FAKE_NO_OUTPUT", "1")
    with pytest.raises(ins.InstructionCountError, match="launcher script"):
        ins.count_instructions(rnn_cell(), calls=1)


FLAKY = """
from gradsweep.impls import rnn
from gradsweep.impls.base import Variant

_copy = rnn.make_backward("prealloc", "batched", "none")
_calls = []


def _second_call_raises(case, cache):
    _calls.append(1)
    if len(_calls) > 1:
        raise RuntimeError("only the verification call works")
    return _copy(case, cache)


VARIANTS = [Variant("rnn", {"buffers": "flaky", "wgrad": "batched", "clip": "none"},
                    _second_call_raises)]
"""


def test_failing_cells_are_reported_and_the_rest_counted(fake_valgrind, tmp_path):
    (tmp_path / "gs_count_flaky.py").write_text(FLAKY)
    variants = ["rnn/buffers=wrong,wgrad=batched,clip=none",
                "rnn/buffers=crash,wgrad=batched,clip=none",
                "rnn/buffers=list,wgrad=step,clip=none",
                "rnn/buffers=raises,wgrad=batched,clip=none",
                "rnn/buffers=flaky,wgrad=batched,clip=none"]
    results = ins.count_cells([rnn_cell(v) for v in variants], calls=1,
                              plugins=("gs_extra", "gs_faults", "gs_count_flaky"),
                              pythonpath=[str(PLUGINS), str(tmp_path)])
    wrong, crash, good, raises, flaky = results
    assert (wrong.status, wrong.max_rel_err > 1e-9) == ("incorrect", True)
    assert crash.status == "crashed" and "died" in crash.error
    assert good.per_call == 3000
    assert raises.status == "error" and "deliberate failure" in raises.error
    assert flaky.status == "error" and "exited with 3 and 3" in flaky.error
    with pytest.raises(ins.CellNotCounted, match="incorrect: max_rel_err"):
        ins.count_instructions(rnn_cell(variants[0]), plugins=("gs_extra",),
                               pythonpath=[str(PLUGINS)], calls=1)


def test_kernels_come_from_the_given_tree(fake_valgrind, tmp_path):
    import shutil

    import gradsweep.impls

    tree = tmp_path / "tree"
    shutil.copytree(Path(gradsweep.impls.__file__).resolve().parent, tree / "impls",
                    ignore=shutil.ignore_patterns("__pycache__"))
    c = ins.count_instructions(rnn_cell(), tree=str(tree), calls=1)
    assert c.per_call == 3000
    (tree / "impls" / "__init__.py").write_text("raise ImportError('tree impls imported')\n")
    with pytest.raises(ins.InstructionCountError, match="tree impls imported"):
        ins.count_instructions(rnn_cell(), tree=str(tree), calls=1)


# --------------------------------------------------------------------------- valgrind itself


@pytest.mark.slow
@needs_valgrind
def test_real_counts_repeat():
    """Two counts of the tiny cell under cachegrind (~7 s of CPU each)."""
    first, second = (ins.count_instructions(rnn_cell(), calls=2) for _ in range(2))
    assert first.per_call > 0 and first.total_k > 2 * first.per_call
    assert second.per_call == pytest.approx(first.per_call, rel=1e-4)
    assert 0 < first.offset < first.per_call
    assert "AVX2" in first.simd.counted and first.simd.counted_blas
