"""A block in a process of its own (tests mirror bench/executors/node.py)."""

import os

import pytest
from conftest import PLUGINS  # noqa: F401 - puts the test plugins on sys.path

from gradsweep.executors import node
from gradsweep.records import BlockTask, Cell, Group, MeasureSettings

SHAPE = (("N", 2), ("T", 3), ("D", 4), ("H", 5))
SETTINGS = MeasureSettings(samples=3, repeats=1, min_time_s=0.0005, max_warmups=1, memory=False)
FAULTS = ("gs_faults",)


def group(*buffers: str) -> Group:
    return Group(tuple(Cell("rnn", f"rnn/buffers={b},wgrad=batched,clip=none", SHAPE,
                            "float64", 1, 0, 1.0, 5.0) for b in buffers))


@pytest.fixture(scope="module")
def processes():
    return node.block_processes(FAULTS)


def test_each_block_runs_in_a_fresh_process_and_keeps_the_node_given(processes):
    task = BlockTask(group("list", "prealloc"), 0, 1)
    first = node.run_block_in_process(processes, task, SETTINGS, FAULTS, {}, node="n1",
                                      limit_s=60)
    second = node.run_block_in_process(processes, task, SETTINGS, FAULTS, {}, node="n1",
                                       limit_s=60)
    assert [r.status for r in first.rows + second.rows] == ["ok"] * 4
    pids = {r.pids[0] for r in first.rows}, {r.pids[0] for r in second.rows}
    assert len(pids[0]) == len(pids[1]) == 1 and not pids[0] & pids[1]
    assert os.getpid() not in pids[0] | pids[1]
    assert {r.node for r in first.rows + second.rows} == {"n1"}


def test_a_member_that_kills_its_process_is_reported_not_raised_in_the_parent(processes):
    task = BlockTask(group("list", "crash"), 0, 1)
    with pytest.raises(node.BlockProcessDied, match="exit code 3"):
        node.run_block_in_process(processes, task, SETTINGS, FAULTS, {}, node="n1",
                                  limit_s=60)


def test_a_block_past_its_limit_is_killed(processes):
    task = BlockTask(group("sleep"), 0, 1)
    with pytest.raises(node.BlockProcessHung, match="within 2 s"):
        node.run_block_in_process(processes, task, SETTINGS, FAULTS, {}, node="n1",
                                  limit_s=2)


def test_the_fork_server_preloads_a_peers_first_use_modules():
    assert "torch.fx.experimental.symbolic_shapes" in node.PEER_FIRST_USE_MODULES["torch"]
    assert node.peer_modules(group("list").members) == ()
    peer = Cell("rnn", "rnn/peer=torch", SHAPE, "float64", 1, 0, 1.0, 5.0)
    assert node.peer_modules([peer, *group("list").members]) == ("torch",)


BROKEN_PLUGIN_RUN = """
import sys
from gradsweep.executors import node
from gradsweep.records import BlockTask, Cell, Group, MeasureSettings
cells = (Cell("rnn", "rnn/buffers=list,wgrad=batched,clip=none",
              (("N", 2), ("T", 3), ("D", 4), ("H", 5)), "float64", 1, 0, 1.0, 5.0),)
settings = MeasureSettings(samples=3, repeats=1, min_time_s=0.0005, max_warmups=1,
                           memory=False)
if __name__ == "__main__":
    processes = node.block_processes(("gs_broken",), ("torch",))
    out = node.run_block_in_process(processes, BlockTask(Group(cells), 0, 1), settings,
                                    ("gs_broken",), {}, node="n", limit_s=60)
    print([(r.status, r.error) for r in out.rows])
"""


def test_a_plugin_that_fails_to_import_is_each_members_error_not_a_dead_server(tmp_path):
    """The fork server imports plugins through executors.warm, which survives them; the
    block's process then reports the plugin's error on its members' rows."""
    import subprocess
    import sys

    (tmp_path / "gs_broken.py").write_text("raise RuntimeError('broken at import')\n")
    script = tmp_path / "run.py"
    script.write_text(BROKEN_PLUGIN_RUN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path),
                                                        os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "('error'" in done.stdout and "broken at import" in done.stdout


FIRST_BLOCK_IMPORTS = """
import importlib, sys
from gradsweep.executors import node
for name in node.FORK_SERVER_MODULES:
    importlib.import_module(name)
from gradsweep.records import BlockTask, Cell, Group, MeasureSettings
before = set(sys.modules)
cells = tuple(Cell("rnn", f"rnn/buffers={b},wgrad=batched,clip=none",
                   (("N", 2), ("T", 3), ("D", 4), ("H", 5)), "float64", 1, 0, 1.0, 5.0)
              for b in ("list", "prealloc"))
settings = MeasureSettings(samples=6, repeats=1, min_time_s=0.0005, max_warmups=1)
out = node.run_block_on_node(BlockTask(Group(cells), 0, 1), settings, (), {}, node="n")
assert [r.status for r in out.rows] == ["ok", "ok"], out.rows
print(sorted(set(sys.modules) - before))
"""


def test_a_block_imports_nothing_its_fork_server_did_not():
    """Every block's process is new: a module a block imports first (numpy.ma, through
    np.median; numpy.random) would be imported again by every block (45 ms each)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FIRST_BLOCK_IMPORTS], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
