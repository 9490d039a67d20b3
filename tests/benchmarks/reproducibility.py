"""Run a spec K times as a user would and measure how reproducible its rankings are.

    python tests/benchmarks/reproducibility.py SPEC [SPEC ...] [-k 5] [--local]
        [--workers N] [--python PY] [--cwd DIR] [--pythonpath P] [--results-root DIR]
        [--one-store] [--pyperf-reruns 5] [--pair-runs K] [--kernel rnn --shape N=16,T=32,D=32,H=64
        --dtype float64 --a AXES --b AXES] [--baseline OLD.json] [--json OUT.json]

Issue 14, item 7. Each run is ``python -m gradsweep run SPEC --results DIR`` in a
subprocess (embedded Ray unless ``--local``; ``--workers`` passed on), each into
its own results directory (``--one-store``: all of a spec's runs into one, as a user
rerunning into ``results/``, so loop counts carry over), timed on the wall clock.
Each sweep is then ranked by a child process of the same python, cwd and PYTHONPATH
(``_ranking`` mode below: ``gradsweep.rank.rank`` of the sweep's cells), so a checkout
is judged by its own ranking: a member's ratio to its group's fastest is the ranking's
``ratio_fastest`` when it has one, else its ``median_ns`` over the group's
smallest. The metrics (repro_metrics.py): claims ("a ahead of b" in a group),
claims another run reversed, the claims that held (made less reversed: what to set
against code that claims more, some of it wrong), each member's ratio spread across runs (max/min),
their median and max, how often a run's interval for a member's ratio held another
run's ratio (``rerun_capture``: about 83% for honest 95% intervals, far less for
intervals that leave the between-process variance out), the sweep's time, and how
noisy the host was (the sd across
blocks of a pair's block estimate, ``repro_metrics.block_spread``, median over
members and runs: a run's spread scales with it, so a target missed on a noisy
host reads differently from one missed on a quiet host), and the floor: the median
and max spread the blocks' own noise alone predicts for K runs
(``repro_metrics.spread_floor`` from each member's ``block_standard_error``) and how
many times the samples the spread targets would need at that noise
(``repro_metrics.samples_for``). Peers and the other members apart: the sd of the
shift a run gives them together (``repro_metrics.shared_shift``) and how often
their intervals held a rerun's ratio. A spread at its floor is the samples' noise, which
no estimator or schedule removes; one well above it is something a run's blocks share.

The anchor: pyperf at its defaults (pyperf_pair.py: 20 processes x 3 values,
the ratio of means as ``compare_to`` reports it) times two variants of one cell
``--pyperf-reruns`` times (5); gradsweep measures the same pair ``--pair-runs``
times (by default as many, so the two ranges compare fairly) with a spec of just
those two members and the first spec's ``[measure]`` table (pair.toml in the
results root), interleaved with the pyperf reruns. Each side's ratio spread across
reruns and its median time per rerun are compared.

To measure today's code for ``--baseline`` (claims per run, time per sweep),
point the runs at a checkout of it: ``--pythonpath DIR`` where ``DIR/gradsweep``
holds links to the old worktree's ``bench/*``, ``impls`` and ``dashboards``), or another venv
with ``--python`` and ``--cwd``; save ``--json today.json``; then run the new
code with ``--baseline today.json``. Prints one table, the machine and the
targets; exit code 1 when a target fails, 2 on bad input or a failed run.
A default run (quick.toml, 5 runs, the anchor) takes about 9 minutes on these
2-core machines, half of it pyperf's; ``--pyperf-reruns 0 --pair-runs 0`` skips
the anchor.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from pyperf_pair import Pair, add_pair_args, pair_of
from repro_metrics import (
    CAPTURE_EXPECTED,
    Capture,
    Floor,
    Group,
    Reversals,
    Spreads,
    Standing,
    block_spread,
    block_standard_error,
    pair_ratio,
    ratio_spreads,
    rerun_capture,
    reversals,
    samples_for,
    shared_shift,
    spread_floor,
)

#: pyperf reruns of the anchor pair, and by default as many sweeps of the pair spec: a range
#: (max / min) of more reruns is wider by itself (5 normal draws: 2.33 sd; 3: 1.69 sd).
PYPERF_RERUNS = 5
SELF = Path(__file__).resolve()
HERE = SELF.parent
PYPERF_PAIR = HERE / "pyperf_pair.py"
#: Targets of issue 14, item 7.
MAX_REVERSED_FRACTION = 0.01
MAX_MEDIAN_SPREAD = 1.03
MAX_MAX_SPREAD = 1.10
MAX_TIME_FACTOR = 1.5
MAX_ANCHOR_TIME_FRACTION = 1 / 3
#: Exit codes of ``gradsweep run`` that still leave a sweep to rank (1: some cell failed).
SWEEP_DONE = (0, 1)
#: Last lines of a failed run's log shown in the error.
LOG_TAIL_LINES = 15
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
RANKING_MODE = "_ranking"
#: What a peer's member name holds (``rnn/peer=torch``).
PEER_MARK = "peer="
#: The ranking child's last argument when the runs share one store: rank its newest sweep.
NEWEST = "newest"


class RunFailed(Exception):
    """A subprocess of the benchmark failed; the message names its log."""


# --- the child: rank one sweep with the checkout's own code -----------------------------

def ranking_rows(results: str, spec: str, newest: bool = False) -> dict:
    """The single sweep in ``results`` (its newest with ``newest``) ranked by the
    importable gradsweep, as JSON-able rows."""
    import gradsweep
    from gradsweep import rank, store
    from gradsweep.impls.registry import load

    dataset = store.resolve(results)
    sweep_ids = [newest_sweep(store, dataset, results) if newest
                 else only_sweep(store, dataset, results)]
    cells = store.read(dataset, "cells", sweep_ids)
    ranked = rank.rank(cells, load(gradsweep.load_spec(spec).plugins))
    source = "ratio_fastest" if "ratio_fastest" in ranked.columns else "median_ns"
    if source == "median_ns":
        ranked = ranked.assign(ratio_fastest=rank.normalised_times(ranked))
    seconds = cells.groupby("cell_id")["duration_s"].sum()
    loops = cells.groupby("cell_id")["loops"].max()
    ok = cells[cells["status"] == "ok"]
    samples = ok["n_samples"].median() if "n_samples" in ok and len(ok) else None
    first = cells.iloc[0] if len(cells) else {}
    spreads, errors = block_noise(ok, rank)
    return {
        "block_spreads": spreads, "block_errors": errors,
        "sweep_id": sweep_ids[0], "cells": len(cells), "cells_ok": len(ok),
        "samples_per_cell": None if samples is None else float(samples),
        "ratio_source": source,
        "environment": {k: str(first.get(k, "")) for k in
                        ("cpu", "cores", "blas", "numpy_version", "git_commit", "git_dirty")},
        "rows": [{"group": [r.kernel, r.shape, r.dtype], "member": r.variant,
                  "place": int(r.place), "ratio": float(r.ratio_fastest),
                  "letters": letters_of(r),
                  "ratio_low": optional_float(getattr(r, "ratio_low", None)),
                  "ratio_high": optional_float(getattr(r, "ratio_high", None)),
                  "duration_s": float(seconds.get(r.cell_id, float("nan"))),
                  "loops": optional_int(loops.get(r.cell_id))}
                 for r in ranked.itertuples() if ranked_row(r)],
        "unranked": int(sum(not ranked_row(r) for r in ranked.itertuples())),
    }


def letters_of(row) -> str:
    """A ranked row's compact letter display ("" for code whose ranking has none)."""
    letters = getattr(row, "letters", "")
    return letters if isinstance(letters, str) else ""


