"""How far a group's ratios drift with the machine over minutes, in one process (docs/noise.md).

A benchmark script, not a test (pytest does not collect it). From the repository root::

    python tests/benchmarks/ratio_drift.py                       # deconv2d of quick.toml, 10 min
    python tests/benchmarks/ratio_drift.py jobs/quick.toml --kernel lstm --dtype float32 \
        --minutes 5 --sweep-s 44.5 --json drift.json

One process measures one group of the spec (its first shape of ``--kernel`` and
``--dtype``) the way a block does, for ``--minutes``: every member verified,
calibrated to the spec's ``min_time_s`` and warmed up, then round after round in a
freshly shuffled order, each sample primed (``measure.timed_sample``), BLAS on one
thread, cyclic GC paused, the workers' malloc thresholds set (the script
re-executes itself for them). Each member's paired log-ratio to the group's fastest
member is summarised per window of ``--window-s`` seconds (the median over the
window's rounds).

Nothing here changes between windows but the time: same process, same buffers,
same loop counts. So how the window ratios move is the machine's own drift (other
tenants of the host, its memory system), and it sets a floor under what any sweep
can reproduce: the windows are cut into consecutive stretches as long as a sweep
(``--sweep-s``; take it from ``reproducibility.py``'s "s/sweep"), each stretch's
mean log-ratio is what a sweep measuring the member perfectly, and with infinitely
many samples, would report, and the spread (largest / smallest) of every
``--runs`` consecutive stretches is what back-to-back sweeps would then spread by.
A sweep's own estimate adds sampling error and its processes' effects on top.

Prints the machine, then per member: the window ratio's median, its standard
deviation between windows, its autocorrelation at lags of about 2, 10, 20 and 40
seconds, and the floor (median and largest spread of ``--runs`` consecutive
sweep-long stretches). ``--json`` saves the windows and the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from layout_noise import loadavg, with_malloc_env  # noqa: E402
from repro_metrics import autocorrelation, consecutive_spreads, stretch_means  # noqa: E402
from reproducibility import machine, machine_line  # noqa: E402

from gradsweep import measure, worker  # noqa: E402
from gradsweep.records import Cell, groups_of  # noqa: E402
from gradsweep.spec import expand, load_spec  # noqa: E402

#: Autocorrelation lags reported, in seconds (rounded to whole windows).
LAGS_S = (2.0, 10.0, 20.0, 40.0)
#: Warm-up calls of every member before the first window.
WARMUP_CALLS = 5
NS_PER_S = 1e9


@dataclass
class Member:
    """One member of the measured group, prepared in this process."""

    cell: Cell
    call: object
    loops: int = 1

    @property
    def name(self) -> str:
        return self.cell.variant.split("/", 1)[1]


def group_members(spec_path: Path, kernel: str, dtype: str) -> list[Member]:
    """The first group of ``kernel`` and ``dtype`` in the spec, verified and prepared.

    Raises
    ------
    SystemExit
        No such group, or a member whose gradients disagree with the reference.
    """
    groups = [g for g in groups_of(expand(load_spec(spec_path)).cells)
              if g.members[0].kernel == kernel and g.members[0].dtype == dtype]
    if not groups:
        raise SystemExit(f"{spec_path}: no group of kernel {kernel!r} and dtype {dtype!r}")
    members = []
    for cell in groups[0].members:
        prepared, err = worker.prepare(cell)
        if (problem := worker.correctness_error(err, cell.dtype)) is not None:
            raise SystemExit(f"{cell.variant}: {problem}")
        members.append(Member(cell, prepared.call))
    return members


def calibrate(members: list[Member], min_time_s: float, clock) -> None:
    """Loops per member as a block calibrates them, then a few warm-up calls each."""
    for m in members:
        m.loops = measure.calibrate_loops(m.call, min_time_s * NS_PER_S, clock)
        for _ in range(WARMUP_CALLS):
            m.call()


@contextmanager
def measuring(spec_path: Path, kernel: str, dtype: str) -> Iterator[list[Member]]:
    """The group's members verified, calibrated and warmed up, as a block has them:
    inside, BLAS keeps one thread and the cyclic GC is paused."""
    spec = load_spec(spec_path)
    with measure.set_threads(1), measure.gc_paused():
        members = group_members(spec_path, kernel, dtype)
        calibrate(members, spec.measure.min_time_s, measure.cpu_clock(1))
        yield members


def window(members: list[Member], seconds: float, cpu, rng: np.random.Generator) -> np.ndarray:
    """Shuffled rounds for ``seconds``: per round, every member's CPU ns per call.

    Returns
    -------
    ndarray, shape (rounds, members)
    """
    rows, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        row = np.empty(len(members))
        for i in rng.permutation(len(members)):
            row[i], _ = measure.timed_sample(members[i].call, members[i].loops, cpu,
                                             primed=True)
        rows.append(row)
    return np.array(rows)


def measure_windows(members: list[Member], minutes: float, window_s: float,
                    seed: int) -> tuple[list[np.ndarray], list[float]]:
    """Every window's rounds (see :func:`window`) and the load average after each."""
    cpu, rng = measure.cpu_clock(1), np.random.default_rng(seed)
    windows, loads, end = [], [], time.monotonic() + minutes * 60
    while time.monotonic() < end:
        windows.append(window(members, window_s, cpu, rng))
        loads.append(loadavg())
    return windows, loads


