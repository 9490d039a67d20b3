"""The Python API: load a spec, run a sweep, open a dataset, rank a sweep.

The command line is built from these and the stages they call; a script or a
notebook can do the same (docs/api.md has every function and a worked example)::

    import gradsweep
    spec = gradsweep.load_spec("jobs/quick.toml")
    outcome = gradsweep.run(spec, results="results", local=True)
    cells = gradsweep.read_cells("results", outcome.sweep_id)      # pandas
    table = gradsweep.read_table("results", outcome.sweep_id)      # pyarrow
    con = gradsweep.connect("results")                             # DuckDB
    report = gradsweep.load_report("results", outcome.sweep_id)    # rankings

Bad input (a spec, a missing dataset, an unknown sweep, table or column) raises
:class:`gradsweep.BadInput` with one line naming what is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from gradsweep.errors import BadInput
from gradsweep.executors.auth import in_ray_job
from gradsweep.records import BlockProgress, CellResult, SweepOutcome, SweepSpec

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa

    from gradsweep.report import Report
    from gradsweep.store import Dataset


def check_ray_address(address: str | None) -> None:
    """``run`` joins a cluster by its GCS address; a dashboard URL is for ``submit``."""
    import os

    given = address or ("" if in_ray_job() else os.environ.get("RAY_ADDRESS", ""))
    if given.startswith(("http://", "https://")):
        raise BadInput(f"{given} is a dashboard URL: run --address takes the cluster's GCS "
                       "address (HOST:6379, as ray.init does); submit takes the URL",
                       key="--address" if address else "RAY_ADDRESS")


def make_executor(address: str | None, local: bool, workers: int | None,
                  plugins: tuple[str, ...]):
    """The in-process executor with ``local``, else Ray (embedded or ``address``)."""
    if local:
        from gradsweep.executors.local import LocalExecutor

        return LocalExecutor()
    check_ray_address(address)
    from gradsweep.executors.onray import RayExecutor

    return RayExecutor(address=address, workers=workers, plugins=plugins)


def open_results(results: str | os.PathLike | None = None, *, create: bool = False) -> Dataset:
    """The results dataset at ``results`` (default $GRADSWEEP_RESULTS, then ``results/``).

    A plain path is a local directory, a URI (``s3://``, ``file://``...) goes through
    pyarrow's filesystems. A local dataset must exist unless ``create`` (then it may
    be missing, and must be creatable); either way a directory holding other things
    than the dataset's tables is refused. Raises BadInput.
    """
    from gradsweep import checks, store

    return store.resolve(checks.check_results_dir(results, must_exist=not create,
                                                  key="results"))


def run(spec: SweepSpec | str | os.PathLike, results: str | os.PathLike | None = None, *,
        local: bool = False, address: str | None = None, workers: int | None = None,
        resume: str | None = None,
        on_result: Callable[[CellResult], None] = lambda result: None,
        on_block: Callable[[BlockProgress], None] = lambda progress: None) -> SweepOutcome:
    """Run (or resume) a sweep of ``spec`` (a SweepSpec or a spec file's path) into
    ``results``; the outcome (its sweep_id, status and counts by status).

    In this process with ``local``, else on Ray (embedded, or the cluster at
    ``address``, with ``workers`` processes). ``resume`` is a sweep id or ``latest``.
    ``on_result`` is called with every cell's result once it is stored, ``on_block``
    with the sweep's :class:`~gradsweep.records.BlockProgress` as each block finishes
    (its ``eta_s``: the seconds left at the pace so far). Raises
    BadInput for a bad spec, results location or address.
    """
    from gradsweep import runner
    from gradsweep.spec import load_spec

    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    dataset = open_results(results, create=True)
    executor = make_executor(address, local, workers, spec.plugins)
    try:
        return runner.run_sweep(spec, dataset, executor, resume=resume, on_result=on_result,
                                on_block=on_block)
    finally:
        executor.close()


def _sweep_ids(dataset: Dataset, sweep: str | None) -> list[str] | None:
    """``[sweep id]`` of ``sweep`` (an id or ``latest``), or None (every sweep) for None."""
    from gradsweep import store

    return None if sweep is None else [store.resolve_sweep(dataset, sweep)]


def read_table(results: str | os.PathLike | None = None, sweep: str | None = "latest", *,
               table: str = "cells", columns: Sequence[str] | None = None) -> pa.Table:
    """Rows of ``table`` (``cells``, ``sweeps``, ``nodes`` or ``profiles``) as a pyarrow
    Table: migrated to the current schema, the newest row per key, ``sweep_id`` a column.

    ``sweep`` is a sweep id, ``latest`` or None (every sweep); ``columns`` limits the
    columns (``sweep_id`` and the columns that identify and order rows are added).
    Raises BadInput.
    """
    from gradsweep import store

    if table not in store.SCHEMAS:
        raise BadInput(f"unknown table {table!r} (tables: {', '.join(store.SCHEMAS)})",
                       key="table")
    dataset = open_results(results)
    return store.read_table(dataset, table, _sweep_ids(dataset, sweep), columns).table


def read_cells(results: str | os.PathLike | None = None, sweep: str | None = "latest",
               columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``cells`` of ``sweep`` (an id, ``latest``, or None: every sweep) as pandas.

    One row per cell and sweep (the newest), the columns of docs/tables.md plus
    ``sweep_id``; dims are nullable ``Int64``. Raises BadInput.
    """
    from gradsweep import store

    dataset = open_results(results)
    return store.read(dataset, "cells", _sweep_ids(dataset, sweep), columns=columns)


def connect(results: str | os.PathLike | None = None,
            sweep: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the four tables as views named ``sweeps``,
    ``cells``, ``nodes`` and ``profiles``: the rows :func:`read_table` returns (of
    ``sweep`` only, when given; by default every sweep), read into memory once.
    Close it when done. Raises BadInput.
    """
    import duckdb

    from gradsweep import store

    dataset = open_results(results)
    ids = _sweep_ids(dataset, sweep)
    con = duckdb.connect()
    for table in store.SCHEMAS:
        con.register(table, store.read_table(dataset, table, ids).table)
    return con


def load_report(results: str | os.PathLike | None = None, sweep: str = "latest", *,
                kernel: str | None = None, shape: str | None = None,
                dtype: str | None = None) -> Report:
    """The rankings of ``sweep`` (an id or ``latest``), as ``gradsweep report`` shows them:
    per kernel, dtype and shape (``report.groups()``), overall, and the failed cells;
    optionally of one kernel, shape and/or dtype only. Raises BadInput."""
    from gradsweep import report

    return report.load_report(open_results(results), sweep, kernel=kernel, shape=shape,
                              dtype=dtype)


__all__ = ["BadInput", "check_ray_address", "connect", "load_report", "make_executor",
           "open_results", "read_cells", "read_table", "run"]