def only_sweep(store, dataset, results) -> str:
    """The id of the one sweep in ``dataset`` (opened by ``store``, the importable
    gradsweep's); exits naming ``results`` when it holds none or several."""
    sweep_ids = list(store.sweeps(dataset)["sweep_id"])
    if len(sweep_ids) != 1:
        raise SystemExit(f"{results}: expected one sweep, found {len(sweep_ids)}")
    return sweep_ids[0]


def newest_sweep(store, dataset, results) -> str:
    """The id of the sweep in ``dataset`` that started last; exits naming ``results``
    when it holds none."""
    sweeps = store.sweeps(dataset)
    if not len(sweeps):
        raise SystemExit(f"{results}: expected a sweep, found none")
    return str(sweeps["sweep_id"].iloc[-1])


def block_noise(ok, rank) -> tuple[list[float], list[list]]:
    """Every member's :func:`repro_metrics.block_spread` against its group's fastest (by
    median), and its :func:`repro_metrics.block_standard_error` as ``[group, member, se]``
    (the fastest itself with 0: its ratio is 1 in every run that keeps it fastest, as the
    spreads count it), over the groups with blocks; both empty for code without blocks."""
    spreads, errors = [], []
    if not hasattr(rank, "group_times") or not len(ok):
        return spreads, errors
    for key, group in ok.groupby(list(rank.GROUP_KEYS)):
        if not rank.is_blocked(group):
            continue
        times = rank.group_times(group)
        fastest = group.loc[group["median_ns"].idxmin(), "variant"]
        errors.append([[str(k) for k in key], fastest, 0.0])  # its ratio: 1 by definition
        for m, t in times.items():
            if m != fastest and (x := block_spread(t, times[fastest])) is not None:
                spreads.append(x)
                errors.append([[str(k) for k in key], m,
                               block_standard_error(t, times[fastest])])
    return spreads, errors


