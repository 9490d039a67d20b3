"""How fast the machine's speed moves under one process's calls (docs/noise.md).

A benchmark script, not a test (pytest does not collect it). From the repository root::

    python tests/benchmarks/speed_trace.py                      # lstm float32 of quick.toml
    python tests/benchmarks/speed_trace.py jobs/quick.toml --kernel rnn --dtype float64 \
        --rounds 400 --json trace.json

One process measures one group of the spec as a block does (``ratio_drift.measuring``:
verified, calibrated, warmed up, BLAS on one thread, GC paused), ``--rounds``
shuffled rounds with each sample primed, but times every call of a sample on its
own (CPU clock). Each call's speed is its log time less its member's median log
time. Prints how far a single call's speed moves, its autocorrelation at lags of
1 to 200 calls (with their length in ms), and per member against the group's
fastest numpy member: the sd of the paired log-ratio of one round and of a block's
median over ``--block-rounds`` (5) rounds, the figure a sweep's 8 blocks average.

What it tells: whether the noise under a sweep is a speed common to all members
(pairing within a round would cancel it: the paired sd far below the calls' sd),
how long it lasts (lags), and so how many samples a given spread across runs
costs on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from layout_noise import with_malloc_env  # noqa: E402
from ratio_drift import measuring  # noqa: E402
from repro_metrics import autocorrelation  # noqa: E402
from reproducibility import machine_line  # noqa: E402

from gradsweep import measure  # noqa: E402

#: Autocorrelation lags reported, in calls.
LAGS = (1, 2, 5, 10, 20, 50, 100, 200)
BLOCK_ROUNDS = 5
NS_PER_MS = 1e6


def trace(members, rounds: int, seed: int) -> np.ndarray:
    """Shuffled rounds, every call timed on its own.

    Returns
    -------
    ndarray, shape (calls, 4)
        Per call: round, member index, wall start (ns), CPU ns.
    """
    cpu, rng, rows = measure.cpu_clock(1), np.random.default_rng(seed), []
    for r in range(rounds):
        for i in rng.permutation(len(members)):
            m = members[i]
            m.call()  # primed, as measure.timed_sample(primed=True)
            for _ in range(m.loops):
                start, c0 = time.perf_counter_ns(), cpu()
                m.call()
                rows.append((r, i, start, cpu() - c0))
    return np.array(rows, dtype=float)


def speeds(member: np.ndarray, cpu_ns: np.ndarray) -> np.ndarray:
    """Each call's log time less its member's median log time, shape (calls,)."""
    log_t = np.log(cpu_ns)
    idx = member.astype(int)
    medians = np.array([np.median(log_t[idx == i]) for i in range(idx.max() + 1)])
    return log_t - medians[idx]


def round_means(rounds: np.ndarray, member: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Per round and member, the mean of the member's calls' ``z``: shape (rounds, members)."""
    r, m = rounds.astype(int), member.astype(int)
    out = np.zeros((r.max() + 1, m.max() + 1))
    counts = np.zeros_like(out)
    np.add.at(out, (r, m), z)
    np.add.at(counts, (r, m), 1)
    return out / counts


def paired_spread(per_round: np.ndarray, a: int, ref: int,
                  block_rounds: int = BLOCK_ROUNDS) -> tuple[float, float]:
    """sd of the paired log-ratio ``a`` / ``ref`` of one round, and of a block's median
    over ``block_rounds`` consecutive rounds."""
    d = per_round[:, a] - per_round[:, ref]
    n = len(d) // block_rounds * block_rounds
    blocks = np.median(d[:n].reshape(-1, block_rounds), axis=1)
    return float(np.std(d, ddof=1)), float(np.std(blocks, ddof=1))


def report(names: list[str], calls: np.ndarray, block_rounds: int) -> str:
    rounds, member, start, cpu_ns = calls.T
    z = speeds(member, cpu_ns)
    ms_per_call = float(np.median(np.diff(start))) / NS_PER_MS
    lines = [f"{len(z)} calls over {(start[-1] - start[0]) / 1e9:.1f} s, {ms_per_call:.2f} ms "
             f"per call; a call's speed (log time less its member's median): sd "
             f"{np.std(z) * 100:.1f}%", "autocorrelation of the speed, lag in calls (~ms):"]
    lines += [f"  {lag:4d} (~{lag * ms_per_call:.0f} ms)  {autocorrelation(z, lag):.2f}"
              for lag in LAGS if lag < len(z) // 4]
    per_round = round_means(rounds, member, z)
    ms = [float(np.median(cpu_ns[member == i])) / NS_PER_MS for i in range(len(names))]
    numpy_members = [i for i, n in enumerate(names) if not n.startswith("peer=")]
    ref = min(numpy_members or range(len(names)), key=lambda i: ms[i])
    lines.append(f"paired log-ratio to {names[ref]} (sd of one round | of a {block_rounds}-"
                 f"round block's median):")
    for i, name in enumerate(names):
        if i != ref:
            one, block = paired_spread(per_round, i, ref, block_rounds)
            lines.append(f"  {name:45s} {ms[i]:7.3f} ms  {one * 100:5.1f}% | {block * 100:5.1f}%")
    return "\n".join(lines)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", type=Path, default=ROOT / "jobs" / "quick.toml")
    parser.add_argument("--kernel", default="lstm")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--block-rounds", type=int, default=BLOCK_ROUNDS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="save every call here")
    return parser.parse_args()


def main() -> None:
    args = parse()
    with_malloc_env()
    with measuring(args.spec, args.kernel, args.dtype) as members:
        names = [m.name for m in members]
        calls = trace(members, args.rounds, args.seed)
    print(machine_line(sep=" | "))
    print(f"{args.kernel} {args.dtype}, {args.spec}: {args.rounds} rounds of "
          f"{len(names)} members")
    print(report(names, calls, args.block_rounds))
    if args.json:
        args.json.write_text(json.dumps({"names": names, "calls": calls.tolist()}))


if __name__ == "__main__":
    main()
