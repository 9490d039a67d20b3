"""The Python API: load a spec, run a sweep, open a dataset, rank a sweep.

Everything the command line does is built from these and the stages they
call; a script or a notebook can do the same::

    import gradsweep
    spec = gradsweep.load_spec("jobs/quick.toml")
    outcome = gradsweep.run(spec, results="results", local=True)
    cells = gradsweep.read_cells("results", outcome.sweep_id)      # pandas
    report = gradsweep.load_report("results", outcome.sweep_id)    # rankings
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from gradsweep.errors import BadInput
from gradsweep.executors.auth import in_ray_job
from gradsweep.records import CellResult, SweepOutcome, SweepSpec

if TYPE_CHECKING:
    import pandas as pd

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


def open_results(results: str | os.PathLike | None = None) -> Dataset:
    """The dataset at ``results`` (a path or URI; default $GRADSWEEP_RESULTS, then results/)."""
    from gradsweep import store

    return store.resolve(results)


def run(spec: SweepSpec, results: str | os.PathLike | None = None, *, local: bool = False,
        address: str | None = None, workers: int | None = None, resume: str | None = None,
        on_result: Callable[[CellResult], None] = lambda result: None) -> SweepOutcome:
    """Run (or resume) a sweep of ``spec`` into ``results``; the outcome (its sweep_id,
    status and counts). In this process with ``local``, else on Ray (embedded, or the
    cluster at ``address``)."""
    from gradsweep import runner

    dataset = open_results(results)
    executor = make_executor(address, local, workers, spec.plugins)
    try:
        return runner.run_sweep(spec, dataset, executor, resume=resume, on_result=on_result)
    finally:
        executor.close()


def read_cells(results: str | os.PathLike | None = None, sweep: str = "latest",
               columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``cells`` rows of ``sweep`` (an id or ``latest``) as pandas, deduplicated."""
    from gradsweep import store

    dataset = open_results(results)
    return store.read(dataset, "cells", [store.resolve_sweep(dataset, sweep)], columns=columns)


def load_report(results: str | os.PathLike | None = None, sweep: str = "latest", *,
                kernel: str | None = None, shape: str | None = None,
                dtype: str | None = None) -> Report:
    """The rankings of ``sweep``: per kernel, dtype and shape, and overall (optionally only
    one kernel, shape and/or dtype)."""
    from gradsweep import report

    return report.load_report(open_results(results), sweep, kernel=kernel, shape=shape,
                              dtype=dtype)


__all__ = ["BadInput", "check_ray_address", "load_report", "make_executor", "open_results",
           "read_cells", "run"]