def optional_float(value) -> float | None:
    """``value`` as a float, None when missing or NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def optional_int(value) -> int | None:
    """``value`` as an int, None when missing or NaN."""
    number = optional_float(value)
    return None if number is None else int(number)


def ranked_row(row) -> bool:
    """Whether a ranked row has a place and a positive finite ratio (others are unranked)."""
    ratio = optional_float(row.ratio_fastest)
    return optional_float(row.place) is not None and ratio is not None and ratio > 0


# --- running sweeps ---------------------------------------------------------------------

@dataclass(frozen=True)
class Checkout:
    """How runs are started: which python, in which directory, with which environment."""

    python: str
    cwd: str
    env: tuple[tuple[str, str], ...]
    run_args: tuple[str, ...]

    def call(self, argv: Sequence[str], log: Path) -> tuple[int, float]:
        """Run ``python argv`` with stdout and stderr to ``log``: (exit code, wall seconds)."""
        with log.open("w") as out:
            t0 = time.monotonic()
            code = subprocess.call([self.python, *argv], cwd=self.cwd, env=dict(self.env),
                                   stdout=out, stderr=subprocess.STDOUT)
            return code, time.monotonic() - t0


@dataclass(frozen=True)
class Detail:
    """What a ranking says of a member besides its Standing: interval and cell time."""

    ratio_low: float | None
    ratio_high: float | None
    duration_s: float
    loops: int | None = None


@dataclass(frozen=True)
class SweepRun:
    """One ``gradsweep run`` of a spec and its ranking."""

    index: int
    sweep_id: str
    exit_code: int
    wall_s: float
    cells: int
    cells_ok: int
    samples_per_cell: float | None
    ratio_source: str
    standings: tuple[Standing, ...]
    details: tuple[Detail, ...]  # one per standing
    unranked: int = 0
    environment: Mapping[str, str] = field(default_factory=dict)
    block_spreads: tuple[float, ...] = ()  # one per non-fastest member (repro_metrics)
    block_errors: tuple[tuple[Group, str, float], ...] = ()  # the same members' errors

    @property
    def claims(self) -> int:
        return reversals([self.standings]).made


def log_tail(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return "\n".join("    " + line for line in lines)


def run_sweep(checkout: Checkout, spec: Path, directory: Path, index: int,
              results: Path | None = None) -> SweepRun:
    """Run ``spec`` once into ``directory``/results (or into ``results``, a store other
    runs share: then its newest sweep is ranked) and rank it (see :func:`ranking_rows`)."""
    shared = results is not None
    results, log = results or directory / "results", directory / "run.log"
    directory.mkdir(parents=True, exist_ok=True)
    argv = ["-m", "gradsweep", "run", str(spec), "--results", str(results), *checkout.run_args]
    code, wall_s = checkout.call(argv, log)
    if code not in SWEEP_DONE:
        raise RunFailed(f"gradsweep run exited {code}; {log}:\n{log_tail(log)}")
    ranking, rank_log = directory / "ranking.json", directory / "ranking.log"
    argv = [str(SELF), RANKING_MODE, str(results), str(spec), str(ranking),
            *([NEWEST] if shared else [])]
    rank_code, _ = checkout.call(argv, rank_log)
    if rank_code:
        raise RunFailed(f"ranking the sweep failed ({rank_code}); {rank_log}:\n"
                        f"{log_tail(rank_log)}")
    got = json.loads(ranking.read_text())
    rows = got["rows"]
    standings = tuple(Standing(tuple(r["group"]), r["member"], r["place"], r["ratio"],
                               r.get("letters", "")) for r in rows)
    details = tuple(Detail(r["ratio_low"], r["ratio_high"], r["duration_s"], r.get("loops"))
                    for r in rows)
    return SweepRun(index, got["sweep_id"], code, wall_s, got["cells"], got["cells_ok"],
                    got["samples_per_cell"], got["ratio_source"], standings, details,
                    got["unranked"], got["environment"], tuple(got.get("block_spreads", ())),
                    tuple((tuple(g), m, se) for g, m, se in got.get("block_errors", ())))


# --- one spec: K runs and their metrics -------------------------------------------------

@dataclass(frozen=True)
class Kind:
    """One kind of member (peers, or the rest) of a spec's runs: how many, the sd of
    the run shift they share (:func:`repro_metrics.shared_shift`), their intervals'
    rerun capture."""

    name: str
    members: int
    shift_sd: float | None
    capture: Capture


@dataclass(frozen=True)
class SpecResult:
    """K runs of one spec and what they reproduce."""

    spec: str
    runs: tuple[SweepRun, ...]
    reversals: Reversals
    spreads: Spreads
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]

    @property
    def name(self) -> str:
        return Path(self.spec).stem

    @property
    def sweep_s(self) -> float:
        return statistics.median(r.wall_s for r in self.runs)

    @property
    def claims_per_run(self) -> float:
        return statistics.median(self.reversals.per_run)

    @property
    def held_per_run(self) -> float:
        """Median over runs of the claims no other run reversed."""
        return statistics.median(self.reversals.held_per_run)

    @property
    def samples_per_cell(self) -> float | None:
        known = [r.samples_per_cell for r in self.runs if r.samples_per_cell is not None]
        return statistics.median(known) if known else None

    @property
    def block_spread(self) -> float | None:
        """How noisy the host was: the median over members and runs of the sd of a
        pair's block estimate (None for code without blocks)."""
        known = [x for r in self.runs for x in r.block_spreads]
        return statistics.median(known) if known else None

    @cached_property
    def floor(self) -> Floor | None:
        """The spreads the blocks' own noise predicts for these runs
        (:func:`repro_metrics.spread_floor`, Monte Carlo: drawn once, printed and saved;
        each member's standard error pooled over the runs as the root mean square); None
        for code without blocks."""
        variances: dict[tuple[Group, str], list[float]] = {}
        for run in self.runs:
            for group, member, se in run.block_errors:
                variances.setdefault((group, member), []).append(se * se)
        if not variances or len(self.runs) < 2:
            return None
        return spread_floor([math.sqrt(statistics.fmean(v)) for v in variances.values()],
                            len(self.runs))

    @property
    def loops_varied(self) -> tuple[int, int]:
        """(members whose loop count differed between runs, members with a count in
        every run)."""
        counts: dict[tuple[Group, str], set[int]] = {}
        seen: dict[tuple[Group, str], int] = {}
        for run in self.runs:
            for s, d in zip(run.standings, run.details):
                if d.loops is not None:
                    counts.setdefault((s.group, s.member), set()).add(d.loops)
                    seen[(s.group, s.member)] = seen.get((s.group, s.member), 0) + 1
        every = [key for key, n in seen.items() if n == len(self.runs)]
        return sum(len(counts[key]) > 1 for key in every), len(every)

    def kinds(self) -> list[Kind]:
        """Peers and the other members apart: the run shift they share and how often
        their intervals held a rerun's ratio (a member always its group's fastest,
        ratio 1, left out)."""
        ratios = [{(s.group, s.member): s.ratio for s in r.standings} for r in self.runs]
        kinds = []
        for name, is_peer in (("peers", True), ("other members", False)):
            keys = {k for r in ratios for k, v in r.items()
                    if (PEER_MARK in k[1]) == is_peer and v != 1.0}
            estimates = [{(s.group, s.member): (s.ratio, d.ratio_low, d.ratio_high)
                          for s, d in zip(r.standings, r.details)
                          if (s.group, s.member) in keys} for r in self.runs]
            if keys:
                kinds.append(Kind(name, len(keys), shared_shift(ratios, sorted(keys)),
                                  rerun_capture(estimates)))
        return kinds

    @property
    def capture(self) -> Capture:
        """How often a run's interval for a member's ratio held another run's ratio."""
        return rerun_capture([{(s.group, s.member): (s.ratio, d.ratio_low, d.ratio_high)
                               for s, d in zip(r.standings, r.details)} for r in self.runs])


