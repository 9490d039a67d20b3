"""Benchmark the driver at scale: 10k and 100k tiny cells through ``gradsweep run``.

``python tests/benchmarks/scale.py [--cells 10000 100000] [--members 10]`` writes a spec of
microsecond cells (the ``tiny`` kernel of tinykernel.py: ``--members`` variants per group, one
group per shape N = 1, 2, ...), runs each size once as a user would (``python -m gradsweep run
SPEC --results DIR``, embedded Ray, one sweep at a time) and prints, with the machine:

- cells/s: the run's own figure (its last line: cells over the seconds the blocks took);
- driver peak RSS: the ``VmHWM`` of the driver process alone (sampled from /proc until it
  exits; Ray's processes are not counted), and ``ru_maxrss`` of the waited children for
  comparison (which also covers Ray's processes the driver started and waited for);
- post-sweep seconds: from the last cell's progress line (printed once its row is stored)
  to the process's exit: compaction, ranking, printing, Ray's shutdown.

Settings (a user's, made small): ``repeats = 3`` (every group runs in three worker
processes; the default of 8 would make the 100k run take more than twice its 16 minutes),
``samples = 9`` (3 rounds per block, the minimum a block needs),
``min_time_s = 0.0001``, ``memory = false``. Targets (issue 16):
driver peak RSS at 100k within 1.5x of 10k and under 600 MB; post-sweep under 10 s at 100k.
Not a test; both sizes take about 18 minutes on 2 busy cores (10k: 2, 100k: 16).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Progress lines of ``run`` when stderr is not a terminal: ``[done/total] status ...``.
PROGRESS = re.compile(r"^\[(\d+)/(\d+)\] ")
RATE = re.compile(r"([\d.]+) cells/s")
#: Seconds between two reads of the driver's /proc status.
SAMPLE_S = 0.1
KIB = 1024
MB = 1e6


@dataclass(frozen=True)
class Run:
    """One sweep's figures."""

    exit_code: int
    wall_s: float
    rate: float | None
    hwm_bytes: int
    sweep_rss_bytes: int
    children_maxrss_bytes: int
    post_s: float | None
    last_progress: int


def spec_text(cells: int, members: int) -> str:
    """A spec of ``cells`` tiny cells: ``members`` variants at each of ``cells / members``
    shapes."""
    groups = -(-cells // members)
    values = ", ".join(f'"v{i:02d}"' for i in range(members))
    shapes = ", ".join(str(n) for n in range(1, groups + 1))
    return (f'name = "scale-{cells}"\nplugins = ["tinykernel"]\n\n[measure]\n'
            "samples = 9\nrepeats = 3\nmin_time_s = 0.0001\nmemory = false\n\n[[grid]]\n"
            f'kernel = "tiny"\nvariants = {{ v = [{values}] }}\nshape = {{ N = [{shapes}] }}\n')


def machine() -> str:
    """CPU model, cores and load averages."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                  .splitlines() if line.startswith("model name")), platform.processor())
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}; load {load}"


def memory(pid: int) -> tuple[int, int] | None:
    """(peak, current) resident bytes of process ``pid`` (VmHWM, VmRSS); None once gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = [re.search(rf"^{key}:\s+(\d+) kB", status, re.MULTILINE)
             for key in ("VmHWM", "VmRSS")]
    if not all(found):
        return None
    return int(found[0].group(1)) * KIB, int(found[1].group(1)) * KIB


def run_once(spec: Path, results: Path, log: Path, total: int) -> Run:
    """Run ``spec`` in a driver subprocess; watch its memory and its progress lines."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t0 = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gradsweep", "run", str(spec),
                                 "--results", str(results)], stdout=out,
                                stderr=subprocess.PIPE, text=True, env=env)
        seen = {"last": None, "done": 0, "rate": None, "hwm": 0, "sweep_rss": 0}

        def read_stderr() -> None:
            for line in proc.stderr:
                match = PROGRESS.match(line)
                if match:
                    seen["last"], seen["done"] = time.monotonic(), int(match.group(1))
                    continue
                rate = RATE.search(line)
                if rate:
                    seen["rate"] = float(rate.group(1))
                out.write(line)

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        while proc.poll() is None:
            peak, rss = memory(proc.pid) or (0, 0)
            seen["hwm"] = max(seen["hwm"], peak)
            if seen["done"] < total:  # the largest sample while cells still run
                seen["sweep_rss"] = max(seen["sweep_rss"], rss)
            time.sleep(SAMPLE_S)
        end = time.monotonic()
        reader.join()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * KIB
    return Run(proc.returncode, end - t0, seen["rate"], seen["hwm"], seen["sweep_rss"], children,
               end - seen["last"] if seen["last"] else None, seen["done"])


def report(cells: int, run: Run) -> str:
    """One line of figures."""
    rate = f"{run.rate:.1f}" if run.rate is not None else "?"
    post = f"{run.post_s:.1f}" if run.post_s is not None else "?"
    return (f"{cells:>7} cells: exit {run.exit_code}, {run.last_progress} reported; "
            f"{rate} cells/s; driver peak RSS {run.hwm_bytes / MB:.0f} MB (VmHWM; until the last "
            f"cell {run.sweep_rss_bytes / MB:.0f} MB; largest "
            f"waited child so far {run.children_maxrss_bytes / MB:.0f} MB); "
            f"post-sweep {post} s; whole run {run.wall_s:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--members", type=int, default=10,
                        help="variants per group (at most 100)")
    parser.add_argument("--dir", type=Path, help="where specs, results and logs go "
                        "(default: a temporary directory, removed after)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gradsweep-scale-") as tmp:
        where = args.dir or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        print(f"machine: {machine()}", flush=True)
        runs = {}
        for cells in args.cells:
            spec = where / f"scale-{cells}.toml"
            spec.write_text(spec_text(cells, args.members))
            runs[cells] = run_once(spec, where / f"results-{cells}", where / f"run-{cells}.log",
                                   cells)
            print(report(cells, runs[cells]), flush=True)
        print(f"load after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if len(runs) > 1:
            low, high = min(runs), max(runs)
            print(f"driver peak RSS {high} / {low} cells: "
                  f"x{runs[high].hwm_bytes / max(runs[low].hwm_bytes, 1):.2f}")
        return max(r.exit_code for r in runs.values())


if __name__ == "__main__":
    sys.exit(main())
