"""The Ray executor's passes (tests mirror bench/executors/onray.py)."""

import pytest

from gradsweep.executors.onray import SPARE_CPUS, RayExecutor
from gradsweep.records import Cell, Group, MeasureSettings, peaks_of
from gradsweep.worker import block_tasks

SHAPE = (("N", 2), ("T", 3), ("D", 4), ("H", 5))
SETTINGS = MeasureSettings(samples=6, repeats=2, min_time_s=0.0005, max_warmups=1, memory=False)


@pytest.mark.ray
def test_an_embedded_executor_starts_the_first_passs_actors_during_the_probe():
    """The embedded Ray has a CPU beyond its workers: the first pass's actors start while
    the probe runs, and the first pass uses them; each pass still has its own processes."""
    import ray

    group = Group(tuple(Cell("rnn", f"rnn/buffers=list,wgrad={w},clip=none", SHAPE,
                             "float64", 1, 0, 1.0, 5.0) for w in ("step", "batched")))
    executor = RayExecutor(workers=1)
    try:
        assert ray.cluster_resources()["CPU"] == executor.workers + SPARE_CPUS
        nodes = executor.nodes()
        assert len(nodes) == 1 and len(executor._spare) == executor.workers
        outcomes = [o for o in executor.run_blocks(block_tasks([group], SETTINGS), SETTINGS,
                                                   (), peaks_of(nodes)) if o is not None]
        assert executor._spare == []  # the first pass took them, the second its own
        rows = [r for o in outcomes for r in o.rows]
        assert [r.status for r in rows] == ["ok"] * 4
        pids = [{r.pids[0] for r in o.rows} for o in outcomes]
        assert len(pids[0]) == len(pids[1]) == 1 and not pids[0] & pids[1]
    finally:
        executor.close()
