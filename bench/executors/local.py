"""The in-process executor (``--local``): every cell in this process, in order."""

from __future__ import annotations

from collections.abc import Iterator

from gradsweep.executors.node import probe_node, run_on_node
from gradsweep.records import Cell, CellResult, MeasureSettings, NodeProbe


class LocalExecutor:
    """Runs every cell in this process, one after another (``--local``).

    ``timeout_s`` is enforced by an alarm between Python bytecodes: a cell
    stuck inside one C call (a huge GEMM) is only stopped when the call returns.
    """

    workers = 1

    def nodes(self) -> list[NodeProbe]:
        """One record: this process's machine."""
        return [probe_node()]

    def run(self, cells: list[Cell], settings: MeasureSettings, plugins: tuple[str, ...],
            peaks: dict[str, dict[str, float]]) -> Iterator[CellResult]:
        """Yield each cell's result as it finishes."""
        for cell in cells:
            yield run_on_node(cell, settings, plugins, peaks)

    def profile(self, cells: list[Cell], settings: MeasureSettings,
                plugins: tuple[str, ...]) -> Iterator:
        """Yield ``(cell, SweepProfile)`` for each cell, one after another."""
        from gradsweep.profile import profile_for_sweep

        for cell in cells:
            yield cell, profile_for_sweep(cell, settings, plugins)

    def close(self) -> None:
        """Nothing to release."""

