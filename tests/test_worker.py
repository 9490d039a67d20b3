"""The worker: verify before timing; every failure is a row."""

from dataclasses import replace

import numpy as np
import pytest

from gradsweep import measure
from gradsweep.records import BlockTask, Cell, Group, MeasureSettings, skeleton
from gradsweep.worker import (
    CALIBRATED_WARMUPS,
    LoopCounts,
    block_matrix,
    block_tasks,
    merge_blocks,
    rounds_per_block,
    run_block,
    run_cell,
    run_group_here,
)

FAST = MeasureSettings(samples=5, min_time_s=0.0005, max_warmups=2, repeats=3)
SHAPE = (("N", 4), ("T", 5), ("D", 6), ("H", 7))
PLUGINS = ("gs_extra",)


def cell(variant: str, dtype: str = "float64") -> Cell:
    return Cell("rnn", variant, SHAPE, dtype, 1, 0, 1.0, 5.0)


def test_ok_cell_has_timing_memory_and_environment():
    r = run_cell(cell("rnn/buffers=prealloc,wgrad=batched,clip=none"), FAST,
                 peaks={"float64": 40.0})
    assert r.status == "ok", r.error
    assert len(r.samples_ns) == FAST.repeats * rounds_per_block(FAST)
    assert r.loops >= 1 and r.median_ns > 0
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


RNN = [f"rnn/buffers={b},wgrad={w},clip=none" for b in ("list", "prealloc")
       for w in ("step", "batched")]


def test_a_block_samples_every_member_in_every_round_paired():
    group = Group(tuple(cell(v) for v in RNN))
    rows = run_block(BlockTask(group, 1, 7), FAST)
    rounds = rounds_per_block(FAST)
    assert [r.status for r in rows] == ["ok"] * 4
    for r in rows:
        assert r.sample_block == (1,) * rounds and r.sample_round == tuple(range(rounds))
        assert len(r.cpu_ns) == len(r.wall_ns) == rounds and r.clock == "cpu"
        assert r.samples_ns == r.cpu_ns and r.group_id == group.group_id
        assert all(w >= 0.5 * c for c, w in zip(r.cpu_ns, r.wall_ns))


@pytest.mark.parametrize("rounds, layouts", [(3, 1), (9, 3)])
def test_every_block_times_its_members_at_fresh_offsets_from_round_0(monkeypatch, rounds,
                                                                      layouts):
    """Re-materialised before round 0 and every RELAYOUT_EVERY_ROUNDS rounds after."""
    from gradsweep import worker

    moved: list[int] = []
    real = measure.rematerialise

    def counting(obj, rng, **kwargs):
        moved.append(1)
        return real(obj, rng, **kwargs)

    monkeypatch.setattr(measure, "rematerialise", counting)
    group = Group(tuple(cell(v) for v in RNN))
    settings = MeasureSettings(samples=rounds, repeats=1, min_time_s=0.0002, max_warmups=1)
    rows = run_block(BlockTask(group, 0, 3), settings)
    assert all(r.status == "ok" for r in rows) and worker.RELAYOUT_EVERY_ROUNDS == 4
    assert len(moved) == layouts * len(RNN)


def test_every_sample_of_a_block_is_primed(monkeypatch):
    """Each timed sample follows an untimed call of its own member (docs/noise.md)."""
    seen: list[bool] = []
    real = measure.timed_sample

    def spy(fn, loops, cpu, *, primed=False):
        seen.append(primed)
        return real(fn, loops, cpu, primed=primed)

    monkeypatch.setattr(measure, "timed_sample", spy)
    group = Group(tuple(cell(v) for v in RNN[:2]))
    rows = run_block(BlockTask(group, 0, 5), FAST)
    assert all(r.status == "ok" for r in rows)
    assert seen == [True] * (2 * rounds_per_block(FAST))


def test_a_block_given_loop_counts_takes_them_without_calibrating(monkeypatch):
    """pyperf's way: the first block calibrates, later blocks reuse its loop counts."""
    calibrated: list[int] = []
    real = measure.calibrate_loops

    def spy(fn, min_time_ns, clock):
        calibrated.append(1)
        return real(fn, min_time_ns, clock)

    monkeypatch.setattr(measure, "calibrate_loops", spy)
    group = Group(tuple(cell(v) for v in RNN[:3]))
    given = ((group.members[0].cell_id, 3), (group.members[2].cell_id, 5))
    rows = run_block(BlockTask(group, 1, 7, loops=given), FAST)
    assert [r.status for r in rows] == ["ok"] * 3
    assert rows[0].loops == 3 and rows[2].loops == 5 and len(calibrated) == 1
    assert rows[0].warmups == rows[2].warmups == CALIBRATED_WARMUPS
    assert rows[1].warmups == min(2, FAST.max_warmups)


