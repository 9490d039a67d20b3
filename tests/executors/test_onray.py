"""The Ray executor's passes (tests mirror bench/executors/onray.py)."""

import pytest

from gradsweep.executors.onray import SPARE_CPUS, RayExecutor
from gradsweep.records import Cell, Group, MeasureSettings, peaks_of
from gradsweep.worker import block_tasks

SHAPE = (("N", 2), ("T", 3), ("D", 4), ("H", 5))
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
        rows = [r for o in outcomes for r in o.rows]
        assert [r.status for r in rows] == ["ok"] * 4
        assert {r.node for r in rows} == {nodes[0].node}  # the Ray node id, from the actor
        pids = [{r.pids[0] for r in o.rows} for o in outcomes]
        assert len(pids[0]) == len(pids[1]) == 1 and not pids[0] & pids[1]
    finally:
        executor.close()
