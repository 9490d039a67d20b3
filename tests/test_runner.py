"""Sweeps end to end: local executor, plugins, resume, failures as rows, embedded Ray."""

import pytest

from bench import runner, store
from bench.cli import main
from bench.spec import expand, load_spec

from conftest import SMALL_MEASURE

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


def test_resume_reruns_only_cells_not_ok_without_duplicates(write_spec, results, capsys):
    path = write_spec(PLUGIN_SPEC)
    run_local(path, results)
    sweep_id = capsys.readouterr().out.splitlines()[0].strip()
    ds = store.resolve(results)
    before = store.read(ds, "cells", [sweep_id]).set_index("cell_id")
    assert run_local(path, results, "--resume", "latest") == 1
    assert capsys.readouterr().out.splitlines()[0].strip() == sweep_id
    after = store.read(ds, "cells", [sweep_id]).set_index("cell_id")
    assert sorted(after.index) == sorted(before.index)  # no duplicate rows
    ok = before["status"] == "ok"
    # ok cells untouched, the others rerun (newer recorded_at)
    assert (after.loc[ok[ok].index, "recorded_at"] == before.loc[ok[ok].index,
                                                                  "recorded_at"]).all()
    assert (after.loc[ok[~ok].index, "recorded_at"] > before.loc[ok[~ok].index,
                                                                  "recorded_at"]).all()


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


def test_batch_writer_writes_whole_batches(tmp_path, write_spec):
    spec = load_spec(write_spec(PLUGIN_SPEC))
    ds = store.resolve(tmp_path / "r")
    outcome = runner.run_sweep(spec, ds, runner.LocalExecutor())
    files = list((tmp_path / "r" / "cells").rglob("*.parquet"))
    assert len(files) == 1 and sum(outcome.counts.values()) == len(expand(spec).cells)
    nodes = store.read(ds, "nodes")
    assert len(nodes) == 1 and nodes["gemm_gflops_float64"].iloc[0] > 0


@pytest.mark.ray
def test_embedded_ray_sweep(write_spec, results, capsys):
    path = write_spec(PLUGIN_SPEC)
    assert main(["run", str(path), "--results", str(results), "--workers", "2"]) == 1
    sweep_id = capsys.readouterr().out.splitlines()[0].strip()
    cells = store.read(store.resolve(results), "cells", [sweep_id])
    assert len(cells) == 4 and (cells["node"].str.len() > 20).all()  # Ray node ids
    assert dict(zip(cells["variant"], cells["status"]))[
        "rnn/buffers=raises,wgrad=batched,clip=none"] == "error"