def test_a_carried_loop_count_is_kept_while_it_holds_else_calibrated_afresh(monkeypatch):
    """Counts from an earlier sweep: checked by one sample (measure.loops_hold), kept with
    the first block's full warmup; refused ones calibrate; a later block's given count wins."""
    calibrated: list[int] = []
    real = measure.calibrate_loops
    monkeypatch.setattr(measure, "calibrate_loops",
                        lambda fn, t, clock: calibrated.append(1) or real(fn, t, clock))
    monkeypatch.setattr(measure, "loops_hold", lambda fn, loops, t, clock: loops == 8)
    group = Group(tuple(cell(v) for v in RNN[:3]))
    ids = [c.cell_id for c in group.members]
    carried = ((ids[0], 8), (ids[1], 4), (ids[2], 8))
    rows = run_block(BlockTask(group, 0, 7, loops=((ids[2], 2),), carried=carried), FAST)
    assert [r.status for r in rows] == ["ok"] * 3 and len(calibrated) == 1
    assert rows[0].loops == 8 and rows[0].warmups == min(2, FAST.max_warmups)
    assert rows[2].loops == 2 and rows[2].warmups == CALIBRATED_WARMUPS


def test_loop_counts_learned_from_a_block_are_handed_to_the_groups_later_blocks():
    group = Group(tuple(cell(v) for v in RNN[:2]))
    other = Group((cell(RNN[3]),))
    counts = LoopCounts(3)
    first = BlockTask(group, 0, 1)
    assert counts.given(first) == first
    rows = run_block(first, FAST)
    counts.learn(first, rows)
    later = counts.given(BlockTask(group, 1, 2))
    assert dict(later.loops) == {r.cell_id: r.loops for r in rows}
    assert counts.given(BlockTask(other, 1, 2)).loops == ()
    # the first count learned stays; a failed member has none to hand on
    counts.learn(first, [replace(rows[0], loops=99)])
    assert dict(counts.given(later).loops)[rows[0].cell_id] == rows[0].loops
    lone = Group((cell(RNN[2]),))
    counts.learn(BlockTask(lone, 0, 1), [skeleton(lone.members[0], "error", "boom")])
    assert counts.given(BlockTask(lone, 1, 2)).loops == ()
    # the group's last block done (repeats 3: block 2), the group is forgotten
    counts.learn(BlockTask(group, 2, 3), rows)
    assert counts.given(BlockTask(group, 2, 3)).loops == () and group.group_id not in counts._known


def test_a_group_run_here_calibrates_each_member_once(monkeypatch):
    calibrated: list[int] = []
    real = measure.calibrate_loops
    monkeypatch.setattr(measure, "calibrate_loops",
                        lambda fn, t, clock: calibrated.append(1) or real(fn, t, clock))
    rows = run_group_here(Group(tuple(cell(v) for v in RNN[:2])), FAST)
    assert [r.status for r in rows] == ["ok", "ok"] and len(calibrated) == 2
    assert all(len(r.samples_ns) == FAST.repeats * rounds_per_block(FAST) for r in rows)


def test_relayout_builds_a_peers_state_again_on_the_moved_case():
    """A peer's state (torch's tensors and graph) cannot be copied by rematerialise: it is
    built again from the moved case, so the peer's buffers move like everyone's."""
    pytest.importorskip("torch")
    from gradsweep.worker import _moved, prepare

    prepared, err = prepare(cell("rnn/peer=torch"))
    moved = _moved(prepared, np.random.default_rng(0))
    assert err < 1e-9 and moved.state is not prepared.state
    assert moved.case.X.ctypes.data != prepared.case.X.ctypes.data
    assert moved.state.leaves[0].data_ptr() == moved.case.X.ctypes.data  # reads the copy
    before, after = prepared.call(), moved.call()
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_allclose(after[name], before[name], rtol=1e-12, atol=0)
    plain, _ = prepare(cell(RNN[0]))
    moved_plain = _moved(plain, np.random.default_rng(1))
    assert moved_plain.cache is None and moved_plain.state is not plain.state


def test_a_member_whose_state_fails_to_build_again_fails_alone(monkeypatch):
    pytest.importorskip("torch")
    from gradsweep.impls import peer_torch

    calls = []

    def flaky(case, cache=None):
        calls.append(1)
        if len(calls) > 1:  # the first build (verification) works, the relayout's does not
            raise RuntimeError("no memory for the graph")
        return real(case, cache)

    real = peer_torch.prepare
    monkeypatch.setattr(peer_torch, "prepare", flaky)
    members = (cell(RNN[0]), cell("rnn/peer=torch"))
    for variant in peer_torch.VARIANTS:
        monkeypatch.setattr(variant.backward, "prepare", flaky)
    rows = run_block(BlockTask(Group(members), 0, 1), FAST)
    assert [r.status for r in rows] == ["ok", "error"]
    assert "no memory for the graph" in rows[1].error


