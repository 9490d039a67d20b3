"""Synthetic, realistic results for tests, screenshots and benchmarks (no measuring).

``python -m dashboards.synthetic DIR [--cells N] [--sweeps K]`` writes K sweeps
of about N cells each into the dataset DIR: every built-in kernel and variant,
float32 and float64, growing shapes, lognormal timing noise, a few failed cells
(one with markup in its error), warnings, node peaks and line profiles.
Speeds are a fixed function of the variant, so rankings are repeatable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np

from gradsweep import store
from gradsweep.impls.base import PEER_AXIS, parse_variant
from gradsweep.impls.registry import load

#: Timed samples per synthetic cell.
SAMPLES = 15
#: Relative spread (lognormal sigma) of the synthetic samples.
NOISE = 0.02
#: GEMM peak of the synthetic node, GFLOP/s per dtype.
PEAKS = {"float32": 60.0, "float64": 30.0}
#: Baseline speed of the synthetic variants, GFLOP/s per dtype.
BASE_GFLOPS = {"float32": 6.0, "float64": 3.0}
#: Every this many cells one fails, cycling through these statuses.
FAIL_EVERY = 97
FAIL_STATUSES = ("error", "incorrect", "timeout", "crashed", "skipped")
HOSTILE = "<script>alert('x')</script> & <b>bold</b>"
SPEC_TEXT = 'name = "synthetic"\nplugins = []\n'


def _unit(text: str) -> float:
    """A stable number in [0, 1) from ``text``."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 16**8


def speed_factor(variant: str) -> float:
    """How much faster than the baseline a variant runs (stable; clip barely matters)."""
    _, axes = parse_variant(variant)
    if PEER_AXIS in axes:
        return 1.8
    core = ",".join(f"{k}={v}" for k, v in axes.items() if k != "clip")
    factor = 1.0 + 1.5 * _unit(core)
    return factor * (0.97 if axes.get("clip") == "norm" else 1.0)


def memory_factor(variant: str) -> float:
    """Peak memory relative to the problem's inputs (stable)."""
    return 1.0 + 3.0 * _unit("mem" + variant)


