"""The end of ``run``: which groups it ranks in full, what it summarises, what it lists."""

import numpy as np
import pandas as pd

from gradsweep.cli import run


def light_cells(sizes: dict[tuple[str, str, str], int], failed: int = 0,
                unmeasured: int = 0) -> pd.DataFrame:
    """Light columns of ok cells in groups of the given sizes (listed out of key order),
    ``failed`` error cells and ``unmeasured`` ok cells without a median."""
    rows = []
    for (kernel, shape, dtype), n in sizes.items():
        rows += [{"kernel": kernel, "shape": shape, "dtype": dtype, "variant": f"{kernel}/v={i}",
                  "status": "ok", "median_ns": 1e6 * (1 + i), "error": None} for i in range(n)]
    rows += [{"kernel": "rnn", "shape": "N=9", "dtype": "float64", "variant": f"rnn/bad={i}",
              "status": "error", "median_ns": np.nan, "error": "boom"} for i in range(failed)]
    rows += [{"kernel": "rnn", "shape": "N=1", "dtype": "float64", "variant": f"rnn/nan={i}",
              "status": "ok", "median_ns": np.nan, "error": None} for i in range(unmeasured)]
    frame = pd.DataFrame(rows)
    return frame.assign(cell_id=[f"{i:04x}" for i in range(len(frame))])


GROUPS = {("rnn", "N=3", "float64"): 2, ("gru", "N=2", "float64"): 3,
          ("rnn", "N=1", "float64"): 2}


def test_the_first_groups_in_key_order_that_fit_are_ranked_in_full():
    light = light_cells(GROUPS, failed=3)
    end = run.end_of_run(light, rows=5)
    shown = light.set_index("cell_id").loc[list(end.shown)]
    assert list(dict.fromkeys(zip(shown["kernel"], shown["shape"]))) == [
        ("gru", "N=2"), ("rnn", "N=1")]  # 3 + 2 cells: the third group (2 more) does not fit
    assert (end.hidden_groups, end.hidden_cells) == (1, 2)
    assert set(end.overall["kernel"]) == {"gru", "rnn"} and "geomean" in end.overall
    assert end.failed_total == 3 and list(end.failed["error"]) == ["boom"] * 3


def test_a_sweep_that_fits_is_ranked_whole_without_an_overall_ranking():
    end = run.end_of_run(light_cells(GROUPS, failed=2, unmeasured=1), rows=7)
    assert end.shown is None and end.overall is None
    assert (end.hidden_groups, end.hidden_cells, end.failed_total) == (0, 0, 2)


def test_the_first_group_is_ranked_whatever_its_size_and_failures_are_capped():
    end = run.end_of_run(light_cells(GROUPS, failed=4), rows=1)
    assert len(end.shown) == 3  # the gru group, the first in key order, over the limit
    assert (end.hidden_groups, end.hidden_cells) == (2, 4)
    assert len(end.failed) == 1 and end.failed_total == 4


def test_an_ok_cell_without_a_median_is_neither_ranked_nor_counted_hidden():
    end = run.end_of_run(light_cells(GROUPS, unmeasured=2), rows=5)
    assert not set(end.shown) & set(light_cells(GROUPS, unmeasured=2).tail(2)["cell_id"])
    assert end.hidden_cells == 2 and end.failed_total == 0


def test_what_the_end_keeps_holds_no_view_of_the_light_columns():
    """The light frame is dropped before the ranked rows are read: nothing may keep it."""
    light = light_cells(GROUPS, failed=3)
    end = run.end_of_run(light, rows=5)
    light.loc[:, "error"] = "changed"
    assert list(end.failed["error"]) == ["boom"] * 3


def plain_progress():
    """A progress display off a terminal, and what it printed."""
    import io

    from rich.console import Console

    out = io.StringIO()
    return run._Progress(Console(file=out, width=200)), out


def test_off_a_terminal_blocks_print_a_line_each_tenth_with_their_eta():
    from gradsweep.records import BlockProgress

    progress, out = plain_progress()
    progress.on_start("s1", 3)
    for done in range(1, 38):
        progress.on_block(BlockProgress(done, 37, 0.5 * done))
    lines = out.getvalue().splitlines()
    assert len(lines) == run.PROGRESS_LINES
    assert lines[0] == "blocks 4/37 in 2s, eta 16s"  # 0.5 s a block, 33 left
    assert lines[-1] == "blocks 37/37 in 18s, eta 0s"


def test_a_cells_line_takes_its_eta_from_the_blocks_not_from_the_cells():
    """A group's cells are stored together at the end of its window: with two of 40
    blocks done in 10 s, 190 s are left, however many cells came in."""
    from types import SimpleNamespace

    from gradsweep.records import BlockProgress

    progress, out = plain_progress()
    progress.on_start("s1", 3)
    cell = SimpleNamespace(variant="rnn/v=1", shape="N=1", dtype="float64", status="error")
    progress.on_result(cell)  # before any block: no pace yet
    progress.on_block(BlockProgress(2, 40, 10.0))
    progress.on_result(cell)
    first, second = out.getvalue().splitlines()
    assert first.endswith("failed 1 remaining 2 eta ?")
    assert second.endswith("failed 2 remaining 1 eta 190s")
    assert progress.failed == 2 and progress.done == 2


def test_the_harness_line_says_how_many_cells_ran_at_a_carried_loop_count():
    from gradsweep.records import SweepOutcome

    plain = SweepOutcome("s1", "finished", {"ok": 43}, wall_s=30.0, task_s=50.0, workers=2)
    assert "carried" not in run.harness_line(plain)
    rerun = SweepOutcome("s2", "finished", {"ok": 43}, wall_s=30.0, task_s=50.0, workers=2,
                         loops_carried=43, loops_kept=41)
    line = run.harness_line(rerun)
    assert line.startswith("43 cells in 30.0 s on 2 worker(s)")
    assert line.endswith("; loop counts of 41 of 43 cells carried from earlier sweeps")
