"""gradsweep: benchmark and profile numpy backward passes across shapes and dtypes.

The public API (imported on first use, so ``import gradsweep`` stays light;
docs/api.md describes each function)::

    load_spec(path) -> SweepSpec             expand(spec) -> Expansion (the cells)
    run(spec, results, local=..., ...)       -> SweepOutcome
    open_results(results) -> Dataset         read_cells(results, sweep) -> pandas.DataFrame
    read_table(results, sweep, table=...)    -> pyarrow.Table
    connect(results) -> a DuckDB connection  with views sweeps, cells, nodes, profiles
    load_report(results, sweep) -> Report    the rankings, as ``gradsweep report`` shows
    the records: Cell, CellResult, SweepSpec, SweepOutcome, ...; BadInput for bad input

Kernels and plugins build on ``gradsweep.impls.base`` (docs/kernels.md).
"""

from importlib import import_module

__version__ = "0.1.0"

_API = {
    "load_spec": "gradsweep.spec", "expand": "gradsweep.spec",
    "run": "gradsweep.api", "open_results": "gradsweep.api", "read_cells": "gradsweep.api",
    "read_table": "gradsweep.api", "connect": "gradsweep.api", "load_report": "gradsweep.api",
    "Cell": "gradsweep.records", "CellResult": "gradsweep.records",
    "MeasureSettings": "gradsweep.records", "SweepSpec": "gradsweep.records",
    "SweepOutcome": "gradsweep.records", "BadInput": "gradsweep.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    """Import the API's names on first use (PEP 562)."""
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'gradsweep' has no attribute {name!r}")
