"""Measure the CI gate itself: false alarms (A/A), power on real slowdowns, the clocks' agreement.

    PYTHONPATH=<tree>/build/lib-own python tests/benchmarks/gate_power.py \\
        [--aa-runs 20] [--power-runs 2] [--levels 0.02,0.05,0.10] [--instruction-runs 1] \\
        [--asymmetry-pairs 12] [--budget-s 120] [--threshold 0.03]

Everything runs in a temporary git copy of this project (committed once as the
base; ``gradsweep ci --base HEAD`` from there), with its own link tree
``build/lib-own/gradsweep``, so the gate measured is this tree's.

1. **Injected slowdowns** (``tests/plugins/gs_inject.py``): a copy of rnn
   ``prealloc,batched`` with real extra work: extra passes over an array it
   touches, extra copies of the cache, GEMMs on a transposed copy instead of a
   view, a busy-wait. Each kind's amount is calibrated in this process (its
   effect at a large amount, scaled down to each target level), then each
   injection's **true effect** is measured independently: many interleaved
   rounds of the plain and the injected backward in one process.
2. **A/A**: ``gradsweep ci --base HEAD`` on jobs/ci.toml, unchanged, ``--aa-runs``
   times: runs failed, cells flagged either way, coverage of 1.0 by the 95%
   interval, the median ratio and how many ratios fall on each side, seconds.
3. **Power**: for each level the candidate's copy of the plugin gets the
   calibrated amounts; the gate runs ``--power-runs`` times on the injected
   cells; detected = verdict ``regression``.
4. **Instruction clock**: ``--clock instructions`` A/A and at the smallest level:
   instruction ratios (A/A within 0.1%?) and detections.
5. **Asymmetry**: process pairs run directly with the trees arranged the
   gate's way and the old way (the base from a fresh worktree compiling its
   bytecode at import, the candidate from the working tree; the base side
   always first): the mean candidate/base log-ratio per arrangement.

Prints one table per part; targets are in docs/gate.md.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gradsweep import measure, regress, store, worker
from gradsweep.records import Cell

ROOT = Path(__file__).resolve().parents[2]
GIT = ["git", "-c", "user.name=gate-bench", "-c", "user.email=gate@bench",
       "-c", "commit.gpgsign=false"]
PLUGIN = Path("tests/plugins/gs_inject.py")
KINDS = ("pass", "copy", "transpose", "busy")
#: The injected cells: two shapes of different cost.
SHAPES = (((32, 32, 64, 128), "float64"), ((16, 32, 32, 64), "float32"))
#: Settings of the power spec: those of jobs/ci.toml.
POWER_SPEC = """
name = "gate-power"
plugins = ["gs_inject"]
[measure]
repeats = 3
samples = 30
min_time_s = 0.005
max_warmups = 6
memory = false
[[grid]]
kernel = "rnn"
dtype = ["float64"]
variants = {{ buffers = [{buffers}], wgrad = ["batched"], clip = ["none"] }}
shape = {{ N = [32], T = [32], D = [64], H = [128] }}
[[grid]]
kernel = "rnn"
dtype = ["float32"]
variants = {{ buffers = [{buffers}], wgrad = ["batched"], clip = ["none"] }}
shape = {{ N = [16], T = [32], D = [32], H = [64] }}
"""
#: Rounds of the in-process measurements (calibration and true effect).
CALIBRATION_ROUNDS = 40
TRUTH_ROUNDS = 120
#: Calibration amount per kind: large enough that the effect stands out of the noise.
CALIBRATION_UNITS = {"pass": 20.0, "copy": 10.0, "transpose": 2.0, "busy": 0.5}


# --------------------------------------------------------------------------- the copy


def copy_project(dest: Path) -> None:
    """This project's working tree (tracked and untracked, not ignored), committed once,
    with a link tree ``build/lib-own/gradsweep`` of it (links to its bench/*, impls, dashboards)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, text=True, check=True)
    for name in listed.stdout.splitlines():
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    (dest / "gate-power.toml").write_text(power_spec())
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "gate bench base"], cwd=dest, check=True)
    link_tree(dest)


def link_tree(repo: Path) -> Path:
    """``repo/build/lib-own/gradsweep``: symlinks to repo's bench/*, impls, dashboards."""
    out = repo / "build" / "lib-own" / "gradsweep"
    out.mkdir(parents=True, exist_ok=True)
    for entry in (repo / "bench").iterdir():
        (out / entry.name).symlink_to(entry)
    for name in ("impls", "dashboards"):
        (out / name).symlink_to(repo / name)
    return out.parent


def power_spec() -> str:
    buffers = ", ".join(f'"inject-{k}"' for k in ("none", *KINDS))
    return POWER_SPEC.format(buffers=buffers)


def set_units(repo: Path, units: dict[str, float]) -> None:
    """``UNITS = {...}`` in the working tree's copy of the plugin."""
    path = repo / PLUGIN
    text = re.sub(r"^UNITS: dict\[str, float\] = .*$", f"UNITS: dict[str, float] = {units!r}",
                  path.read_text(), flags=re.M)
    path.write_text(text)


def run_ci(repo: Path, spec: str, results: Path, args: argparse.Namespace,
           *extra: str) -> tuple[int, float]:
    """One ``gradsweep ci --base HEAD`` in ``repo``: (exit code, seconds)."""
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(repo / "build" / "lib-own"), str(repo / "tests" / "plugins")])}
    environ.pop(regress.STEP_SUMMARY_ENV, None)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "gradsweep", "ci", "--base", "HEAD", "--spec",
                           spec, "--results", str(results), "--threshold", str(args.threshold),
                           *extra], cwd=repo, env=environ, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"gradsweep ci failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.returncode, time.monotonic() - start


# --------------------------------------------------------------------------- calibration


def cell_of(kind: str, shape: tuple[int, ...], dtype: str) -> Cell:
    return Cell("rnn", f"rnn/buffers=inject-{kind},wgrad=batched,clip=none",
                tuple(zip("NTDH", shape)), dtype, 1, 0, 1.0, 5.0)


def interleaved_effect(kind: str, shape, dtype: str, units: float, rounds: int) -> float:
    """Injected over plain time, one process: the median of ``rounds`` paired log-ratios
    (shuffled order, case and cache re-laid out every round, thread CPU time)."""
    import gs_inject

    key = gs_inject.key(kind, *shape, dtype)
    prepared, _ = worker.prepare(cell_of(kind, shape, dtype), ("gs_inject",))
    rng = np.random.default_rng(0)
    loops = measure.calibrate_loops(prepared.call, 5e6, time.thread_time_ns)
    ratios = []
    with measure.gc_paused():
        for _ in range(rounds):
            moved = measure.rematerialise(prepared, rng)
            call = moved.call
            got = {}
            for amount in rng.permutation([0.0, units]):
                gs_inject.UNITS[key] = float(amount)
                call()
                got[float(amount)] = measure.timed_sample(call, loops, time.thread_time_ns)[0]
            ratios.append(math.log(got[units] / got[0.0]))
    gs_inject.UNITS.pop(key, None)
    return math.exp(float(np.median(ratios)))


@dataclass
class Injection:
    """One kind at one shape and level: the amount and its true effect."""

    kind: str
    shape: tuple[int, ...]
    dtype: str
    level: float
    units: float
    true_ratio: float


def calibrate(levels: list[float]) -> list[Injection]:
    """Amounts per kind, shape and level; each amount's true effect measured on its own."""
    import gs_inject

    found = []
    with measure.set_threads(1):
        for shape, dtype in SHAPES:
            for kind in KINDS:
                big = CALIBRATION_UNITS[kind]
                effect = interleaved_effect(kind, shape, dtype, big, CALIBRATION_ROUNDS) - 1.0
                for level in levels:
                    units = big if kind == "transpose" else big * level / max(effect, 1e-4)
                    truth = interleaved_effect(kind, shape, dtype, units, TRUTH_ROUNDS)
                    found.append(Injection(kind, shape, dtype, level, units, truth))
                    print(f"  {kind:9s} {shape} {dtype}: level {level:.0%} -> {units:.3g} "
                          f"units, true {truth:.3f}x", flush=True)
    del gs_inject
    return found


# --------------------------------------------------------------------------- tallies


@dataclass
class Tally:
    """Cells compared over gate runs: verdicts, ratios, coverage, runs, seconds."""

    cells: list[regress.CellComparison] = field(default_factory=list)
    runs: int = 0
    failed_runs: int = 0
    seconds: list[float] = field(default_factory=list)

    def flagged(self) -> int:
        return sum(c.verdict in (regress.REGRESSION, regress.IMPROVEMENT) for c in self.cells)

    def covered(self) -> int:
        return sum(c.ci_low <= 1.0 <= c.ci_high for c in self.cells)


def comparisons(results: Path, threshold: float) -> list[regress.CellComparison]:
    """Every ci_run of the dataset compared (paired, random effects)."""
    ds = store.resolve(results)
    sweeps = store.sweeps(ds).drop_duplicates(store.PARTITION, keep="last")
    out = []
    for _, run in sweeps.groupby("ci_run"):
        ids = run.set_index("role")[store.PARTITION]
        out += regress.compare_sweeps(ds, ids["base"], ds, ids["candidate"],
                                      threshold=threshold).cells
    return out


def gate_runs(repo: Path, spec: str, runs: int, name: str, args, *extra: str) -> Tally:
    """``runs`` gate runs into a fresh dataset."""
    results = repo.parent / f"results-{name}"
    tally = Tally()
    for i in range(runs):
        code, seconds = run_ci(repo, spec, results, args, *extra)
        tally.runs += 1
        tally.failed_runs += code != 0
        tally.seconds.append(seconds)
        print(f"  {name}: run {i + 1}/{runs}: exit {code}, {seconds:.0f} s", flush=True)
    tally.cells = comparisons(results, args.threshold)
    return tally


def aa_table(t: Tally) -> str:
    ratios = np.array([c.ratio for c in t.cells])
    n = len(ratios)
    side = max(np.mean(ratios < 1), np.mean(ratios > 1)) if n else math.nan
    rows = [
        ("runs failed (target 0 of 20)", f"{t.failed_runs} of {t.runs}"),
        ("cells flagged either way (<= 1%)",
         f"{t.flagged()} of {n} ({100 * t.flagged() / max(n, 1):.1f}%)"),
        ("95% interval covers 1.0 (>= 93%)", f"{100 * t.covered() / max(n, 1):.1f}%"),
        ("median ratio (1 +- 0.003)", f"{np.median(ratios):.4f}" if n else ""),
        ("ratios on the fuller side of 1 (<= 60%)", f"{100 * side:.0f}%"),
        ("verdicts", ", ".join(f"{v} {sum(c.verdict == v for c in t.cells)}" for v in
                               (regress.UNCHANGED, regress.INCONCLUSIVE, regress.REGRESSION,
                                regress.IMPROVEMENT))),
        ("seconds per run: median / max (<= 180)",
         f"{np.median(t.seconds):.0f} / {max(t.seconds):.0f}" if t.seconds else ""),
    ]
    return "\n".join(["| A/A (jobs/ci.toml) | measured |", "|---|---|",
                      *(f"| {a} | {b} |" for a, b in rows)])


def power_table(found: dict[float, Tally], injections: list[Injection]) -> str:
    truth = {(i.kind, i.dtype, i.level): i for i in injections}
    lines = ["| level | kind | cells | detected | rate | true effect | gate ratio (median) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for level, t in found.items():
        by_kind: dict[str, list] = {}
        for c in t.cells:
            kind = re.search(r"inject-(\w+)", c.variant).group(1)
            by_kind.setdefault(kind, []).append(c)
        total = hits = 0
        for kind in KINDS:
            cells = by_kind.get(kind, [])
            hit = sum(c.verdict == regress.REGRESSION for c in cells)
            truths = [truth[(kind, c.dtype, level)].true_ratio for c in cells
                      if (kind, c.dtype, level) in truth]
            lines.append(f"| +{level:.0%} | {kind} | {len(cells)} | {hit} | "
                         f"{100 * hit / max(len(cells), 1):.0f}% | "
                         f"{', '.join(f'{x:.3f}' for x in sorted(set(truths)))} | "
                         f"{np.median([c.ratio for c in cells]) if cells else math.nan:.3f} |")
            if kind != "transpose":
                total, hits = total + len(cells), hits + hit
        none = by_kind.get("none", [])
        false = sum(c.verdict in (regress.REGRESSION, regress.IMPROVEMENT) for c in none)
        lines.append(f"| +{level:.0%} | all but transpose | {total} | {hits} | "
                     f"{100 * hits / max(total, 1):.0f}% | | |")
        lines.append(f"| +{level:.0%} | none (unchanged) | {len(none)} | {false} flagged | | | |")
    return "\n".join(lines)


#: Bins of true effect for the power summary: (low, high, label).
TRUTH_BINS = ((1.0, 1.035, "true +0 to +3.5%"), (1.035, 1.075, "true +3.5 to +7.5% (~5%)"),
              (1.075, 9.0, "true +7.5% or more (~10%)"))


def power_by_truth(found: dict[float, Tally], injections: list[Injection]) -> str:
    """Detections binned by each injected cell's measured true effect."""
    truth = {(i.kind, i.dtype, i.level): i.true_ratio for i in injections}
    rows = []
    for level, t in found.items():
        for c in t.cells:
            kind = re.search(r"inject-(\w+)", c.variant).group(1)
            if kind != "none":
                rows.append((truth[(kind, c.dtype, level)], c))
    lines = ["| true effect (measured in one process) | cells | detected | rate | median true | "
             "median gate ratio |", "|---|---:|---:|---:|---:|---:|"]
    for low, high, label in TRUTH_BINS:
        sel = [(x, c) for x, c in rows if low <= x < high]
        hits = sum(c.verdict == regress.REGRESSION for _, c in sel)
        if sel:
            lines.append(f"| {label} | {len(sel)} | {hits} | {100 * hits / len(sel):.0f}% | "
                         f"{np.median([x for x, _ in sel]):.3f} | "
                         f"{np.median([c.ratio for _, c in sel]):.3f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- instructions


def junit_instructions(path: Path) -> list[tuple[str, str, float, bool]]:
    """(cell name, verdict, ratio, disagrees with the time) per testcase of an instruction
    JUnit file."""
    out = []
    for case in ET.parse(path).getroot().iter("testcase"):
        failure = case.find("failure")
        text = (failure.text if failure is not None else case.findtext("system-out")) or ""
        ratio = re.search(r"\(([0-9.]+)x\)", text)
        verdict = "regression" if failure is not None else text.split(":", 1)[0]
        out.append((case.get("name"), verdict, float(ratio.group(1)) if ratio else math.nan,
                    "(disagrees)" in text))
    return out


def instruction_runs(repo: Path, levels: list[float], injections: list[Injection],
                     args) -> str:
    """A/A and smallest-level runs with ``--clock instructions``."""
    lines = ["| case | cells | regressions | instr. change >= 2%: detected | disagree with time "
             "| instr. ratios |", "|---|---:|---:|---:|---:|---|"]
    for level in (0.0, min(levels)):
        set_units(repo, {} if level == 0 else units_at(injections, level))
        for i in range(args.instruction_runs):
            xml = repo.parent / f"instr-{level}-{i}.xml"
            run_ci(repo, "gate-power.toml", repo.parent / f"results-instr-{level}", args,
                   "--clock", "instructions", "--junit", str(xml))
            found = junit_instructions(xml)
            hits = sum(v == "regression" for _, v, _, _ in found)
            big = [v for _, v, r, _ in found if r >= 1.02]
            ratios = ", ".join(f"{n.split()[0].split('=')[1].split(',')[0]}:{r:.4f}"
                               for n, _, r, _ in found)
            lines.append(f"| {'A/A' if level == 0 else f'+{level:.0%}'} | {len(found)} | "
                         f"{hits} | {big.count('regression')} of {len(big)} | "
                         f"{sum(d for *_, d in found)} | {ratios} |")
    set_units(repo, {})
    return "\n".join(lines)


def units_at(injections: list[Injection], level: float) -> dict[str, float]:
    import gs_inject

    return {gs_inject.key(i.kind, *i.shape, i.dtype): round(i.units, 4) for i in injections
            if i.level == level}


# --------------------------------------------------------------------------- asymmetry


def asymmetry(repo: Path, pairs: int) -> str:
    """Mean candidate/base log-ratio of A/A process pairs under three arrangements."""
    from gradsweep.gate import pairs as gp
    from gradsweep.gate import trees
    from gradsweep.spec import expand, load_spec

    spec = load_spec(str(repo / "jobs" / "ci.toml"))
    cells = [c for c in expand(spec).cells if c.kernel in ("rnn", "lstm")][:3]
    import gradsweep

    commit = trees.resolve_revision(str(repo), "HEAD")
    harness = str(Path(gradsweep.__file__).resolve().parent)
    found: dict[str, list[float]] = {"gate (equal worktrees, shared bytecode, alternating)": [],
                                     "old (fresh base compiling, candidate = repo)": [],
                                     "gate, but base always first": []}
    names = list(found)
    with trees.gate_trees(str(repo), commit, harness) as made:
        old_base = Path(made.paths["base"]).parent / "old-base-worktree-path"
        shutil.copytree(made.paths["base"], old_base,
                        ignore=shutil.ignore_patterns("__pycache__", ".git"))
        arranged = {names[0]: made, names[1]: trees.Trees(
            {"base": str(old_base), "candidate": str(repo)}, None), names[2]: made}
        for p in range(pairs):
            for name in np.random.default_rng(p).permutation(names):
                first = 0 if name == names[2] else p % 2
                if name == names[1]:
                    for cache in old_base.rglob("__pycache__"):
                        shutil.rmtree(cache)
                ws = gp.start_workers(arranged[name], str(repo), 1, first)
                try:
                    for c in cells:
                        b, cand = gp.measure_cell(c, ws, spec.measure, (), "cpu", p, first)
                        if b.status == cand.status == "ok":
                            found[name].append(float(np.median(
                                np.log(np.array(cand.samples_ns) / np.array(b.samples_ns)))))
                finally:
                    for w in ws:
                        w.close()
            print(f"  asymmetry: pair {p + 1}/{pairs}", flush=True)
    lines = ["| arrangement | pair-cells | mean log-ratio cand/base | se | candidate faster |",
             "|---|---:|---:|---:|---:|"]
    for name, xs in found.items():
        x = np.array(xs)
        lines.append(f"| {name} | {len(x)} | {100 * x.mean():+.2f}% | "
                     f"{100 * x.std(ddof=1) / math.sqrt(len(x)):.2f}% | "
                     f"{np.sum(x < 0)} of {len(x)} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gate_power.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--aa-runs", type=int, default=20)
    p.add_argument("--power-runs", type=int, default=2)
    p.add_argument("--levels", default="0.02,0.05,0.10")
    p.add_argument("--instruction-runs", type=int, default=1)
    p.add_argument("--asymmetry-pairs", type=int, default=12)
    p.add_argument("--threshold", type=float, default=0.03)
    p.add_argument("--only", default="asymmetry,calibrate,aa,power,instructions",
                   help="parts to run, comma-separated")
    p.add_argument("--keep", action="store_true", help="keep the temporary repository")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = set(args.only.split(","))
    levels = [float(x) for x in args.levels.split(",") if x]
    work = Path(tempfile.mkdtemp(prefix="gradsweep-gate-"))
    repo = work / "repo"
    repo.mkdir()
    sys.path.insert(0, str(ROOT / "tests" / "plugins"))
    load = os.getloadavg()
    try:
        copy_project(repo)
        if "asymmetry" in parts:
            print(asymmetry(repo, args.asymmetry_pairs), flush=True)
        injections = calibrate(levels) if parts & {"calibrate", "power", "instructions"} else []
        if "aa" in parts:
            print(aa_table(gate_runs(repo, "jobs/ci.toml", args.aa_runs, "aa", args)),
                  flush=True)
        if "power" in parts:
            power = {}
            for level in levels:
                set_units(repo, units_at(injections, level))
                power[level] = gate_runs(repo, "gate-power.toml", args.power_runs,
                                         f"x{level:g}", args)
            set_units(repo, {})
            print(power_table(power, injections), flush=True)
            print(power_by_truth(power, injections), flush=True)
        if "instructions" in parts:
            print(instruction_runs(repo, levels, injections, args), flush=True)
        print(f"\nload average before: {load[0]:.2f}, after: {os.getloadavg()[0]:.2f} on "
              f"{os.cpu_count()} CPUs; threshold {args.threshold:g}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
