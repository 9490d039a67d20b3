"""Sweeps end to end: local executor, plugins, resume, failures as rows, embedded Ray.

The Ray tests share one embedded Ray (module fixture, two CPUs, bound to
127.0.0.1) that ``run`` joins instead of starting its own; the killed-driver
test runs its driver as a subprocess joined to the same Ray by address.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import PLUGINS, SMALL_MEASURE

from gradsweep import runner, store
from gradsweep.cli.app import main
from gradsweep.executors import guards, onray, sessions
from gradsweep.executors.local import LocalExecutor
from gradsweep.spec import expand, load_spec, parse

PLUGIN_SPEC = """
name = "plugin-sweep"
plugins = ["gs_extra"]
""" + SMALL_MEASURE + """
[[grid]]
kernel = "rnn"
variants = { buffers = ["list", "plugin", "raises", "wrong"], wgrad = ["batched"], clip = ["none"] }
shape = { N = [2], T = [3], D = [4], H = [5] }
"""


def run_local(path, results, *extra):
    return main(["run", str(path), "--local", "--results", str(results), *extra])


def test_local_sweep_stores_every_cell_and_exits_1_on_failures(write_spec, results, capsys):
    path = write_spec(PLUGIN_SPEC)
    assert run_local(path, results) == 1
    out = capsys.readouterr().out
    sweep_id = out.splitlines()[0].strip()
    cells = store.read(store.resolve(results), "cells", [sweep_id]).set_index("variant")
    assert cells.loc["rnn/buffers=plugin,wgrad=batched,clip=none", "status"] == "ok"
    assert cells.loc["rnn/buffers=raises,wgrad=batched,clip=none", "status"] == "error"
    assert cells.loc["rnn/buffers=wrong,wgrad=batched,clip=none", "status"] == "incorrect"
    assert "buffers=plugin" in out  # ranked
    sweeps = store.sweeps(store.resolve(results))
    assert sweeps.set_index("sweep_id").loc[sweep_id, "status"] == "finished"


def test_all_ok_sweep_exits_0(write_spec, results):
    path = write_spec(PLUGIN_SPEC.replace('"raises", "wrong"', '"prealloc"'))
    assert run_local(path, results) == 0


def test_resume_reruns_only_groups_with_cells_not_ok_without_duplicates(write_spec, results,
                                                                         capsys):
    """A group is the unit of timing: a group with a failed member reruns whole (its
    members stay paired); a group whose members are all ok is left as it was."""
    path = write_spec(PLUGIN_SPEC + """