def window_log_ratios(windows: list[np.ndarray], ref: int) -> np.ndarray:
    """Per window and member, the median paired log-ratio to member ``ref``.

    Returns
    -------
    ndarray, shape (windows, members)
    """
    return np.array([np.median(np.log(w / w[:, [ref]]), axis=0) for w in windows])


def summary(members: list[Member], logr: np.ndarray, ref: int, window_s: float,
            sweep_s: float, runs: int) -> list[dict]:
    """Per member (but the reference): drift statistics of its window log-ratios."""
    per = max(1, round(sweep_s / window_s))
    rows = []
    for i, m in enumerate(members):
        if i == ref:
            continue
        x = logr[:, i]
        floors = consecutive_spreads(stretch_means(x, per), runs)
        lags = {f"{lag:g}s": autocorrelation(x, max(1, round(lag / window_s)))
                for lag in LAGS_S}
        rows.append({"member": m.name, "ratio": float(np.exp(np.median(x))),
                     "window_sd": float(np.std(x, ddof=1)), "autocorrelation": lags,
                     "stretches": len(stretch_means(x, per)),
                     "floor_median": float(np.median(floors)) if floors else None,
                     "floor_max": float(np.max(floors)) if floors else None})
    return rows


def fmt(value: float | None, spec: str, unit: str = "x") -> str:
    """``value`` formatted, with ``unit``; "-" when there is none (too few stretches)."""
    return "-" if value is None or np.isnan(value) else format(value, spec) + unit


def print_report(rows: list[dict], ref_name: str, args: argparse.Namespace,
                 n_windows: int, loads: list[float]) -> None:
    print(f"reference (the group's fastest): {ref_name}; {n_windows} windows of "
          f"{args.window_s:g} s; stretches of {args.sweep_s:g} s; spreads of {args.runs} "
          f"consecutive stretches; load average {min(loads):.2f}-{max(loads):.2f}")
    lags = " ".join(f"{'ac ' + format(lag, 'g') + 's':>8s}" for lag in LAGS_S)
    print(f"{'member':40s} {'ratio':>6s} {'sd':>6s} {lags} {'floor med':>9s} {'max':>6s}")
    for r in rows:
        ac = " ".join(f"{fmt(v, '.2f', ''):>8s}" for v in r["autocorrelation"].values())
        print(f"{r['member'][:40]:40s} {r['ratio']:6.2f} {r['window_sd']:6.3f} {ac} "
              f"{fmt(r['floor_median'], '.3f'):>9s} {fmt(r['floor_max'], '.3f'):>6s}")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("spec", nargs="?", type=Path, default=ROOT / "jobs" / "quick.toml")
    parser.add_argument("--kernel", default="deconv2d")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--window-s", type=float, default=2.0)
    parser.add_argument("--sweep-s", type=float, default=45.0,
                        help="a sweep's duration (reproducibility.py's s/sweep)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    return parser.parse_args()


def main() -> None:
    args = parse()
    with_malloc_env()
    print(machine_line(sep=" | "))
    with measuring(args.spec, args.kernel, args.dtype) as members:
        windows, loads = measure_windows(members, args.minutes, args.window_s, args.seed)
    times = np.median(np.concatenate(windows), axis=0)
    ref = int(np.argmin(times))
    logr = window_log_ratios(windows, ref)
    rows = summary(members, logr, ref, args.window_s, args.sweep_s, args.runs)
    print_report(rows, members[ref].name, args, len(windows), loads)
    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine(), "spec": str(args.spec), "kernel": args.kernel,
            "dtype": args.dtype, "reference": members[ref].name, "pid": os.getpid(),
            "window_s": args.window_s, "sweep_s": args.sweep_s, "runs": args.runs,
            "members": [m.name for m in members], "window_log_ratios": logr.tolist(),
            "loads": loads, "summary": rows}, indent=1))


if __name__ == "__main__":
    main()
