"""The Ray executor's passes (tests mirror bench/executors/onray.py)."""

import os
import sys
import time
from pathlib import Path

import pytest

from gradsweep.executors import sessions
from gradsweep.executors.onray import SPARE_CPUS, RayExecutor, embedded_env
from gradsweep.measure import MALLOC_ENV
from gradsweep.records import Cell, Group, MeasureSettings, peaks_of
from gradsweep.worker import block_tasks

SHAPE = (("N", 2), ("T", 3), ("D", 4), ("H", 5))
#: Seconds within which every process of a closed executor's Ray must be gone.
GONE_WITHIN_S = 5.0
SETTINGS = MeasureSettings(samples=6, repeats=2, min_time_s=0.0005, max_warmups=1, memory=False)


@pytest.mark.ray
def test_an_embedded_executor_starts_its_actors_during_the_probe_and_forks_each_block():
    """The embedded Ray has a CPU beyond its workers: the sweep's actors start while the
    probe runs and serve every pass; each block still runs in a process of its own, and
    the actors end with the sweep."""
    import ray

    group = Group(tuple(Cell("rnn", f"rnn/buffers=list,wgrad={w},clip=none", SHAPE,
                             "float64", 1, 0, 1.0, 5.0) for w in ("step", "batched")))
    executor = RayExecutor(workers=1)
    try:
        assert ray.cluster_resources()["CPU"] == executor.workers + SPARE_CPUS
        nodes = executor.nodes(group.members)
        started = list(executor._actors)
        assert len(nodes) == 1 and len(started) == executor.workers
        blocks = executor.run_blocks(block_tasks([group], SETTINGS), SETTINGS, (),
                                     peaks_of(nodes))
        outcomes = []
        for outcome in blocks:
            assert executor._actors == started  # no new actor for the second pass
            outcomes += [outcome] if outcome is not None else []
        assert executor._actors == []  # ended with the sweep
        worker_env = ray.get(ray.remote(num_cpus=1)(lambda: dict(os.environ)).remote())
        assert MALLOC_ENV.items() <= worker_env.items()  # inherited, not a runtime env
        rows = [r for o in outcomes for r in o.rows]
        assert [r.status for r in rows] == ["ok"] * 4
        assert {r.node for r in rows} == {nodes[0].node}  # the Ray node id, from the actor
        pids = [{r.pids[0] for r in o.rows} for o in outcomes]
        assert len(pids[0]) == len(pids[1]) == 1 and not pids[0] & pids[1]
    finally:
        session = Path(ray._private.worker._global_node.get_session_dir_path())
        executor.close()
    assert not ray.is_initialized()
    deadline = time.monotonic() + GONE_WITHIN_S  # Ray's workers exit after its raylet
    while any(left := sessions.session_processes([session]).values()):
        assert time.monotonic() < deadline, f"left running: {list(left)}"
        time.sleep(0.1)


def test_embedded_env_fixes_malloc_and_puts_plugins_and_the_drivers_path_first(tmp_path,
                                                                            monkeypatch):
    (tmp_path / "gs_envplugin.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    got = embedded_env(("gs_envplugin",))
    assert MALLOC_ENV.items() <= got.items() and got["RAY_USAGE_STATS_ENABLED"] == "0"
    path = got["PYTHONPATH"].split(os.pathsep)
    assert path[0] == str(tmp_path) and len(path) == len(set(path))
    assert set(sys.path[1:]) <= set(path)