[[grid]]
kernel = "rnn"
dtype = ["float32"]
variants = { buffers = ["list", "plugin"], wgrad = ["batched"], clip = ["none"] }
shape = { N = [2], T = [3], D = [4], H = [5] }
""")
    run_local(path, results)
    sweep_id = capsys.readouterr().out.splitlines()[0].strip()
    ds = store.resolve(results)
    before = store.read(ds, "cells", [sweep_id]).set_index("cell_id")
    assert run_local(path, results, "--resume", "latest") == 1
    assert capsys.readouterr().out.splitlines()[0].strip() == sweep_id
    after = store.read(ds, "cells", [sweep_id]).set_index("cell_id")
    assert sorted(after.index) == sorted(before.index)  # no duplicate rows
    clean = before["dtype"] == "float32"  # the group whose members were all ok
    assert (before.loc[clean, "status"] == "ok").all()
    assert (after.loc[clean[clean].index, "recorded_at"]
            == before.loc[clean[clean].index, "recorded_at"]).all()
    assert (after.loc[clean[~clean].index, "recorded_at"]
            > before.loc[clean[~clean].index, "recorded_at"]).all()


def test_resume_refuses_a_changed_spec(write_spec, results, capsys):
    path = write_spec(PLUGIN_SPEC)
    run_local(path, results)
    sweep_id = capsys.readouterr().out.splitlines()[0].strip()
    path.write_text(PLUGIN_SPEC.replace("H = [5]", "H = [6]"))
    assert run_local(path, results, "--resume", sweep_id) == 2
    assert "different spec" in capsys.readouterr().err


def test_resume_of_unknown_sweep_is_exit_2(write_spec, results, capsys):
    assert run_local(write_spec(PLUGIN_SPEC), results, "--resume", "nope") == 2
    assert "unknown sweep" in capsys.readouterr().err


def test_memory_budget_skips_cells_before_they_run(write_spec, results, capsys):
    path = write_spec(PLUGIN_SPEC.replace("[measure]", "[measure]\nmemory_budget_mb = 0.0001"))
    run_local(path, results)
    cells = store.read(store.resolve(results), "cells")
    assert set(cells["status"]) == {"skipped"}
    assert cells["error"].str.contains("memory_budget_mb").all()


def test_a_local_sweep_calibrates_loops_in_each_groups_first_block_only(tmp_path, write_spec):
    """Later blocks take the first block's loop count and one warmup (pyperf's way)."""
    from gradsweep.worker import BLOCK_WARMUPS, CALIBRATED_WARMUPS

    spec = load_spec(write_spec(PLUGIN_SPEC))
    ds = store.resolve(tmp_path / "r")
    runner.run_sweep(spec, ds, LocalExecutor())
    ok = store.read(ds, "cells").query("status == 'ok'")
    first = min(BLOCK_WARMUPS, spec.measure.max_warmups)
    later = min(CALIBRATED_WARMUPS, spec.measure.max_warmups)
    assert len(ok) == 2 and spec.measure.repeats > 1
    assert (ok["warmups"] == first + (spec.measure.repeats - 1) * later).all()


def test_a_rerun_into_the_same_store_starts_from_the_loop_counts_it_holds(tmp_path,
                                                                           write_spec,
                                                                           monkeypatch):
    """``carry_loops``: the newest ok row's count per cell, checked by measure.loops_hold."""
    from gradsweep import measure

    spec = load_spec(write_spec(PLUGIN_SPEC))
    ds = store.resolve(tmp_path / "r")
    cells = expand(spec).cells
    assert runner.carried_loops(ds, cells, spec.measure) == {}  # nothing stored yet
    assert runner.run_sweep(spec, ds, LocalExecutor()).loops_carried == 0
    first = store.read(ds, "cells").query("status == 'ok'").set_index("cell_id")["loops"]
    assert runner.carried_loops(ds, cells, spec.measure) == first.to_dict()
    off = dataclasses.replace(spec.measure, carry_loops=False)
    assert runner.carried_loops(ds, cells, off) == {}
    checked: list[int] = []
    monkeypatch.setattr(measure, "loops_hold",
                        lambda fn, loops, t, clock: checked.append(loops) or True)
    monkeypatch.setattr(measure, "calibrate_loops", lambda fn, t, clock: 2 ** 19)
    outcome = runner.run_sweep(spec, ds, LocalExecutor())
    rows = store.read(ds, "cells", [outcome.sweep_id]).query("status == 'ok'")
    rows = rows.set_index("cell_id")
    assert rows["loops"].to_dict() == first.to_dict() and sorted(checked) == sorted(first)
    assert outcome.loops_carried == outcome.loops_kept == len(first)


def test_every_block_reports_the_sweeps_progress_once(tmp_path, write_spec):
    """Cells are stored in bursts (a group's last block); blocks one by one, counted
    against every group's ``repeats`` blocks."""
    spec = load_spec(write_spec(PLUGIN_SPEC))
    seen = []
    runner.run_sweep(spec, store.resolve(tmp_path / "r"), LocalExecutor(), on_block=seen.append)
    total = len({c.group_id for c in expand(spec).cells}) * spec.measure.repeats
    assert total > 1 and [p.done for p in seen] == list(range(1, total + 1))
    assert {p.total for p in seen} == {total}
    elapsed = [p.elapsed_s for p in seen]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    assert seen[-1].eta_s == 0.0


def test_batch_writer_writes_whole_batches(tmp_path, write_spec):
    spec = load_spec(write_spec(PLUGIN_SPEC))
    ds = store.resolve(tmp_path / "r")
    outcome = runner.run_sweep(spec, ds, LocalExecutor())
    files = list((tmp_path / "r" / "cells").rglob("*.parquet"))
    assert len(files) == 1 and sum(outcome.counts.values()) == len(expand(spec).cells)
    nodes = store.read(ds, "nodes")
    assert len(nodes) == 1 and nodes["gemm_gflops_float64"].iloc[0] > 0


def _groups(*sizes):
    """Groups of ``sizes`` members each (shape N = the group's index)."""
    from gradsweep.records import Cell, Group

    return [Group(tuple(Cell("rnn", f"rnn/m={m}", (("N", n),), "float64", 1, 0, 1.0, 5.0)
                        for m in range(size))) for n, size in enumerate(sizes, 1)]


