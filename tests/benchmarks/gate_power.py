"""Measure the CI gate itself: false alarms (A/A) and detection power (slowed candidates).

    .venv/bin/python -m bench.gate_bench [--runs 5] [--power-runs 5] [--factors 0.05,0.1,0.25]
                                         [--clocks cpu,wall]

Copies this project's working tree into a temporary git repository and commits
it as the base. A/A: ``gradsweep ci --base HEAD --spec jobs/ci.toml`` on the
unchanged tree, ``--runs`` times; every cell flagged either way is a false
alarm. Power: the test-only plugin ``tests/plugins/gs_slow.py`` gets
``EXTRA = f`` in the working tree (its variant busy-waits f times its own
duration after the real backward, a known slowdown of 1 + f), and the gate
runs ``--power-runs`` times on a spec of that variant at a few shapes; the
detection rate is the fraction of those cells flagged as regressions. Prints
one table; run it on a quiet machine for numbers worth quoting.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from gradsweep import regress, store

ROOT = Path(__file__).resolve().parents[2]
GIT = ["git", "-c", "user.name=gate-bench", "-c", "user.email=gate@bench",
       "-c", "commit.gpgsign=false"]
PLUGIN = Path("tests/plugins/gs_slow.py")
#: The gate's settings for the power spec: those of jobs/ci.toml.
POWER_SPEC = """
name = "gate-power"
plugins = ["gs_slow"]
[measure]
samples = 30
min_time_s = 0.005
max_warmups = 6
memory = false
[[grid]]
kernel = "rnn"
dtype = ["float64", "float32"]
variants = { buffers = ["slowed"], wgrad = ["batched"], clip = ["none"] }
shape = { N = [16, 32], T = [32], D = [32, 64], H = [64, 128] }
exclude = [{ D = 64, H = 64 }, { D = 32, H = 128 }]
"""


@dataclass(frozen=True)
class Tally:
    """Cells compared and flagged over some gate runs, with the seconds they took."""

    cells: int
    regressions: int
    improvements: int
    seconds: float
    ratios: tuple[float, ...]

    @property
    def flagged(self) -> int:
        """Cells flagged either way."""
        return self.regressions + self.improvements


def copy_project(dest: Path) -> None:
    """This project's working tree (tracked and untracked, not ignored), committed once."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, text=True, check=True)
    for name in listed.stdout.splitlines():
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    (dest / "gate-power.toml").write_text(POWER_SPEC)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "gate bench base"], cwd=dest, check=True)


def set_extra(repo: Path, factor: float) -> None:
    """``EXTRA = factor`` in the working tree's slowed plugin."""
    path = repo / PLUGIN
    path.write_text(re.sub(r"^EXTRA = .*$", f"EXTRA = {factor!r}", path.read_text(),
                           flags=re.M))


def run_gate(repo: Path, spec: str, results: Path, clock: str) -> None:
    """One ``gradsweep ci --base HEAD`` in ``repo``; its exit code (0/1) is not needed."""
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo),
                                                            str(repo / "tests/plugins")])}
    environ.pop(regress.STEP_SUMMARY_ENV, None)
    done = subprocess.run([sys.executable, "-m", "gradsweep", "ci", "--base", "HEAD", "--spec",
                           spec, "--results", str(results), "--clock", clock], cwd=repo,
                          env=environ,
                          capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"gradsweep ci failed ({done.returncode}): {done.stderr[-2000:]}")


def tally(results: Path, seconds: float) -> Tally:
    """Every ci_run of the dataset compared (paired) and its verdicts counted."""
    ds = store.resolve(results)
    sweeps = store.sweeps(ds)
    cells = regressions = improvements = 0
    ratios: list[float] = []
    for _, run in sweeps.groupby("ci_run"):
        ids = run.set_index("role")[store.PARTITION]
        comp = regress.compare_sweeps(ds, ids["base"], ds, ids["candidate"])
        cells += len(comp.cells)
        regressions += len(comp.regressions)
        improvements += len(comp.improvements)
        ratios += [c.ratio for c in comp.cells]
    return Tally(cells, regressions, improvements, seconds, tuple(ratios))


def measure(repo: Path, spec: str, runs: int, name: str, clock: str) -> Tally:
    """``runs`` gate runs of ``spec`` into a fresh dataset, tallied."""
    results = repo.parent / f"results-{name}"
    start = time.monotonic()
    for i in range(runs):
        print(f"  {name}: run {i + 1}/{runs}", flush=True)
        run_gate(repo, spec, results, clock)
    return tally(results, time.monotonic() - start)


def report(clock: str, aa: Tally, power: dict[float, Tally], load: tuple[float, float]) -> str:
    """The results as a Markdown table."""
    import numpy as np

    lines = ["| case | cells | flagged | rate | median ratio | seconds per run |",
             "|---|---:|---:|---:|---:|---:|"]

    def add(label: str, t: Tally, hits: int, runs: int) -> None:
        rate = hits / t.cells if t.cells else float("nan")
        med = float(np.median(t.ratios)) if t.ratios else float("nan")
        lines.append(f"| {label} | {t.cells} | {hits} | {100 * rate:.1f}% | {med:.3f} | "
                     f"{t.seconds / max(runs, 1):.0f} |")

    add(f"{clock}: A/A false alarms (jobs/ci.toml)", aa, aa.flagged, ARGS.runs)
    for factor, t in power.items():
        add(f"{clock}: detected at +{100 * factor:g}%", t, t.regressions, ARGS.power_runs)
    lines.append(f"\nload average before/after: {load[0]:.2f} / {load[1]:.2f} "
                 f"on {os.cpu_count()} CPUs")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m bench.gate_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="A/A gate runs of jobs/ci.toml")
    p.add_argument("--power-runs", type=int, default=5, help="gate runs per slowdown factor")
    p.add_argument("--factors", default="0.05,0.10,0.25",
                   help="slowdowns of the candidate, comma-separated fractions")
    p.add_argument("--clocks", default="cpu,wall",
                   help="gate clocks to measure (gradsweep ci --clock), comma-separated")
    p.add_argument("--keep", action="store_true", help="keep the temporary repository")
    return p.parse_args(argv)


ARGS = parse_args([])


def main(argv: list[str] | None = None) -> int:
    """Run the A/A and power measurements and print the table."""
    global ARGS
    ARGS = parse_args(argv)
    factors = [float(f) for f in ARGS.factors.split(",") if f]
    work = Path(tempfile.mkdtemp(prefix="gradsweep-gate-"))
    repo = work / "repo"
    repo.mkdir()
    load_before = os.getloadavg()[0]
    try:
        copy_project(repo)
        for clock in ARGS.clocks.split(","):
            set_extra(repo, 0.0)
            aa = measure(repo, "jobs/ci.toml", ARGS.runs, f"{clock}-aa", clock)
            power = {}
            for factor in factors:
                set_extra(repo, factor)
                power[factor] = measure(repo, "gate-power.toml", ARGS.power_runs,
                                        f"{clock}-x{factor:g}", clock)
            print(report(clock, aa, power, (load_before, os.getloadavg()[0])), flush=True)
        set_extra(repo, 0.0)
    finally:
        if ARGS.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
