"""Time two variants of one cell with pyperf at its defaults: the anchor of reproducibility.py.

    python tests/benchmarks/pyperf_pair.py -o pair.json [--kernel rnn] [--dtype float64]
        [--shape N=16,T=32,D=32,H=64] [--a buffers=list,wgrad=step,clip=none]
        [--b buffers=prealloc,wgrad=batched,clip=none] [pyperf options]

Each variant's case is built as gradsweep builds it (``gradsweep.worker.prepare``
of a ``Cell`` with 1 BLAS thread, seed 0 and the default clip settings) and
checked against the float64 reference; then ``pyperf.Runner.bench_func`` times
its backward call at pyperf's defaults (20 worker processes, 1 warmup and 3
values each, loops calibrated so that a value lasts at least 100 ms), variant a
first, then b, and ``-o`` writes both benchmarks to one JSON file. The ratio
``pyperf compare_to`` would report is ``mean(b) / mean(a)`` (:func:`mean_ratio`).

pyperf re-runs this script for every worker process, passing the pair options
on (``add_cmdline_args``); the workers inherit PYTHONPATH (pyperf's default),
so they import the same gradsweep as this process.
"""

from __future__ import annotations

from dataclasses import dataclass

#: BLAS threads of the timed call, as in a gradsweep cell with ``threads = 1``.
THREADS = 1
SEED = 0
CLIP_VALUE = 1.0
CLIP_NORM = 5.0
#: Environment variables that change OpenBLAS's kernels: passed on to pyperf's workers
#: (which otherwise get a minimal environment) when set.
BLAS_ENVIRON = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class Pair:
    """Two members of one group: what the anchor times and compares (ratio b / a)."""

    kernel: str = "rnn"
    shape: str = "N=16,T=32,D=32,H=64"
    dtype: str = "float64"
    a: str = "buffers=list,wgrad=step,clip=none"
    b: str = "buffers=prealloc,wgrad=batched,clip=none"

    def member(self, axes: str) -> str:
        """The canonical variant name of ``axes`` (``kernel/`` added unless present)."""
        return axes if "/" in axes else f"{self.kernel}/{axes}"

    @property
    def members(self) -> tuple[str, str]:
        return self.member(self.a), self.member(self.b)

    def dims(self) -> dict[str, int]:
        """``shape`` as {dim: size}; ValueError naming a malformed item."""
        dims = {}
        for item in self.shape.split(","):
            name, sep, value = item.partition("=")
            if not sep or not value.strip().isdigit():
                raise ValueError(f"--shape item {item!r}: expected DIM=INTEGER")
            dims[name.strip()] = int(value)
        return dims


def add_pair_args(parser, pair: Pair = Pair()) -> None:
    """The pair's options (defaults from ``pair``) on an argparse parser."""
    what = {"kernel": "kernel of the pair", "shape": "its dims, DIM=N,...",
            "dtype": "its dtype", "a": "member a (axes, or a full variant name)",
            "b": "member b; the ratio is b / a"}
    for name, text in what.items():
        parser.add_argument(f"--{name}", default=getattr(pair, name),
                            help=f"{text} (default {getattr(pair, name)})")


def pair_of(args) -> Pair:
    return Pair(args.kernel, args.shape, args.dtype, args.a, args.b)


def prepared_call(pair: Pair, variant: str):
    """The backward call of ``variant`` on ``pair``'s case, checked against the reference.

    Raises
    ------
    SystemExit
        With a one-line message when the variant is incorrect.
    """
    from gradsweep import worker
    from gradsweep.impls.registry import load
    from gradsweep.records import Cell

    kernel = load(()).kernel(pair.kernel)
    shape = tuple(kernel.full_shape(pair.dims()).items())
    cell = Cell(pair.kernel, variant, shape, pair.dtype, THREADS, SEED, CLIP_VALUE, CLIP_NORM)
    prepared, err = worker.prepare(cell)
    problem = worker.correctness_error(err, pair.dtype)
    if problem:
        raise SystemExit(f"{variant}: {problem}")
    return prepared.call


def mean_ratio(path: str, a: str, b: str) -> tuple[float, float, float]:
    """``(mean_a, mean_b, mean_b / mean_a)`` in seconds from a pyperf JSON file.

    The ratio of means is what ``pyperf compare_to`` prints as "x.xx slower/faster".
    """
    import pyperf

    suite = pyperf.BenchmarkSuite.load(path)
    mean_a, mean_b = suite.get_benchmark(a).mean(), suite.get_benchmark(b).mean()
    return mean_a, mean_b, mean_b / mean_a


def main() -> None:
    import os

    import pyperf
    from threadpoolctl import threadpool_limits

    def pass_on(cmd, args) -> None:
        for field in ("kernel", "shape", "dtype", "a", "b"):
            cmd.extend((f"--{field}", getattr(args, field)))

    runner = pyperf.Runner(add_cmdline_args=pass_on)
    add_pair_args(runner.argparser)
    args = runner.parse_args()
    blas = [name for name in BLAS_ENVIRON if name in os.environ]
    args.inherit_environ = [*(args.inherit_environ or []), *blas]
    pair = pair_of(args)
    calls = {variant: prepared_call(pair, variant) for variant in pair.members}
    # after prepare: threadpoolctl limits only the BLAS libraries already loaded
    limits = threadpool_limits(THREADS)  # noqa: F841 (kept for the process's life)
    for variant, call in calls.items():
        runner.bench_func(variant, call)


if __name__ == "__main__":
    main()