def test_windows_bound_the_members_and_keep_groups_whole_in_order():
    groups = _groups(3, 3, 3, 5, 1, 2)
    windows = list(runner.windows(groups, workers=1, cells=6))
    assert [g for w in windows for g in w] == groups
    # at least WINDOW_GROUPS_PER_WORKER groups each, then no more members than asked
    assert [len(w) for w in windows] == [4, 2]
    assert list(runner.windows(groups, workers=1, cells=100)) == [groups]
    one_each = list(runner.windows(_groups(5, 5, 5), workers=0, cells=1))
    assert [len(w) for w in one_each] == [1, 1, 1]  # a group bigger than a window is alone


def test_block_major_tasks_come_window_by_window():
    groups = _groups(2, 2, 2, 2)
    settings = parse(PLUGIN_SPEC).measure
    tasks = list(runner.sweep_tasks(groups, settings, block_major=True, workers=0, cells=4))
    order = [(groups.index(t.group), t.block) for t in tasks]
    per_pass = 2 * settings.repeats  # two groups a window, each pass's in its own order
    assert [b for _, b in order] == [b for _ in range(2) for b in range(settings.repeats)
                                     for _ in range(2)]
    assert {g for g, _ in order[:per_pass]} == {0, 1}
    assert {g for g, _ in order[per_pass:]} == {2, 3}
    by_group = list(runner.sweep_tasks(groups, settings, block_major=False))
    assert [(groups.index(t.group), t.block) for t in by_group] == [
        (g, b) for g in range(4) for b in range(settings.repeats)]


class PassExecutor(LocalExecutor):
    """In-process blocks in the order a process-per-pass executor gets them; notes how
    many cells were stored when each block started."""

    processes = True

    def __init__(self, dataset):
        self.dataset, self.started = dataset, []

    def run_blocks(self, tasks, settings, plugins, peaks):
        from gradsweep.executors.node import run_block_on_node

        for task in tasks:
            stored = store.read(self.dataset, "cells", columns=["cell_id"])
            self.started.append((task.group.group_id, task.block, len(stored)))
            yield run_block_on_node(task, settings, plugins, peaks, in_worker=False)


def test_a_window_is_stored_before_the_next_window_runs(tmp_path, write_spec, monkeypatch):
    """The driver streams: a group's rows are stored once its window's passes end, so
    what it holds is bounded by the window, not by the sweep."""
    spec = load_spec(write_spec(PLUGIN_SPEC.replace('"raises", "wrong"', '"prealloc"').replace(
        "N = [2]", "N = [2, 3, 4, 5]")))
    monkeypatch.setattr(runner, "WINDOW_CELLS", 6)
    monkeypatch.setattr(runner, "WINDOW_GROUPS_PER_WORKER", 1)
    monkeypatch.setattr(runner, "FLUSH_SECONDS", 0.0)  # every finished group at once
    ds = store.resolve(tmp_path / "r")
    executor = PassExecutor(ds)
    outcome = runner.run_sweep(spec, ds, executor)
    assert outcome.counts == {"ok": 12}  # four groups of three members
    window = 2 * spec.measure.repeats  # blocks of the first window (two groups)
    # the first group is stored as soon as its last block is in, before the second's
    assert [s for *_, s in executor.started[:window]] == [0] * (window - 1) + [3]
    assert executor.started[window][2] == 6  # the first window's six cells are stored
    assert len(store.read(ds, "cells")) == 12


def test_finished_groups_are_stored_together_and_reported_once_stored(tmp_path, monkeypatch):
    from gradsweep.records import skeleton

    monkeypatch.setattr(runner, "FLUSH_ROWS", 4)
    monkeypatch.setattr(runner, "FLUSH_SECONDS", 3600.0)
    ds = store.resolve(tmp_path / "r")
    reported = []

    def on_result(row):  # how many rows were stored when this one was reported
        reported.append(len(store.read(ds, "cells", ["s1"], columns=["cell_id"])))

    groups = [tuple(skeleton(c, "ok", duration_s=float(n)) for c in g.members)
              for n, g in enumerate(_groups(2, 2, 2), 1)]  # each group's blocks took n s
    tally = runner._Tally()
    finished = runner._Finished(ds, "s1", tally, on_result)
    finished.add(groups[0])
    assert reported == [] and not (tmp_path / "r").exists()  # held, not reported
    finished.add(groups[1])  # FLUSH_ROWS reached: one file, then each row reported
    assert reported == [4] * 4
    finished.add(groups[2])
    monkeypatch.setattr(runner, "FLUSH_SECONDS", 0.0)
    finished.add(())  # a poll that finished nothing: what waits too long is stored
    assert reported == [4] * 4 + [6] * 2
    assert len(list((tmp_path / "r" / "cells").rglob("*.parquet"))) == 2
    assert tally.counts == {"ok": 6} and tally.task_s == 1 + 2 + 3  # each group once


