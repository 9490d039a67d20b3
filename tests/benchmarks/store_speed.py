"""Benchmark the results dataset: write, then list and show, at scale.

``python -m bench.bench_store [--rows 1000000] [--sweeps 100] [--dir DIR]`` writes
synthetic cells (15 samples each, realistic columns, several kernels) in the
runner's batch size, then times ``results list`` and a one-kernel, one-shape
``results show`` before and after ``results compact``. Not a test.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gradsweep import query, store
from gradsweep.runner import BATCH_ROWS

SAMPLES = 15
#: Kernels, their variants and the dims of their shapes.
KERNELS = {
    "lstm": (["buffers=list,wgrad=step,clip=none", "buffers=prealloc,wgrad=batched,clip=none",
              "buffers=prealloc,wgrad=step,clip=norm"], ("N", "T", "D", "H")),
    "gru": (["buffers=list,wgrad=step,clip=none", "buffers=prealloc,wgrad=batched,clip=none"],
            ("N", "T", "D", "H")),
    "rnn": (["buffers=list,wgrad=step,clip=none", "buffers=prealloc,wgrad=batched,clip=value"],
            ("N", "T", "D", "H")),
    "deconv2d": (["method=im2col", "method=gather", "method=taps"],
                 ("N", "Hin", "Win", "Cin", "Cout")),
}
SIZES = (8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class Timing:
    """One measured step."""

    what: str
    seconds: float
    detail: str = ""


@functools.cache
def shapes(dims: tuple[str, ...]) -> list[dict[str, int]]:
    """Every shape of ``dims`` over :data:`SIZES`."""
    return [dict(zip(dims, combo)) for combo in itertools.product(SIZES, repeat=len(dims))]


def cell_rows(sweep: int, start: int, count: int, rng: np.random.Generator) -> list[dict]:
    """``count`` synthetic cell records, the ``start``-th onwards of sweep ``sweep``."""
    names = list(KERNELS)
    rows = []
    for i in range(start, start + count):
        kernel = names[i % len(names)]
        variants, dims = KERNELS[kernel]
        variant = variants[(i // len(names)) % len(variants)]
        all_shapes = shapes(dims)
        shape = all_shapes[(i // (len(names) * len(variants))) % len(all_shapes)]
        dtype = ("float64", "float32")[i % 2]
        median = float(rng.lognormal(14, 1))
        samples = (median * rng.lognormal(0, 0.1, SAMPLES)).tolist()
        axes = dict(a.split("=") for a in variant.split(","))
        rows.append({
            "cell_id": f"{sweep:04d}{i:012d}", "kernel": kernel, "variant": f"{kernel}/{variant}",
            "axes": list(axes.items()), "shape": ",".join(f"{k}={v}" for k, v in shape.items()),
            "dims": list(shape.items()), **axes, **shape, "dtype": dtype, "threads": 1,
            "seed": 0, "status": "ok" if i % 50 else "error", "max_rel_err": 1e-12,
            "samples_ns": samples, "loops": 3, "warmups": 2, "median_ns": median,
            "mad_ns": median * 0.05, "ci_low_ns": median * 0.97, "ci_high_ns": median * 1.03,
            "warnings": [], "peak_bytes": 2**20 + i, "retained_bytes": 2**18, "alloc_count": 40,
            "flops": 10**8, "gflops": 10**8 / median, "peak_fraction": 0.3, "node": "node-1",
            "host": "bench-host", "cpu": "AMD EPYC", "cores": 2, "blas": "openblas 0.3.31",
            "numpy_version": "2.4.6", "python_version": "3.11.9", "load_avg": 0.5,
            "git_commit": "0123456789ab", "git_dirty": False, "duration_s": 1.5})
    return rows


def write_all(dataset: store.Dataset, rows: int, sweeps: int, batch: int) -> Timing:
    """Write ``rows`` cells over ``sweeps`` sweeps in batches, with sweep events."""
    rng = np.random.default_rng(0)
    per_sweep = rows // sweeps
    begin = time.perf_counter()
    for s in range(sweeps):
        sweep_id = f"20260101T{s // 60:02d}{s % 60:02d}00Z-{s:04x}"
        at = pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(minutes=s)
        store.write(dataset, "sweeps", sweep_id, [{"name": f"bench-{s}", "event": "started",
                                                   "status": "running", "at": at}])
        for start in range(0, per_sweep, batch):
            store.write(dataset, "cells", sweep_id,
                        cell_rows(s, start, min(batch, per_sweep - start), rng))
        store.write(dataset, "sweeps", sweep_id, [{"name": f"bench-{s}", "event": "finished",
                                                   "status": "finished",
                                                   "at": at + pd.Timedelta(seconds=30)}])
    return Timing("write", time.perf_counter() - begin, f"{sweeps * per_sweep} rows")


def timed(what: str, fn: Callable[[], object]) -> Timing:
    """Best of three runs of ``fn``."""
    best, result = float("inf"), None
    for _ in range(3):
        begin = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - begin)
    return Timing(what, best, f"{len(result.frame)} rows")


def reads(dataset: store.Dataset, label: str) -> list[Timing]:
    """Time ``results list`` and a one-kernel, one-shape ``results show``."""
    ids = store.partitions(dataset, "cells")
    sweep_id = ids[len(ids) // 2]
    some = store.read(dataset, "cells", [sweep_id], columns=["kernel", "shape"]).iloc[-1]
    filt = query.CellFilter(kernel=some["kernel"], shape=some["shape"])
    return [timed(f"list ({label})", lambda: query.list_sweeps(dataset)),
            timed(f"show one kernel+shape ({label})",
                  lambda: query.select_cells(dataset, sweep_id, filt))]


def disk_bytes(root: str) -> int:
    """Bytes of every data file under ``root``."""
    return sum(p.stat().st_size for p in Path(root).rglob("*.parquet"))


def run(root: str, rows: int, sweeps: int, batch: int) -> list[Timing]:
    """The whole benchmark; each step's timing."""
    dataset = store.resolve(root)
    timings = [write_all(dataset, rows, sweeps, batch)]
    size = disk_bytes(root)
    files = len(store.files(dataset, "cells"))
    timings.append(Timing("bytes on disk per row", size / rows, f"{size / 2**20:.0f} MiB, "
                          f"{files} cell files"))
    timings += reads(dataset, f"{files} files")
    begin = time.perf_counter()
    store.compact(dataset)
    timings.append(Timing("compact", time.perf_counter() - begin))
    timings += reads(dataset, f"{len(store.files(dataset, 'cells'))} files")
    return timings


def main(argv: list[str] | None = None) -> None:
    """Command line: print one line per timing."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_store", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sweeps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=BATCH_ROWS)
    parser.add_argument("--dir", default=None, help="dataset directory (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for t in run(args.dir or tmp, args.rows, args.sweeps, args.batch):
            print(f"{t.what:<45} {t.seconds:10.3f}  {t.detail}")


if __name__ == "__main__":
    main()
