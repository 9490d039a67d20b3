"""Do the blocks forked from one server share its bias? (docs/noise.md, "One fork server per run?")

A benchmark script, not a test (pytest does not collect it). From the repository root::

    python tests/benchmarks/fork_servers.py                     # gru float64 of quick.toml
    python tests/benchmarks/fork_servers.py jobs/quick.toml --kernel lstm --dtype float64 \
        --sets 8 --servers 4 --blocks 6 --json servers.json

A sweep's worker forks every block of a run from one fork server
(``executors.node``): the blocks share the server's heap and address-space
layout, which a new interpreter would draw afresh. If that shared state biased a
member, a run's blocks would agree with each other more than with another run's,
and the run's interval would not cover what the next run measures.

This starts ``--servers`` fork servers at once (as ``node.block_processes`` does,
the peers' libraries loaded), deals the group's blocks to them in turn, each block
as a sweep runs it (``node.run_block_in_process``: verified, calibrated once per
group, shuffled primed rounds), ``--blocks`` per server, and repeats with new
servers ``--sets`` times. Servers of one set run interleaved, so the host's drift
over minutes reaches them alike; the one-way analysis of variance of each member's
block log-ratio (to the group's first member, by name) between servers of a set
against blocks within a server then measures the server's own share: its standard
deviation and the F ratio (Snedecor's F on (sets x (servers - 1), servers x sets x
(blocks - 1)) degrees of freedom; p from scipy).

Uses multiprocessing's private forkserver singleton (swapped per block), so it is
tied to CPython's ``multiprocessing.forkserver`` (3.11-3.13).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import multiprocessing.forkserver as mpf  # noqa: E402

import numpy as np  # noqa: E402
from layout_noise import with_malloc_env  # noqa: E402
from repro_metrics import unit_share  # noqa: E402
from reproducibility import machine, machine_line  # noqa: E402

from gradsweep import worker  # noqa: E402
from gradsweep.executors import node  # noqa: E402
from gradsweep.records import Group, SweepSpec, groups_of  # noqa: E402
from gradsweep.spec import expand, load_spec  # noqa: E402

#: The module-level names multiprocessing binds to its one ForkServer instance.
FORKSERVER_NAMES = ("ensure_running", "get_inherited_fds", "connect_to_new_process",
                    "set_forkserver_preload")
#: Seconds a block may take before it counts as hung.
BLOCK_LIMIT_S = 300.0


def use(server: mpf.ForkServer) -> None:
    """Make ``server`` the one the next block is forked from."""
    mpf._forkserver = server
    for name in FORKSERVER_NAMES:
        setattr(mpf, name, getattr(server, name))


def block_log_ratios(rows, ref: str | None = None) -> dict[str, float]:
    """Each member's median paired log-ratio to ``ref`` (a variant; by default the first
    member by name), in one block; ``ref`` itself is 0."""
    by = {r.variant: r for r in rows if r.status == "ok"}
    reference = by[ref or sorted(by)[0]]
    base = dict(zip(reference.sample_round, reference.samples_ns))
    out = {}
    for variant, r in by.items():
        pairs = [np.log(t / base[k]) for k, t in zip(r.sample_round, r.samples_ns) if k in base]
        out[variant] = float(np.median(pairs))
    return out


def one_set(group: Group, settings, loops: worker.LoopCounts, servers: int,
            blocks: int) -> list[list[dict[str, float]]]:
    """``servers`` fork servers alive at once, ``blocks`` blocks each, dealt in turn."""
    started, context = [], None
    for _ in range(servers):
        use(mpf.ForkServer())
        context = node.block_processes((), node.peer_modules(group.members))
        started.append(mpf._forkserver)
    tasks = worker.block_tasks([group], settings)
    out: list[list[dict[str, float]]] = [[] for _ in range(servers)]
    try:
        for k in range(servers * blocks):
            use(started[k % servers])
            task = loops.given(tasks[k % len(tasks)])
            got = node.run_block_in_process(context, task, settings, (), {}, node="local",
                                            limit_s=BLOCK_LIMIT_S)
            loops.learn(task, got.rows)
            out[k % servers].append(block_log_ratios(got.rows))
    finally:
        for server in started:
            server._stop()
    return out


def group_arguments(parser: argparse.ArgumentParser, kernel: str, dtype: str) -> None:
    """The spec and the group (kernel, dtype) a one-group benchmark measures."""
    parser.add_argument("spec", nargs="?", type=Path, default=Path("jobs/quick.toml"))
    parser.add_argument("--kernel", default=kernel)
    parser.add_argument("--dtype", default=dtype)


def spec_group(args: argparse.Namespace) -> tuple[SweepSpec, Group]:
    """``args.spec`` loaded, and its group of ``args.kernel`` and ``args.dtype`` (its first
    such shape)."""
    spec = load_spec(args.spec)
    group = next((g for g in groups_of(expand(spec).cells)
                  if (g.members[0].kernel, g.members[0].dtype) == (args.kernel, args.dtype)),
                 None)
    if group is None:
        raise SystemExit(f"{args.spec}: no group of kernel {args.kernel!r}, dtype {args.dtype!r}")
    return spec, group


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group_arguments(parser, "gru", "float64")
    parser.add_argument("--sets", type=int, default=8, help="sets of servers (8)")
    parser.add_argument("--servers", type=int, default=4, help="servers alive at once (4)")
    parser.add_argument("--blocks", type=int, default=6, help="blocks per server (6)")
    parser.add_argument("--json", type=Path, help="save every block's log-ratios here")
    args = parser.parse_args()
    if min(args.sets, args.servers - 1, args.blocks - 1) < 1:
        parser.error("need --sets >= 1, --servers >= 2 and --blocks >= 2")
    return args


def main() -> None:
    with_malloc_env()
    args = parse()
    spec, group = spec_group(args)
    loops = worker.LoopCounts(spec.measure.repeats)
    sets = []
    for i in range(args.sets):
        sets.append(one_set(group, spec.measure, loops, args.servers, args.blocks))
        print(f"set {i + 1}/{args.sets} done", file=sys.stderr, flush=True)
    print("machine: " + machine_line())
    members = sorted(sets[0][0][0])
    print(f"{args.kernel} {args.dtype} {group.members[0].shape_text}: {args.sets} sets x "
          f"{args.servers} servers x {args.blocks} blocks; log-ratio to {members[0]}")
    for member in members[1:]:
        share = unit_share([[[b[member] for b in server] for server in s] for s in sets])
        print(f"  {member.split('/', 1)[1]:45s} sd within a server {share['sd_within']:.2%}, "
              f"between servers {share['sd_unit']:.2%}, F {share['F']:.2f} "
              f"(df {share['df'][0]}, {share['df'][1]}), p {share['p']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "args": vars(args) | {
            "spec": str(args.spec), "json": str(args.json)}, "sets": sets}))


if __name__ == "__main__":
    main()