def test_run_prints_a_bounded_ranking_of_a_big_sweep(write_spec, results, capsys,
                                                      monkeypatch):
    """More ok cells than a report prints: the first groups that fit, the overall
    ranking, and a note naming the report of every group."""
    from gradsweep.cli import views

    monkeypatch.setattr(views, "REPORT_MAX_ROWS", 3)
    path = write_spec(PLUGIN_SPEC.replace('"raises", "wrong"', '"prealloc"').replace(
        "N = [2]", "N = [2, 3]"))
    assert run_local(path, results) == 0
    out = capsys.readouterr().out
    sweep_id = out.splitlines()[0].strip()
    assert "rnn N=2,T=3,D=4,H=5 float64" in out and "N=3,T=3" not in out
    assert "overall" in out and "geomean" in out
    assert f"1 more groups (3 cells) not shown; gradsweep report {sweep_id}" in out


FAULT_SPEC = """
name = "faults"
plugins = ["gs_extra", "gs_faults"]
[measure]
samples = 3
repeats = 3
min_time_s = 0.001
max_warmups = 1
timeout_s = TIMEOUT
memory_budget_mb = 256
[[grid]]
kernel = "rnn"
variants = { buffers = VARIANTS, wgrad = ["batched"], clip = ["none"] }
shape = { N = [2], T = [3], D = [4], H = [5] }
"""
#: Cells of the killed-driver sweep and the measured time of each (seconds, about).
KILL_SPEC = """
name = "kill-me"
[measure]
samples = 5
repeats = 3
min_time_s = 0.03
max_warmups = 2
memory = false
[[grid]]
kernel = "rnn"
variants = { buffers = "*", wgrad = "*", clip = ["none"] }
shape = { N = [2, 3, 4, 5, 6, 7], T = [3], D = [4], H = [5] }
"""
#: Longest wait for the killed driver's first stored batch.
FIRST_BATCH_S = 60


def fault_spec(variants: list[str], timeout_s: float) -> str:
    return (FAULT_SPEC.replace("VARIANTS", str(variants).replace("'", '"'))
            .replace("TIMEOUT", str(timeout_s)))


def statuses(results, sweep_id) -> dict[str, tuple[str, str]]:
    cells = store.read(store.resolve(results), "cells", [sweep_id])
    return {v.split("/")[1].split(",")[0].split("=")[1]: (s, e or "")
            for v, s, e in zip(cells["variant"], cells["status"], cells["error"])}


def test_local_timeout_and_memory_guard_become_rows(write_spec, results, capsys):
    path = write_spec(fault_spec(["plugin", "sleep", "hog"], 1))
    t0 = time.monotonic()
    assert run_local(path, results) == 1
    assert time.monotonic() - t0 < 30  # the sleeping cell was stopped at 1 s
    got = statuses(results, capsys.readouterr().out.splitlines()[0].strip())
    assert got["plugin"][0] == "ok"
    assert got["sleep"] == ("timeout", "cell exceeded timeout_s 1")
    assert got["hog"][0] == "error" and got["hog"][1].startswith("MemoryError")


def test_memory_guard_restores_the_limit():
    import resource

    before = resource.getrlimit(resource.RLIMIT_AS)
    with guards.memory_guard(64) as limit:
        assert limit is None or resource.getrlimit(resource.RLIMIT_AS)[0] == limit
    assert resource.getrlimit(resource.RLIMIT_AS) == before