def shapes_of(kernel, count: int) -> list[dict[str, int]]:
    """``count`` valid shapes of ``kernel``, growing from its defaults."""
    base = {d.name: d.default for d in kernel.dims}
    grow = [d.name for d in kernel.dims if d.name in ("N", "T", "H", "Hin", "Win", "Cout")]
    out: list[dict[str, int]] = []
    step = 0
    while len(out) < count:
        shape = dict(base)
        for i, name in enumerate(grow):
            shape[name] = base[name] + 4 * ((step >> i) % 8) * (1 + step // 64)
        step += 1
        if kernel.check(shape) is None and shape not in out:
            out.append(shape)
    return out


def _cell_id(kernel: str, variant: str, shape_text: str, dtype: str) -> str:
    key = json.dumps([kernel, variant, shape_text, dtype, 1, 0])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _timing(rng: np.random.Generator, median: float) -> dict:
    samples = median * rng.lognormal(0.0, NOISE, SAMPLES)
    med = float(np.median(samples))
    return {"samples_ns": samples.tolist(), "median_ns": med,
            "mad_ns": float(np.median(np.abs(samples - med))),
            "ci_low_ns": float(np.quantile(samples, 0.3)),
            "ci_high_ns": float(np.quantile(samples, 0.7)), "first_ns": med * 1.1,
            "loops": 3, "warmups": 2}


def _failure(index: int) -> dict:
    status = FAIL_STATUSES[(index // FAIL_EVERY) % len(FAIL_STATUSES)]
    error = {"error": f"RuntimeError: {HOSTILE}", "incorrect": "max_rel_err 3.2e-02 > 1e-09",
             "timeout": "cell exceeded timeout_s = 300", "crashed": "worker died (SIGKILL)",
             "skipped": "estimated 5120 MiB > memory_budget_mb 4096"}[status]
    return {"status": status, "error": error}


def cell_row(kernel, variant: str, shape: dict[str, int], dtype: str, index: int,
             rng: np.random.Generator, slowdown: float = 1.0) -> dict:
    """One synthetic ``cells`` row."""
    shape_text = ",".join(f"{k}={v}" for k, v in shape.items())
    flops = int(kernel.flops(shape))
    _, axes = parse_variant(variant)
    row = {"cell_id": _cell_id(kernel.name, variant, shape_text, dtype), "kernel": kernel.name,
           "variant": variant, "axes": list(axes.items()), "shape": shape_text,
           "dims": list(shape.items()), **axes, **shape, "dtype": dtype, "threads": 1,
           "seed": 0, "node": "node-1", "host": "synthetic", "flops": flops,
           "started_at": datetime(2026, 1, 1, tzinfo=UTC), "duration_s": 1.0}
    if index % FAIL_EVERY == FAIL_EVERY - 1:
        return {**row, **_failure(index)}
    gflops = BASE_GFLOPS[dtype] * speed_factor(variant) / slowdown
    timing = _timing(rng, flops / gflops)
    warnings = ["high-dispersion: MAD/median 0.12 > 0.05"] if index % 41 == 0 else []
    peak = int(kernel.memory_estimate(shape, dtype) * memory_factor(variant))
    achieved = flops / timing["median_ns"]
    return {**row, **timing, "status": "ok", "max_rel_err": 1e-12, "warnings": warnings,
            "peak_bytes": peak, "retained_bytes": peak // 4, "alloc_count": 100,
            "gflops": achieved, "peak_fraction": achieved / PEAKS[dtype]}


def cells(n_cells: int, seed: int = 0, slowdown: float = 1.0) -> list[dict]:
    """About ``n_cells`` rows over every kernel, variant and both dtypes."""
    registry = load()
    per_shape = sum(len(k.variants) for k in registry.kernels.values()) * 2
    count = max(1, -(-n_cells // per_shape))
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    for kernel in registry.kernels.values():
        for shape in shapes_of(kernel, count):
            for dtype in ("float32", "float64"):
                for variant in kernel.variants:
                    rows.append(cell_row(kernel, variant, shape, dtype, len(rows), rng,
                                         slowdown))
    return rows[:max(n_cells, 1)] if n_cells < len(rows) else rows


def profile_rows(rows: list[dict], top: int = 3) -> Iterator[dict]:
    """Line-profile rows for the first ok cell of each variant of the first kernel."""
    first = rows[0]["kernel"]
    seen: set[str] = set()
    for r in rows:
        if r["kernel"] != first or r["status"] != "ok" or r["variant"] in seen:
            continue
        seen.add(r["variant"])
        for line in range(top):
            yield {"cell_id": r["cell_id"], "variant": r["variant"],
                   "file": f"impls/{first}.py", "line": 40 + 7 * line, "function": "backward",
                   "code": f"dh = dY[:, t] @ Wh.T  # {HOSTILE}" if line == 0 else "x = y",
                   "cpu_percent_python": 10.0 / (line + 1), "cpu_percent_native": 30.0 / (line + 1),
                   "cpu_percent_system": 1.0, "peak_mb": 8.0, "alloc_mb": 4.0}


def write_sweep(dataset: store.Dataset, sweep_id: str, n_cells: int, *, seed: int = 0,
                slowdown: float = 1.0, at: datetime | None = None,
                profiles: bool = True) -> list[dict]:
    """Write one synthetic sweep (events, node, cells, profiles); returns its cell rows."""
    at = at or datetime(2026, 1, 1, tzinfo=UTC)
    for event, status, t in (("started", "running", at), ("finished", "finished",
                                                            at + timedelta(minutes=5))):
        store.write(dataset, "sweeps", sweep_id, [{
            "name": "synthetic", "event": event, "status": status, "at": t, "role": "plain",
            "spec": SPEC_TEXT, "spec_hash": "0" * 64, "host": "synthetic"}])
    store.write(dataset, "nodes", sweep_id, [{
        "node": "node-1", "host": "synthetic", "cpu": "Synthetic CPU", "cores": 8,
        "blas": "openblas", "gemm_gflops_float32": PEAKS["float32"],
        "gemm_gflops_float64": PEAKS["float64"]}])
    rows = cells(n_cells, seed=seed, slowdown=slowdown)
    store.write(dataset, "cells", sweep_id, rows)
    if profiles:
        store.write(dataset, "profiles", sweep_id, list(profile_rows(rows)))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command line: write synthetic sweeps into a dataset and print their ids."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--sweeps", type=int, default=1)
    args = parser.parse_args(argv)
    dataset = store.resolve(args.results)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(args.sweeps):
        sweep_id = f"20260101T{i:02d}0000Z-syn{i}"
        write_sweep(dataset, sweep_id, args.cells, seed=i, slowdown=1.0 + 0.05 * i,
                    at=start + timedelta(days=i))
        print(sweep_id)


if __name__ == "__main__":
    main()