def measure_spec(checkout: Checkout, spec: Path, root: Path, k: int,
                 one_store: bool = False) -> SpecResult:
    """Run ``spec`` ``k`` times (progress on stderr; with ``one_store`` all into one
    results directory, as a user rerunning into ``results/``) and compute its metrics."""
    before = os.getloadavg()
    runs, shared = [], root / spec.stem / "results" if one_store else None
    for i in range(1, k + 1):
        runs.append(run_sweep(checkout, spec, root / spec.stem / f"run{i}", i, shared))
        print(f"  {spec.name} run {i}/{k}: {runs[-1].wall_s:.1f} s, sweep {runs[-1].sweep_id}",
              file=sys.stderr)
    standings = [r.standings for r in runs]
    return SpecResult(str(spec), tuple(runs), reversals(standings), ratio_spreads(standings),
                      before, os.getloadavg())


def pair_group(pair: Pair, standings: Sequence[Standing]) -> tuple[str, ...] | None:
    """The group of ``standings`` holding ``pair``: same kernel and dtype, shape with its dims."""
    want = pair.dims()
    for s in standings:
        kernel, shape, dtype = s.group
        dims = dict(item.split("=", 1) for item in shape.split(",") if "=" in item)
        if (kernel, dtype) == (pair.kernel, pair.dtype) and all(
                dims.get(d) == str(v) for d, v in want.items()):
            return s.group
    return None


@dataclass(frozen=True)
class PairSide:
    """One method's measurements of the pair: ratio b/a and time per rerun."""

    label: str
    ratios: tuple[float, ...]
    seconds: tuple[float, ...]

    @property
    def spread(self) -> float:
        return max(self.ratios) / min(self.ratios) if self.ratios else float("nan")

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


def pair_in_runs(pair: Pair, runs: Sequence[SweepRun], label: str,
                 whole_sweep: bool) -> PairSide | None:
    """The pair's ratio per run; time: the whole sweep's, or the pair cells' duration_s."""
    ratios, seconds = [], []
    a, b = pair.members
    for run in runs:
        group = pair_group(pair, run.standings)
        ratio = pair_ratio(run.standings, group, a, b) if group else None
        if ratio is None:
            continue
        ratios.append(ratio)
        cells = [d.duration_s for s, d in zip(run.standings, run.details)
                 if s.group == group and s.member in (a, b)]
        seconds.append(run.wall_s if whole_sweep else sum(cells))
    return PairSide(label, tuple(ratios), tuple(seconds)) if ratios else None


# --- the anchor: the same pair by pyperf and by a two-member gradsweep spec -------------