def test_sigterm_stores_finished_cells_and_marks_the_sweep_cancelled(write_spec, results):
    path = write_spec(KILL_SPEC.replace("N = [2, 3, 4, 5, 6, 7]", f"N = {list(range(2, 14))}"))
    env = {**os.environ, "PYTHONPATH": str(PLUGINS), "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen([sys.executable, "-m", "gradsweep", "run", str(path), "--local",
                               "--results", str(results)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        sweep_id = driver.stdout.readline().strip()
        _wait_for_batch(results, sweep_id)
        time.sleep(0.5)  # a few more cells in the unwritten batch
    finally:
        driver.send_signal(signal.SIGTERM)
        out, errors = driver.communicate(timeout=60)
    out += errors  # progress and the resume hint go to stderr
    assert driver.returncode == 130 and f"--resume {sweep_id}" in out
    sweeps = store.sweeps(store.resolve(results)).set_index("sweep_id")
    assert sweeps.loc[sweep_id, "status"] == "cancelled"
    reported = sum(line.startswith("[") for line in out.splitlines())
    stored = store.read(store.resolve(results), "cells", [sweep_id])
    assert len(stored) == reported  # every finished cell was written, none lost


@pytest.fixture(scope="module")
def embedded_ray(tmp_path_factory):
    """One embedded Ray for this module's Ray tests; GS_FAULT_DIR reaches its workers."""
    import ray

    fault_dir = tmp_path_factory.mktemp("faults")
    os.environ["GS_FAULT_DIR"] = str(fault_dir)
    os.environ.setdefault("RAY_task_oom_retries", onray.OOM_RETRIES)
    plugins = ("gs_extra", "gs_faults")
    with sessions.embedded(watch=False, env=onray.embedded_env(plugins)):
        ray.init(**onray.ray_init_kwargs(None, plugins, 2))
    try:
        yield fault_dir
    finally:
        ray.shutdown()
        os.environ.pop("GS_FAULT_DIR", None)


@pytest.mark.ray
def test_ray_faults_crash_timeout_and_memory_become_rows(embedded_ray, write_spec, results,
                                                        capsys):
    path = write_spec(fault_spec(["plugin", "crash", "sleep", "hog"], 3))
    assert main(["run", str(path), "--results", str(results)]) == 1
    got = statuses(results, capsys.readouterr().out.splitlines()[0].strip())
    assert got["plugin"][0] == "ok"
    assert got["crash"][0] == "crashed" and "3 times" in got["crash"][1]
    crashes = (embedded_ray / "crash.log").read_text().split()
    assert len(crashes) == 1 + onray.CRASH_RETRIES and len(set(crashes)) == len(crashes)
    assert got["sleep"] == ("timeout", "cell exceeded timeout_s 3")
    assert got["hog"][0] == "error" and got["hog"][1].startswith("MemoryError")


def _driver(spec: Path, address: str, results: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env.update(PYTHONPATH=str(PLUGINS), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "gradsweep", "run", str(spec), "--address",
                             address, "--workers", "1", "--results", str(results)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _wait_for_batch(results: Path, sweep_id: str) -> int:
    partition = results / "cells" / f"sweep_id={sweep_id}"
    end = time.monotonic() + FIRST_BATCH_S
    while time.monotonic() < end:
        files = list(partition.glob("*.parquet"))
        if files:
            return sum(pq.read_metadata(f).num_rows for f in files)
        time.sleep(0.2)
    raise AssertionError("the driver stored no batch")


@pytest.mark.ray
def test_killed_driver_then_resume_stores_every_cell_once(embedded_ray, write_spec, results):
    import ray

    path = write_spec(KILL_SPEC)
    driver = _driver(path, ray.get_runtime_context().gcs_address, results)
    try:
        sweep_id = driver.stdout.readline().strip()
        stored = _wait_for_batch(results, sweep_id)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    total = len(expand(load_spec(path)).cells)
    assert 0 < stored < total  # killed mid-sweep
    assert main(["run", str(path), "--resume", sweep_id, "--results", str(results)]) == 0
    files = (results / "cells" / f"sweep_id={sweep_id}").glob("*.parquet")
    ids = [i for f in files for i in pq.read_table(f, columns=["cell_id"])["cell_id"].to_pylist()]
    assert len(ids) == len(set(ids)) == total  # every cell exactly once, even in the raw files
    sweeps = store.sweeps(store.resolve(results)).set_index("sweep_id")
    assert sweeps.loc[sweep_id, "status"] == "finished"


@pytest.mark.ray
def test_embedded_ray_sweep(embedded_ray, write_spec, results, capsys):
    path = write_spec(PLUGIN_SPEC)
    assert main(["run", str(path), "--results", str(results), "--workers", "2"]) == 1
    sweep_id = capsys.readouterr().out.splitlines()[0].strip()
    cells = store.read(store.resolve(results), "cells", [sweep_id])
    assert len(cells) == 4 and (cells["node"].str.len() > 20).all()  # Ray node ids
    assert dict(zip(cells["variant"], cells["status"]))[
        "rnn/buffers=raises,wgrad=batched,clip=none"] == "error"


PASSES_SPEC = """
name = "passes"
[measure]
samples = 9
repeats = 3
min_time_s = 0.001
max_warmups = 2
memory = false
[[grid]]
kernel = "rnn"
variants = { buffers = ["list"], wgrad = "*", clip = ["none"] }
peers = ["torch"]
shape = { N = [2, 3], T = [3], D = [4], H = [5] }
"""


@pytest.mark.ray
def test_each_pass_runs_in_its_own_processes_started_ahead(embedded_ray, write_spec, results,
                                                          capsys):
    """The next pass's actors start during this pass (preloading torch), yet no block
    of a pass shares a process with a block of another pass."""
    path = write_spec(PASSES_SPEC)
    assert main(["run", str(path), "--results", str(results), "--workers", "1"]) == 0
    sweep_id = capsys.readouterr().out.splitlines()[0].strip()
    cells = store.read(store.resolve(results), "cells", [sweep_id])
    assert (cells["status"] == "ok").all() and (cells["blocks"] == 3).all()
    by_pass = [{tuple(p)[b] for p in cells["pids"]} for b in range(3)]
    assert all(len(tuple(p)) == 3 for p in cells["pids"])
    assert not (by_pass[0] & by_pass[1] or by_pass[1] & by_pass[2] or by_pass[0] & by_pass[2])
    assert not cells["warnings"].map(lambda w: "shared-process" in " ".join(w)).any()
    # only each group's first block calibrated: the later ones took its loop count
    from gradsweep.worker import BLOCK_WARMUPS, CALIBRATED_WARMUPS
    assert (cells["warmups"] == BLOCK_WARMUPS + 2 * CALIBRATED_WARMUPS).all()


def test_run_refuses_a_dashboard_url(write_spec, results, capsys, monkeypatch):
    path = write_spec(PLUGIN_SPEC)
    assert main(["run", str(path), "--address", "http://127.0.0.1:8265"]) == 2
    assert "dashboard URL" in capsys.readouterr().err
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    assert main(["run", str(path)]) == 2
    assert "RAY_ADDRESS" in capsys.readouterr().err


PROFILE_SPEC = """
name = "profiled"
[measure]
samples = 5
min_time_s = 0.001
max_warmups = 2
profile = true
profile_seconds = 0.5
profile_variants = ["rnn/buffers=list,*"]
[[grid]]
kernel = "rnn"
variants = { wgrad = ["step"], clip = ["none"] }
shape = { N = [4], T = [8], D = [8], H = [16] }
"""


@pytest.mark.slow
def test_profiled_sweep_stores_profiles_compacts_and_writes_dashboard(write_spec, results,
                                                                       tmp_path, capsys):
    site = tmp_path / "site"
    code = main(["run", str(write_spec(PROFILE_SPEC)), "--local", "--results", str(results),
                 "--dashboard", str(site)])
    out = capsys.readouterr().out
    assert code == 0, out
    sweep_id = out.splitlines()[0].strip()
    ds = store.resolve(results)
    profiles = store.read(ds, "profiles", [sweep_id])
    assert len(profiles) and set(profiles["variant"]) == {"rnn/buffers=list,wgrad=step,clip=none"}
    assert profiles["file"].str.contains("rnn.py").any()
    # timings untouched by profiling, and the finished sweep is one file per table
    cells = store.read(ds, "cells", [sweep_id])
    assert (cells["status"] == "ok").all() and cells["median_ns"].notna().all()
    for table in ("sweeps", "cells", "nodes", "profiles"):
        assert len(list((results / table).rglob("*.parquet"))) == 1, table
    assert (site / "index.html").is_file() and f"dashboard: {site}" in out


def test_rows_wait_longer_as_a_long_sweep_goes_on(tmp_path):
    """A second at first (progress stays live), then a fiftieth of the sweep so far, up
    to five seconds: a long sweep of tiny groups writes hundreds of files, not thousands."""
    finished = runner._Finished(store.resolve(tmp_path / "r"), "s1", runner._Tally(),
                                lambda row: None, started=100.0)
    waits = [finished.longest_wait_s(100.0 + t) for t in (0, 30, 60, 150, 250, 1800)]
    assert waits == pytest.approx([1.0, 1.0, 1.2, 3.0, 5.0, 5.0])
    files, t = 0, 0.0  # one file per longest wait over a 30-minute sweep
    while t < 1800:
        t += finished.longest_wait_s(100.0 + t)
        files += 1
    assert files < 450  # at a file a second: 1,800
