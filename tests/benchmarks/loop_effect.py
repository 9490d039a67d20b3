"""Does a loop count move a member's ratio, and how far does a group drift in a minute?

A benchmark script, not a test (pytest does not collect it). From the repository root::

    python tests/benchmarks/loop_effect.py                      # lstm float32's torch peer
    python tests/benchmarks/loop_effect.py jobs/quick.toml --kernel gru --dtype float64 \
        --member buffers=list,wgrad=step --pairs 20 --json loops.json

A group's first block calibrates each member's loop count and its later blocks take
it (``worker.LoopCounts``), so a member near a doubling boundary is timed at L loops
in one run and 2L in the next. If its time per call depended on L, that would be a
bias every block of a run shares, which no number of blocks averages out.

This forks the group's blocks from one fork server (as a sweep's worker does, the
workers' malloc settings on), lets the first block calibrate, then runs ``--pairs``
pairs of blocks in which only ``--member``'s loop count differs: its calibrated L in
one, ``--factor`` x L in the other, in a random order within each pair. Each block's
estimate is the median of the member's paired log-ratios to a reference member (the
first other member by name), as the ranking takes a block. Prints the paired
difference per pair with its 95% t interval (the loop count's own effect), and every
member's block log-ratio by quarter of the elapsed time (the group's drift over the
minute or so a sweep lasts: what a rerun minutes later meets).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import scipy.stats as sps  # noqa: E402
from fork_servers import block_log_ratios, group_arguments, spec_group  # noqa: E402
from layout_noise import with_malloc_env  # noqa: E402
from reproducibility import machine, machine_line  # noqa: E402

from gradsweep import worker  # noqa: E402
from gradsweep.executors import node  # noqa: E402
from gradsweep.records import Group  # noqa: E402

#: Seconds a block may take before it counts as hung.
BLOCK_LIMIT_S = 300.0
#: Parts of the elapsed time the drift is shown in.
QUARTERS = 4


@dataclass(frozen=True)
class PairedBlock:
    """One block of a pair: whether the member's loop count was scaled, when it ended
    (seconds since the first pair began) and each member's block log-ratio to the
    reference member (:func:`fork_servers.block_log_ratios`, the reference left out)."""

    pair: int
    scaled: bool
    t: float
    log_ratios: dict[str, float]


def run_pairs(group: Group, settings, member: str, pairs: int, factor: int,
              seed: int) -> tuple[list[PairedBlock], dict[str, int]]:
    """Calibrate in a first block, then ``pairs`` pairs of blocks differing only in
    ``member``'s loop count. Returns each block's record and the calibrated counts."""
    context = node.block_processes((), node.peer_modules(group.members))
    tasks = worker.block_tasks([group], settings)
    first = node.run_block_in_process(context, tasks[0], settings, (), {}, node="local",
                                      limit_s=BLOCK_LIMIT_S).rows
    calibrated = {r.cell_id: int(r.loops) for r in first if r.status == "ok"}
    target = next(c.cell_id for c in group.members if c.variant == member)
    ref = sorted(c.variant for c in group.members if c.variant != member)[0]
    rng, t0, blocks = np.random.default_rng(seed), time.monotonic(), []
    for k in range(pairs):
        for scaled in rng.permutation([False, True]):
            loops = {**calibrated, target: calibrated[target] * (factor if scaled else 1)}
            task = replace(tasks[len(blocks) % len(tasks)], loops=tuple(loops.items()))
            rows = node.run_block_in_process(context, task, settings, (), {}, node="local",
                                             limit_s=BLOCK_LIMIT_S).rows
            ratios = block_log_ratios(rows, ref)
            del ratios[ref]
            blocks.append(PairedBlock(k, bool(scaled), time.monotonic() - t0, ratios))
    return blocks, {c.variant: calibrated[c.cell_id] for c in group.members}


def loop_effect(blocks: list[PairedBlock], member: str) -> tuple[float, float, float]:
    """Mean paired difference (scaled - calibrated) of ``member``'s block log-ratio, and
    its 95% t interval."""
    by_pair: dict[int, dict[bool, float]] = {}
    for b in blocks:
        by_pair.setdefault(b.pair, {})[b.scaled] = b.log_ratios[member]
    d = np.array([p[True] - p[False] for p in by_pair.values()])
    half = sps.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def drift_lines(blocks: list[PairedBlock], member: str) -> list[str]:
    """Each member's median block log-ratio per quarter of the elapsed time (``member``'s
    scaled blocks left out, so its loop count does not pass for drift)."""
    lines = []
    for variant in sorted(blocks[0].log_ratios):
        kept = [b for b in blocks if not (variant == member and b.scaled)]
        parts = np.array_split(np.array([b.log_ratios[variant] for b in kept]),
                               min(QUARTERS, len(kept)))
        medians = " ".join(f"{np.median(p):+.3f}" for p in parts)
        lines.append(f"  {variant.split('/', 1)[1]:45s} {medians}   "
                     f"(max - min {np.ptp([np.median(p) for p in parts]):.1%})")
    return lines


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group_arguments(parser, "lstm", "float32")
    parser.add_argument("--member", default="peer=torch",
                        help="the member whose loop count changes (its axes, as in the table)")
    parser.add_argument("--pairs", type=int, default=20, help="pairs of blocks (20)")
    parser.add_argument("--factor", type=int, default=2, help="loop count multiplier (2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="save every block's log-ratios here")
    args = parser.parse_args()
    if args.pairs < 2 or args.factor < 2:
        parser.error("need --pairs >= 2 and --factor >= 2")
    return args


def main() -> None:
    with_malloc_env()
    args = parse()
    spec, group = spec_group(args)
    member = f"{args.kernel}/{args.member}"
    if member not in {c.variant for c in group.members}:
        raise SystemExit(f"no member {member!r} in {args.kernel} {args.dtype}")
    blocks, calibrated = run_pairs(group, spec.measure, member, args.pairs, args.factor,
                                   args.seed)
    mean, low, high = loop_effect(blocks, member)
    loops = calibrated[member]
    print("machine: " + machine_line())
    print(f"{args.kernel} {args.dtype} {group.members[0].shape_text}: {args.pairs} pairs of "
          f"blocks, {blocks[-1].t:.0f} s; loops calibrated {calibrated}")
    print(f"{args.member} at {loops * args.factor} loops against {loops}: "
          f"{np.expm1(mean):+.2%} [{np.expm1(low):+.2%}, {np.expm1(high):+.2%}] per call")
    print(f"block log-ratio to the reference, by quarter of the {blocks[-1].t:.0f} s:")
    print("\n".join(drift_lines(blocks, member)))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "calibrated": calibrated,
                                         "args": vars(args) | {"spec": str(args.spec),
                                                               "json": str(args.json)},
                                         "blocks": [asdict(b) for b in blocks]}))


if __name__ == "__main__":
    main()
