"""The in-process executor (``--local``): every block in this process, in order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from gradsweep.executors.node import probe_node, run_block_on_node
from gradsweep.records import BlockOutcome, BlockTask, Cell, MeasureSettings, NodeProbe
from gradsweep.worker import LoopCounts


class LocalExecutor:
    """Runs every block in this process, one after another (``--local``).

    All blocks share one process, so the between-process variance is not
    sampled (each member says so: ``shared-process``); Ray runs each pass of
    blocks in fresh processes. ``timeout_s`` is an alarm between Python
    bytecodes: a member stuck inside one C call (a huge GEMM) is only stopped
    when the call returns.
    """

    workers = 1
    processes = False

    def nodes(self, cells: Sequence[Cell] = ()) -> list[NodeProbe]:
        """One record: this process's machine (``cells``: what the sweep will run)."""
        return [probe_node()]

    def run_blocks(self, tasks: list[BlockTask], settings: MeasureSettings,
                   plugins: tuple[str, ...],
                   peaks: dict[str, dict[str, float]]) -> Iterator[BlockOutcome]:
        """Yield each block's rows as it finishes; a group's later blocks take the loop
        counts its first calibrated (:class:`gradsweep.worker.LoopCounts`)."""
        counts = LoopCounts(settings.repeats)
        for task in tasks:
            outcome = run_block_on_node(counts.given(task), settings, plugins, peaks,
                                        in_worker=False)
            counts.learn(task, outcome.rows)
            yield outcome

    def profile(self, cells: list[Cell], settings: MeasureSettings,
                plugins: tuple[str, ...]) -> Iterator:
        """Yield ``(cell, SweepProfile)`` for each cell, one after another."""
        from gradsweep.profile import profile_for_sweep

        for cell in cells:
            yield cell, profile_for_sweep(cell, settings, plugins)

    def close(self) -> None:
        """Nothing to release."""
