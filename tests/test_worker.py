"""The worker: verify before timing; every failure is a row."""

from gradsweep.records import Cell, MeasureSettings
from gradsweep.worker import run_cell

FAST = MeasureSettings(samples=5, min_time_s=0.0005, max_warmups=2)
SHAPE = (("N", 4), ("T", 5), ("D", 6), ("H", 7))
PLUGINS = ("gs_extra",)


def cell(variant: str, dtype: str = "float64") -> Cell:
    return Cell("rnn", variant, SHAPE, dtype, 1, 0, 1.0, 5.0)


def test_ok_cell_has_timing_memory_and_environment():
    r = run_cell(cell("rnn/buffers=prealloc,wgrad=batched,clip=none"), FAST,
                 peaks={"float64": 40.0})
    assert r.status == "ok", r.error
    assert len(r.samples_ns) == 5 and r.loops >= 1 and r.median_ns > 0
    assert r.ci_low_ns <= r.median_ns <= r.ci_high_ns
    assert r.max_rel_err < 1e-9 and r.peak_bytes > 0 and r.flops == 4 * 4 * 5 * 7 * (6 + 7)
    assert r.gflops > 0 and r.peak_fraction == r.gflops / 40.0
    assert r.host and r.numpy_version and r.python_version and r.cores >= 1
    assert r.axes == {"buffers": "prealloc", "wgrad": "batched", "clip": "none"}
    row = r.row()
    assert row["N"] == 4 and row["buffers"] == "prealloc" and row["shape"] == "N=4,T=5,D=6,H=7"


def test_wrong_gradients_are_incorrect_and_never_timed():
    r = run_cell(cell("rnn/buffers=wrong,wgrad=batched,clip=none"), FAST, PLUGINS)
    assert r.status == "incorrect"
    assert r.max_rel_err > 1e-3 and not r.samples_ns and r.median_ns is None
    assert "tolerance" in r.error


def test_raising_variant_is_an_error_row_with_one_line():
    r = run_cell(cell("rnn/buffers=raises,wgrad=batched,clip=none"), FAST, PLUGINS)
    assert r.status == "error"
    assert "RuntimeError: deliberate failure <b>in a plugin</b>" in r.error
    assert "\n" not in r.error


def test_unknown_variant_is_an_error_row():
    r = run_cell(cell("rnn/buffers=nope,wgrad=step,clip=none"), FAST)
    assert r.status == "error" and "unknown variant" in r.error


def test_known_scratch_allocation_is_measured():
    scratch = 64 * 2**20
    r = run_cell(cell("rnn/buffers=scratch,wgrad=batched,clip=none"), FAST, PLUGINS)
    assert r.status == "ok", r.error
    plain = run_cell(cell("rnn/buffers=plugin,wgrad=batched,clip=none"), FAST, PLUGINS)
    assert abs((r.peak_bytes - plain.peak_bytes) - scratch) <= 0.05 * scratch


def test_prealloc_peaks_no_higher_than_list():
    for wgrad in ("step", "batched"):
        shape = (("N", 16), ("T", 32), ("D", 16), ("H", 32))
        lst = run_cell(Cell("rnn", f"rnn/buffers=list,wgrad={wgrad},clip=none", shape,
                            "float64", 1, 0, 1.0, 5.0), FAST)
        pre = run_cell(Cell("rnn", f"rnn/buffers=prealloc,wgrad={wgrad},clip=none", shape,
                            "float64", 1, 0, 1.0, 5.0), FAST)
        assert pre.peak_bytes <= lst.peak_bytes