def test_a_failing_member_fails_alone_and_the_others_are_timed():
    members = (cell(RNN[0]), cell("rnn/buffers=raises,wgrad=batched,clip=none"),
               cell("rnn/buffers=wrong,wgrad=batched,clip=none"), cell(RNN[3]))
    rows = run_block(BlockTask(Group(members), 0, 1), FAST, PLUGINS)
    assert [r.status for r in rows] == ["ok", "error", "incorrect", "ok"]
    assert len(rows[0].samples_ns) == len(rows[3].samples_ns) == rounds_per_block(FAST)


def test_a_member_past_its_timeout_fails_alone():
    slow = MeasureSettings(samples=3, min_time_s=0.0005, max_warmups=1, timeout_s=0.5,
                           repeats=1, memory=False)
    members = (cell(RNN[0]), cell("rnn/buffers=sleep,wgrad=batched,clip=none"))
    rows = run_block(BlockTask(Group(members), 0, 1), slow, ("gs_faults",))
    assert [r.status for r in rows] == ["ok", "timeout"]


def test_interleaved_rounds_shuffle_each_round_and_drop_failed_members():
    seen: list[tuple[int, int]] = []

    def take(m: int, r: int) -> bool:
        seen.append((m, r))
        return not (m == 2 and r == 1)

    measure.interleaved_rounds(5, 40, np.random.default_rng(3), take)
    orders = [tuple(m for m, r in seen if r == k) for k in range(40)]
    assert sorted(orders[0]) == [0, 1, 2, 3, 4] and sorted(orders[1]) == [0, 1, 2, 3, 4]
    assert all(2 not in o for o in orders[2:]) and all(len(o) == 4 for o in orders[2:])
    assert len(set(orders[2:])) > 10  # freshly shuffled, not one fixed order


def test_merged_blocks_time_is_the_geometric_mean_of_block_medians():
    group = Group((cell(RNN[0]),))
    blocks = [run_block(t, FAST)[0] for t in block_tasks([group], FAST)]
    merged = merge_blocks(blocks)
    medians = [np.median(b.samples_ns) for b in blocks]
    assert merged.median_ns == pytest.approx(np.exp(np.mean(np.log(medians))), rel=1e-9)
    assert merged.blocks == 3 and merged.ci_low_ns <= merged.median_ns <= merged.ci_high_ns
    assert sorted(set(merged.sample_block)) == [0, 1, 2]
    grid = block_matrix(merged.samples_ns, merged.sample_block, merged.sample_round)
    assert grid.shape == (3, rounds_per_block(FAST)) and not np.isnan(grid).any()
    assert any(w.startswith("shared-process") for w in merged.warnings)


def test_a_failure_in_any_block_is_the_members_status():
    ok = run_cell(cell(RNN[0]), FAST)
    bad = run_group_here(Group((cell("rnn/buffers=raises,wgrad=batched,clip=none"),)), FAST,
                         PLUGINS)[0]
    assert merge_blocks([ok, bad]).status == "error"


def test_block_tasks_are_block_major_with_distinct_seeds():
    groups = [Group((cell(RNN[0]),)), Group((cell(RNN[0], "float32"),))]
    tasks = block_tasks(groups, FAST)
    assert [t.block for t in tasks] == [0, 0, 1, 1, 2, 2]
    assert len({t.seed for t in tasks}) == 6
    assert block_tasks(groups, FAST) == tasks  # reproducible


def test_each_pass_takes_its_groups_in_its_own_shuffled_order():
    """Over 8 passes of 6 groups, the first group of a pass is not always the same one,
    every pass holds every group once, and the orders are reproducible."""
    groups = [Group((cell(v, d),)) for v in RNN[:3] for d in ("float64", "float32")]
    settings = MeasureSettings(samples=24, repeats=8, min_time_s=0.0002, max_warmups=1)
    tasks = block_tasks(groups, settings)
    passes = [[t.group for t in tasks if t.block == b] for b in range(8)]
    assert all(sorted(p, key=groups.index) == groups for p in passes)
    assert len({groups.index(p[0]) for p in passes}) > 1
    assert len({tuple(groups.index(g) for g in p) for p in passes}) > 1
    assert block_tasks(groups, settings) == tasks


def test_members_are_prepared_in_an_order_shuffled_per_block(monkeypatch):
    """No member is always allocated first or calibrated last (a fixed order showed as a
    systematic 1% spread between ten identical members)."""
    from gradsweep import worker

    seen: list[list[str]] = []
    real = worker.prepare

    def recording(c, plugins=()):
        seen[-1].append(c.variant)
        return real(c, plugins)

    monkeypatch.setattr(worker, "prepare", recording)
    group = Group(tuple(cell(v) for v in RNN))
    settings = MeasureSettings(samples=24, repeats=8, min_time_s=0.0002, max_warmups=1)
    for task in block_tasks([group], settings):
        seen.append([])
        rows = run_block(task, settings)
        assert [r.variant for r in rows] == list(RNN)  # rows keep the group's order
        assert all(r.status == "ok" for r in rows)
    assert all(sorted(order) == sorted(RNN) for order in seen)
    assert len({tuple(order) for order in seen}) > 1
    firsts = {order[0] for order in seen}
    assert len(firsts) > 1  # not always the same member first
