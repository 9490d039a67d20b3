"""How much work on the other core moves a group's ratios, in one process (docs/noise.md).

A benchmark script, not a test (pytest does not collect it). From the repository root::

    python tests/benchmarks/neighbour_load.py                  # deconv2d of quick.toml
    python tests/benchmarks/neighbour_load.py jobs/quick.toml --kernel lstm --cycles 6

One process, pinned to one CPU, measures one group of the spec the way a block does
(``ratio_drift.py``'s members, calibration and shuffled rounds of primed samples, one
BLAS thread, GC paused, the workers' malloc thresholds). Each cycle has a quiet phase
and then one phase per neighbour, a process pinned to another CPU that runs:

- ``stream``: copies a 32 MB array into another, without a pause (memory traffic at
  the rate of one core, the worst a neighbour can do to the shared L3);
- ``store``: what a sweep's driver does between blocks (rows of results into Parquet
  with pyarrow, read back and summarised with pandas), without a pause; the real
  driver does it for a few percent of a sweep's time (docs/noise.md).

Per member and neighbour it prints the ratio to the group's fastest member in the quiet
phases and beside the neighbour (medians over the phases' 2 s windows), and the change
per cycle (median, smallest and largest): paired by cycle, so the machine's own drift
over minutes falls out. Needs two CPUs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from layout_noise import with_malloc_env  # noqa: E402
from ratio_drift import measuring, window, window_log_ratios  # noqa: E402
from reproducibility import machine_line  # noqa: E402

from gradsweep import measure  # noqa: E402

#: Each neighbour's code, run by a fresh interpreter pinned to the other CPU.
NEIGHBOURS = {
    "stream": "import numpy as np\n"
              "a = np.ones(4 << 20); b = np.empty_like(a)\n"
              "while True:\n    np.copyto(b, a)\n",
    "store": "import io, numpy as np, pandas as pd, pyarrow as pa, pyarrow.parquet as pq\n"
             "rng = np.random.default_rng(0)\n"
             "rows = pd.DataFrame({'cell_id': [f'c{i:05d}' for i in range(2000)],\n"
             "                     'cpu_ns': rng.random(2000), 'wall_ns': rng.random(2000)})\n"
             "while True:\n"
             "    buf = io.BytesIO(); pq.write_table(pa.Table.from_pandas(rows), buf)\n"
             "    pd.read_parquet(io.BytesIO(buf.getvalue())).groupby('cell_id').cpu_ns.median()\n",
}
#: Seconds a neighbour gets to start before its phase's windows.
NEIGHBOUR_START_S = 1.0


def neighbour(kind: str, cpu: int) -> subprocess.Popen:
    """Start neighbour ``kind`` pinned to ``cpu``."""
    code = f"import os; os.sched_setaffinity(0, {{{cpu}}})\n" + NEIGHBOURS[kind]
    proc = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(NEIGHBOUR_START_S)
    return proc


def phase_ratios(members, windows_per_phase: int, window_s: float, cpu, rng) -> list:
    """One phase's windows (see ``ratio_drift.window``)."""
    return [window(members, window_s, cpu, rng) for _ in range(windows_per_phase)]


def run_cycles(members, kinds: list[str], args: argparse.Namespace) -> dict[str, list]:
    """Per phase kind ("quiet" and each neighbour), per cycle, that phase's windows."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("neighbour_load.py needs two CPUs")
    os.sched_setaffinity(0, {cpus[0]})
    clock, rng = measure.cpu_clock(1), np.random.default_rng(args.seed)
    per = max(1, round(args.phase_s / args.window_s))
    phases: dict[str, list] = {k: [] for k in ["quiet", *kinds]}
    for _ in range(args.cycles):
        phases["quiet"].append(phase_ratios(members, per, args.window_s, clock, rng))
        for kind in kinds:
            proc = neighbour(kind, cpus[1])
            try:
                phases[kind].append(phase_ratios(members, per, args.window_s, clock, rng))
            finally:
                proc.kill()
                proc.wait()
    return phases


def summary(names: list[str], phases: dict[str, list], ref: int) -> list[dict]:
    """Per neighbour and member: quiet and loaded ratio, and the per-cycle change."""
    def cycle_ratio(windows: list) -> np.ndarray:  # (members,): median window log-ratio
        return np.median(window_log_ratios(windows, ref), axis=0)

    quiet = np.array([cycle_ratio(w) for w in phases["quiet"]])
    rows = []
    for kind, cycles in phases.items():
        if kind == "quiet":
            continue
        loaded = np.array([cycle_ratio(w) for w in cycles])
        change = np.exp(loaded - quiet)  # (cycles, members)
        for i, name in enumerate(names):
            if i != ref:
                rows.append({"neighbour": kind, "member": name,
                             "quiet": float(np.exp(np.median(quiet[:, i]))),
                             "loaded": float(np.exp(np.median(loaded[:, i]))),
                             "change": float(np.median(change[:, i])),
                             "low": float(change[:, i].min()),
                             "high": float(change[:, i].max())})
    return rows


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("spec", nargs="?", type=Path, default=ROOT / "jobs" / "quick.toml")
    parser.add_argument("--kernel", default="deconv2d")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--neighbours", default="stream,store",
                        help=f"comma-separated, of {', '.join(NEIGHBOURS)}")
    parser.add_argument("--cycles", type=int, default=4)
    parser.add_argument("--phase-s", type=float, default=10.0)
    parser.add_argument("--window-s", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse()
    kinds = [k for k in args.neighbours.split(",") if k]
    if unknown := set(kinds) - set(NEIGHBOURS):
        raise SystemExit(f"--neighbours: unknown {sorted(unknown)}; expected {list(NEIGHBOURS)}")
    with_malloc_env()
    print(machine_line(sep=" | "))
    with measuring(args.spec, args.kernel, args.dtype) as members:
        phases = run_cycles(members, kinds, args)
    times = np.median(np.concatenate([w for c in phases["quiet"] for w in c]), axis=0)
    ref = int(np.argmin(times))
    names = [m.name for m in members]
    print(f"ratios to {names[ref]} (the group's fastest); {args.cycles} cycles of "
          f"{args.phase_s:g} s phases; change = beside / quiet, paired by cycle")
    print(f"{'neighbour':9s} {'member':40s} {'quiet':>6s} {'beside':>6s} {'change':>7s} "
          f"{'range':>13s}")
    for r in summary(names, phases, ref):
        print(f"{r['neighbour']:9s} {r['member'][:40]:40s} {r['quiet']:6.2f} {r['loaded']:6.2f} "
              f"{r['change']:6.3f}x {r['low']:.3f}-{r['high']:.3f}x")


if __name__ == "__main__":
    main()