def toml_value(value) -> str:
    """``value`` (str, bool, number, list or dict of those) as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are TOML basic-string escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def pair_spec_text(pair: Pair, measure: Mapping[str, object]) -> str:
    """A spec of the pair's two members alone (one grid each) with ``measure`` settings."""
    lines = ['name = "repro-pair"', "", "[measure]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in measure.items()]
    for member in pair.members:
        axes = dict(item.split("=", 1) for item in member.split("/", 1)[1].split(","))
        if "peer" in axes:
            raise ValueError(f"pair member {member} is a peer: the pair spec takes variants")
        lines += ["", "[[grid]]", f"kernel = {toml_value(pair.kernel)}",
                  f"dtype = {toml_value([pair.dtype])}",
                  f"variants = {toml_value({k: [v] for k, v in axes.items()})}",
                  f"shape = {toml_value(pair.dims())}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PyperfRerun:
    """One pyperf_pair.py run: both means (s), their ratio b/a and the wall time."""

    mean_a: float
    mean_b: float
    ratio: float
    wall_s: float


def run_pyperf(checkout: Checkout, pair: Pair, directory: Path) -> PyperfRerun:
    """pyperf_pair.py at pyperf's defaults into ``directory``/pair.json."""
    from pyperf_pair import mean_ratio

    directory.mkdir(parents=True, exist_ok=True)
    out, log = directory / "pair.json", directory / "pyperf.log"
    argv = [str(PYPERF_PAIR), "-o", str(out), "--quiet"]
    for name in ("kernel", "shape", "dtype", "a", "b"):
        argv += [f"--{name}", getattr(pair, name)]
    code, wall_s = checkout.call(argv, log)
    if code:
        raise RunFailed(f"pyperf_pair.py exited {code}; {log}:\n{log_tail(log)}")
    return PyperfRerun(*mean_ratio(str(out), *pair.members), wall_s)


@dataclass(frozen=True)
class Anchor:
    """The pair measured by pyperf and by gradsweep, interleaved."""

    pair: Pair
    pyperf: tuple[PyperfRerun, ...]
    runs: tuple[SweepRun, ...]

    @property
    def pyperf_side(self) -> PairSide:
        return PairSide("pyperf (defaults)", tuple(r.ratio for r in self.pyperf),
                        tuple(r.wall_s for r in self.pyperf))

    @property
    def gradsweep_side(self) -> PairSide | None:
        return pair_in_runs(self.pair, self.runs, "gradsweep (pair spec)", whole_sweep=True)


def measure_anchor(checkout: Checkout, pair: Pair, first_spec: Path, root: Path,
                   reruns: int, pair_runs: int) -> Anchor:
    """Alternate pyperf reruns and pair-spec sweeps (so drifting load hits both alike)."""
    measure = tomllib.loads(first_spec.read_text()).get("measure", {})
    spec = root / "pair.toml"
    spec.write_text(pair_spec_text(pair, measure))
    pyperf, runs = [], []
    for i in range(1, max(reruns, pair_runs) + 1):
        if i <= pair_runs:
            runs.append(run_sweep(checkout, spec, root / "pair" / f"run{i}", i))
            print(f"  pair spec run {i}/{pair_runs}: {runs[-1].wall_s:.1f} s", file=sys.stderr)
        if i <= reruns:
            pyperf.append(run_pyperf(checkout, pair, root / "pyperf" / f"rerun{i}"))
            print(f"  pyperf rerun {i}/{reruns}: {pyperf[-1].wall_s:.1f} s, "
                  f"ratio {pyperf[-1].ratio:.3f}", file=sys.stderr)
    return Anchor(pair, tuple(pyperf), tuple(runs))


# --- the machine, the baseline and the targets ------------------------------------------

def machine() -> dict[str, str]:
    """CPU model, cores, numpy and its BLAS (threadpoolctl), and BLAS environment variables."""
    import platform

    import numpy
    from threadpoolctl import threadpool_info

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    blas = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture', '')}".strip()
            for i in threadpool_info() if i.get("user_api") == "blas"]
    info = {"host": platform.node(), "cpu": cpu, "cores": str(os.cpu_count()),
            "python": platform.python_version(), "numpy": numpy.__version__,
            "blas": "; ".join(blas) or "unknown"}
    info.update({name: os.environ[name] for name in BLAS_ENV if name in os.environ})
    return info


def machine_line(info: dict[str, str] | None = None, sep: str = ", ") -> str:
    """:func:`machine` (or ``info``) on one line: ``key value`` items joined by ``sep``."""
    return sep.join(f"{k} {v}" for k, v in (machine() if info is None else info).items())


@dataclass(frozen=True)
class Baseline:
    """Today's figures for one spec, from an earlier ``--json`` of this script."""

    claims_per_run: float
    sweep_s: float
    samples_per_cell: float | None
    held_per_run: float | None = None  # absent from a --json saved before it was


def load_baselines(path: Path) -> dict[str, Baseline]:
    """Spec name -> :class:`Baseline` from the ``specs`` of a saved ``--json``."""
    try:
        data = json.loads(path.read_text())
        return {s["name"]: Baseline(s["claims_per_run"], s["sweep_s"], s["samples_per_cell"],
                                    s.get("held_per_run"))
                for s in data["specs"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--baseline {path}: not a saved --json of this script ({exc})") from None


@dataclass(frozen=True)
class Target:
    """One target of issue 14 item 7; ``passed`` None when there is nothing to judge."""

    scope: str
    name: str
    value: str
    goal: str
    passed: bool | None


def at_most(value: float, limit: float) -> bool | None:
    """``value <= limit``; None when there is no value (NaN: no member in two runs)."""
    return None if math.isnan(value) else value <= limit


def spec_targets(result: SpecResult, baseline: Baseline | None) -> list[Target]:
    """Reversals, ratio spreads, and (with a baseline) claims and time against today's."""
    rev, spreads, name = result.reversals, result.spreads, result.name
    out = [Target(name, "claims reversed by another run",
                  f"{rev.reversed}/{rev.made} ({rev.reversed_fraction:.1%})",
                  f"<= {MAX_REVERSED_FRACTION:.0%}", rev.reversed_fraction
                  <= MAX_REVERSED_FRACTION),
           Target(name, "ratio-to-fastest spread, median", f"{spreads.median:.3f}x",
                  f"<= {MAX_MEDIAN_SPREAD:.2f}x", at_most(spreads.median, MAX_MEDIAN_SPREAD)),
           Target(name, "ratio-to-fastest spread, max", f"{spreads.max:.3f}x",
                  f"<= {MAX_MAX_SPREAD:.2f}x", at_most(spreads.max, MAX_MAX_SPREAD))]
    if baseline is None:
        return out + [Target(name, "claims per run vs today's", f"{result.claims_per_run:g}",
                             ">= today's", None),
                      Target(name, "time per sweep vs today's", f"{result.sweep_s:.1f} s",
                             f"<= {MAX_TIME_FACTOR}x today's", None)]
    factor = result.sweep_s / baseline.sweep_s
    samples = ("" if baseline.samples_per_cell == result.samples_per_cell else
               f" [samples/cell {result.samples_per_cell} vs {baseline.samples_per_cell}]")
    held = [] if baseline.held_per_run is None else [  # not a target: what the count means
        Target(name, "claims held per run vs today's",
               f"{result.held_per_run:g} vs {baseline.held_per_run:g}", "(not reversed)", None)]
    return out + [
        Target(name, "claims per run vs today's",
               f"{result.claims_per_run:g} vs {baseline.claims_per_run:g}", ">= today's",
               result.claims_per_run >= baseline.claims_per_run), *held,
        Target(name, "time per sweep vs today's",
               f"{result.sweep_s:.1f} s vs {baseline.sweep_s:.1f} s ({factor:.2f}x){samples}",
               f"<= {MAX_TIME_FACTOR}x", factor <= MAX_TIME_FACTOR)]


def anchor_targets(pyperf: PairSide, ours: PairSide | None) -> list[Target]:
    """gradsweep's pair ratio spread no wider than pyperf's, in a third of its time."""
    if ours is None or len(ours.ratios) < 2 or len(pyperf.ratios) < 2:
        return [Target("pair", "ratio spread vs pyperf's", "too few reruns", "<= pyperf's",
                       None)]
    share = ours.median_s / pyperf.median_s
    return [Target("pair", "ratio spread vs pyperf's",
                   f"{ours.spread:.3f}x vs {pyperf.spread:.3f}x ({ours.label})", "<= pyperf's",
                   ours.spread <= pyperf.spread),
            Target("pair", "time per rerun vs pyperf's",
                   f"{ours.median_s:.1f} s vs {pyperf.median_s:.1f} s ({share:.2f}x)",
                   f"<= {MAX_ANCHOR_TIME_FRACTION:.2f}x", share <= MAX_ANCHOR_TIME_FRACTION)]


# --- the report ---------------------------------------------------------------------------

def fmt_load(load: Sequence[float]) -> str:
    return " ".join(f"{v:.2f}" for v in load)


def print_spec(result: SpecResult, pair_side: PairSide | None) -> None:
    """The runs of one spec and their reproducibility."""
    runs, rev, spreads = result.runs, result.reversals, result.spreads
    print(f"\n== {result.spec}: {len(runs)} runs ==")
    print(f"{'run':>3}  {'sweep':<22} {'exit':>4} {'wall s':>7} {'cells ok':>9} "
          f"{'ranked':>6} {'samples/cell':>12} {'claims':>6} {'reversed':>8}")
    for run, made, back in zip(runs, rev.per_run, rev.reversed_per_run):
        samples = "-" if run.samples_per_cell is None else f"{run.samples_per_cell:g}"
        print(f"{run.index:>3}  {run.sweep_id:<22} {run.exit_code:>4} {run.wall_s:>7.1f} "
              f"{f'{run.cells_ok}/{run.cells}':>9} {len(run.standings):>6} {samples:>12} "
              f"{made:>6} {back:>8}")
    print(f"claims            {rev.made} over {len(runs)} runs (median {result.claims_per_run:g}"
          f" per run, {result.held_per_run:g} that no other run reversed), {rev.distinct} "
          "distinct")
    print(f"reversed          {rev.reversed} of {rev.made} claims by another run "
          f"({rev.reversed_fraction:.2%}); distinct {rev.reversed_distinct} of {rev.distinct}")
    print(f"ratio to fastest  (from {runs[0].ratio_source}) spread max/min across runs over "
          f"{len(spreads.by_member)} members: median {spreads.median:.3f}x, max "
          f"{spreads.max:.3f}x")
    if spreads.worst:
        group, member = spreads.worst
        print(f"                  widest: {' '.join(group)} {member}")
    capture = result.capture
    if capture.pairs:
        print(f"intervals         a run's interval held another run's ratio in {capture.held} of "
              f"{capture.pairs} ({capture.rate:.1%}; honest 95% intervals: about "
              f"{CAPTURE_EXPECTED:.0%})")
    for kind in result.kinds():
        shift = "-" if kind.shift_sd is None else f"{kind.shift_sd:.2%}"
        held = "" if not kind.capture.pairs else f"; intervals held a rerun {kind.capture.rate:.1%}"
        print(f"{kind.name:<17} {kind.members}: a run's shift they share, sd {shift}{held}")
    varied, members = result.loops_varied
    if members:
        print(f"loop counts       differed between runs for {varied} of {members} members")
    walls = [r.wall_s for r in runs]
    print(f"time per sweep    median {result.sweep_s:.1f} s (min {min(walls):.1f}, max "
          f"{max(walls):.1f})")
    if pair_side:
        ratios = " ".join(f"{r:.3f}" for r in pair_side.ratios)
        print(f"anchor pair       b/a per run {ratios}: spread {pair_side.spread:.3f}x; "
              f"the pair cells' duration_s {pair_side.median_s:.2f} s")
    print(f"load average      before {fmt_load(result.load_before)}, after "
          f"{fmt_load(result.load_after)}")
    if result.block_spread is not None:
        print(f"host noise        a pair's block estimate moved by {result.block_spread:.1%} "
              "(sd across blocks, median over members and runs; a run's spread scales with it)")
    floor = result.floor
    if floor is not None:
        print(f"floor             the blocks' own noise alone predicts a median spread of "
              f"{floor.median:.3f}x [{floor.median_band[0]:.3f}, {floor.median_band[1]:.3f}] and a "
              f"max of {floor.max:.3f}x [{floor.max_band[0]:.3f}, {floor.max_band[1]:.3f}]; a "
              f"median of {MAX_MEDIAN_SPREAD:.2f}x needs "
              f"{samples_for(floor.median, MAX_MEDIAN_SPREAD):.1f}x the samples, a max of "
              f"{MAX_MAX_SPREAD:.2f}x {samples_for(floor.max, MAX_MAX_SPREAD):.1f}x")


def print_anchor(pair: Pair, sides: Sequence[PairSide]) -> None:
    a, b = pair.members
    print(f"\n== anchor: {pair.kernel} {pair.shape} {pair.dtype}, ratio b/a ==\n"
          f"a = {a}\nb = {b}")
    print(f"{'method':<34} {'reruns':>6}  {'ratio per rerun':<30} {'spread':>7} "
          f"{'s per rerun':>11}")
    for side in sides:
        ratios = " ".join(f"{r:.3f}" for r in side.ratios)
        print(f"{side.label:<34} {len(side.ratios):>6}  {ratios:<30} {side.spread:>6.3f}x "
              f"{side.median_s:>11.2f}")


def print_targets(targets: Sequence[Target]) -> None:
    print("\n== targets (issue 14 item 7) ==")
    for t in targets:
        verdict = "n/a" if t.passed is None else ("PASS" if t.passed else "FAIL")
        print(f"{t.scope:<8} {t.name:<34} {t.value:<44} {t.goal:<16} {verdict}")


# --- saved numbers and the command line ---------------------------------------------------

def run_json(run: SweepRun) -> dict:
    data = asdict(run)
    data["standings"] = [asdict(s) | asdict(d) for s, d in zip(run.standings, run.details)]
    del data["details"]
    return data


def spec_json(result: SpecResult) -> dict:
    """Everything about one spec's runs (what :func:`load_baselines` reads back)."""
    return {"spec": result.spec, "name": result.name, "claims_per_run": result.claims_per_run,
            "held_per_run": result.held_per_run,
            "sweep_s": result.sweep_s, "samples_per_cell": result.samples_per_cell,
            "reversals": asdict(result.reversals) | {"made": result.reversals.made,
                                                     "reversed": result.reversals.reversed},
            "spread_median": result.spreads.median, "spread_max": result.spreads.max,
            "block_spread": result.block_spread, "loops_varied": result.loops_varied,
            "kinds": [asdict(k) | {"capture_rate": k.capture.rate} for k in result.kinds()],
            "floor": None if result.floor is None else asdict(result.floor),
            "capture": asdict(result.capture) | {"rate": result.capture.rate},
            "spreads": [{"group": list(g), "member": m, "spread": v}
                        for (g, m), v in result.spreads.by_member.items()],
            "load_before": result.load_before, "load_after": result.load_after,
            "runs": [run_json(r) for r in result.runs]}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run specs K times as a user would; print how reproducible they are.")
    parser.add_argument("specs", nargs="+", type=Path, help="sweep specs (TOML)")
    parser.add_argument("-k", "--runs", type=int, default=5, help="runs per spec (default 5)")
    parser.add_argument("--local", action="store_true", help="pass --local to gradsweep run")
    parser.add_argument("--workers", type=int, help="pass --workers N to gradsweep run")
    parser.add_argument("--python", default=sys.executable,
                        help="python that runs gradsweep (default: this one)")
    parser.add_argument("--cwd", type=Path, default=Path.cwd(),
                        help="directory the runs start in (default: this one)")
    parser.add_argument("--pythonpath", help="PYTHONPATH of the runs ('' to unset; "
                        "default: inherited)")
    parser.add_argument("--results-root", type=Path,
                        help="keep every run's results and logs here (default: a temporary "
                        "directory, removed at the end unless a run fails)")
    parser.add_argument("--pyperf-reruns", type=int, default=PYPERF_RERUNS,
                        help=f"pyperf anchor reruns (default {PYPERF_RERUNS}; 0 skips pyperf)")
    parser.add_argument("--pair-runs", type=int,
                        help="sweeps of the pair spec for the anchor (default: as many as "
                        "--pyperf-reruns, so that the two spreads are ranges of equally many "
                        "reruns)")
    add_pair_args(parser)
    parser.add_argument("--baseline", type=Path, help="a saved --json of today's code")
    parser.add_argument("--json", type=Path, help="save the raw numbers here")
    parser.add_argument("--one-store", action="store_true",
                        help="every run of a spec into one results directory, as a user "
                             "rerunning into results/ (loop counts carry over); default: "
                             "each run its own, as on a fresh machine")
    args = parser.parse_args(argv)
    problems = [f"spec {s}: not a file" for s in args.specs if not s.is_file()]
    problems += [f"--{n} must be >= {lo}" for n, v, lo in (
        ("runs", args.runs, 2), ("pyperf-reruns", args.pyperf_reruns, 0),
        ("pair-runs", args.pair_runs or 0, 0), ("workers", args.workers or 1, 1)) if v < lo]
    if not args.cwd.is_dir():
        problems.append(f"--cwd {args.cwd}: not a directory")
    if shutil.which(args.python) is None:
        problems.append(f"--python {args.python}: not an executable")
    if args.baseline is not None and not args.baseline.is_file():
        problems.append(f"--baseline {args.baseline}: not a file")
    try:
        pair_of(args).dims()
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        parser.error("; ".join(problems))
    return args


def checkout_of(args: argparse.Namespace) -> Checkout:
    env = dict(os.environ)
    if args.pythonpath is not None:
        env.pop("PYTHONPATH", None)
        if args.pythonpath:
            env["PYTHONPATH"] = args.pythonpath
    run_args = (("--local",) if args.local else ()) + (
        ("--workers", str(args.workers)) if args.workers else ())
    return Checkout(args.python, str(args.cwd.resolve()), tuple(sorted(env.items())), run_args)


def measure_all(args: argparse.Namespace, root: Path) -> tuple[list[SpecResult], Anchor | None]:
    """Every spec's runs, then the anchor (unless both its counts are 0)."""
    checkout = checkout_of(args)
    specs = [s.resolve() for s in args.specs]
    results = [measure_spec(checkout, spec, root, args.runs, args.one_store) for spec in specs]
    pair_runs = args.pyperf_reruns if args.pair_runs is None else args.pair_runs
    anchor = None
    if args.pyperf_reruns or pair_runs:
        anchor = measure_anchor(checkout, pair_of(args), specs[0], root, args.pyperf_reruns,
                                pair_runs)
    return results, anchor


def report(args, info, results, anchor, started) -> tuple[list[Target], dict]:
    """Print everything; return the targets and the JSON-able record."""
    pair = pair_of(args)
    print(f"reproducibility benchmark, {started:%Y-%m-%d %H:%M} UTC; runs: {args.python} -m "
          f"gradsweep run SPEC {' '.join(checkout_of(args).run_args)} (cwd {args.cwd})")
    print("machine: " + machine_line(info))
    children = {json.dumps(r.runs[0].environment, sort_keys=True) for r in results}
    print("runs' environment (cells table): " + "; ".join(children))
    baselines = load_baselines(args.baseline) if args.baseline else {}
    targets: list[Target] = []
    sides = []
    for result in results:
        side = pair_in_runs(pair, result.runs, f"gradsweep ({result.name}, in spec)", False)
        sides += [side] if side else []
        print_spec(result, side)
        targets += spec_targets(result, baselines.get(result.name))
    if anchor:
        ours = anchor.gradsweep_side
        sides = ([anchor.pyperf_side] if anchor.pyperf else []) + ([ours] if ours else []) \
            + sides
        print_anchor(pair, sides)
        if anchor.pyperf:
            targets += anchor_targets(anchor.pyperf_side, ours or (sides[1:] or [None])[0])
    print_targets(targets)
    record = {"date": started.isoformat(), "machine": info, "args": sys.argv[1:],
              "specs": [spec_json(r) for r in results],
              "anchor": None if anchor is None else {
                  "pair": asdict(pair), "pyperf": [asdict(r) for r in anchor.pyperf],
                  "pair_runs": [run_json(r) for r in anchor.runs]},
              "pair_sides": [asdict(s) | {"spread": s.spread, "median_s": s.median_s}
                             for s in sides],
              "targets": [asdict(t) for t in targets]}
    return targets, record


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [RANKING_MODE]:
        Path(argv[3]).write_text(json.dumps(ranking_rows(argv[1], argv[2],
                                                         argv[4:5] == [NEWEST])))
        return 0
    args = parse_args(argv)
    started, info = datetime.now(UTC), machine()
    load_before = os.getloadavg()
    root = args.results_root or Path(tempfile.mkdtemp(prefix="repro-"))
    try:
        results, anchor = measure_all(args, root)
    except (RunFailed, ValueError) as exc:
        print(f"error: {exc}\n(results and logs kept in {root})", file=sys.stderr)
        return 2
    info = info | {"load before": fmt_load(load_before), "load after": fmt_load(os.getloadavg())}
    targets, record = report(args, info, results, anchor, started)
    if args.json:
        args.json.write_text(json.dumps(record, indent=1, default=str))
    if args.results_root is None:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if any(t.passed is False for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
