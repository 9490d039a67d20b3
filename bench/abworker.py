"""One side of the paired A/B gate: a worker process that times a cell on command.

``bench.ab`` starts two of these (base and candidate), pinned to the same
core, and drives them over a pipe one sample at a time, so they never run at
once. The file is run by path from the *candidate's* harness, as

    python -c "import runpy; runpy.run_path('<harness>/bench/abworker.py',
               run_name='__main__')" TREE HARNESS CORES

Which code each side runs: the ``bench`` package (the harness: case building,
verification, the clock, summaries) is the candidate's on both sides, so the
two sides are measured by identical code; ``impls`` and the spec's plugins are
imported from TREE (the base revision's worktree, or the working tree), which
is first on ``sys.path`` (and is the cwd, and first on PYTHONPATH). The base
revision need not contain this module. This file imports nothing from
``bench`` at module level, so the path is arranged before any import.

Protocol (``multiprocessing.connection`` frames on stdin and a duplicate of
stdout; the process's own stdout goes to stderr so prints cannot corrupt it):
requests are tuples ``(op, *args)`` (ops ``hello``, ``prepare``, ``calibrate``,
``warmup``, ``sample``, ``finish``, ``quit``), replies ``("ok", value)`` or
``("fail", status, error, max_rel_err)``.
"""

from __future__ import annotations

import os
import sys


def arrange_path(tree: str, harness: str) -> None:
    """Bind ``bench`` to ``harness``, then put ``tree`` first for everything else."""
    sys.path[:] = [p for p in sys.path if p not in ("", tree, harness)]
    sys.path.insert(0, harness)
    import bench  # noqa: F401  (the package object now points at the harness)

    sys.path.remove(harness)
    sys.path.insert(0, tree)


def _connections():
    from multiprocessing.connection import Connection

    out_fd = os.dup(1)
    os.dup2(2, 1)  # anything printed goes to stderr
    return Connection(0, writable=False), Connection(out_fd, readable=False)


class Side:
    """The state of one side: the prepared cell, its BLAS limits and its samples."""

    def __init__(self, tree: str):
        from contextlib import ExitStack

        self.tree = tree
        self.limits = ExitStack()
        self.cell = self.prepared = None
        self.samples: list[float] = []

    def serve(self, inbox, outbox) -> None:
        """Answer requests until ``quit`` or the pipe closes."""
        while True:
            try:
                op, *args = inbox.recv()
            except EOFError:
                return
            if op == "quit":
                outbox.send(("ok", None))
                return
            outbox.send(self.handle(op, args))

    def handle(self, op: str, args: list):
        """Run one request; a failing cell is a ``fail`` reply, never a dead worker."""
        from impls.base import SkipCell

        try:
            return "ok", getattr(self, f"op_{op}")(*args)
        except Incorrect as exc:
            return "fail", "incorrect", str(exc), exc.err
        except SkipCell as exc:
            return "fail", "skipped", str(exc), None
        except MemoryError as exc:
            return "fail", "error", f"MemoryError: {exc or 'out of memory'}", None
        except Exception as exc:  # the cell's failure, reported to the driver
            from bench.worker import _error_text

            return "fail", "error", _error_text(exc), None

    def op_hello(self) -> dict:
        """Where this side's code comes from, for the driver to check and record."""
        import bench
        import impls

        return {"bench": bench.__file__, "impls": impls.__file__, "pid": os.getpid(),
                "cores": sorted(os.sched_getaffinity(0))}

    def op_prepare(self, cell, plugins: tuple[str, ...], clock: str = "wall") -> float:
        """Build and verify the cell (worker.prepare); fail ``incorrect`` beyond tolerance.

        ``clock`` times this cell's samples: ``wall`` (``time.perf_counter_ns``, the
        sweeps' clock) or ``cpu`` (``time.process_time_ns``: CPU time of this process,
        which does not count the time it was descheduled for another process).
        """
        import math
        import time

        from bench import measure, worker
        from impls.gradcheck import TOLERANCE

        self.limits.close()
        self.cell, self.prepared, self.samples = cell, None, []
        self.clock_name = clock
        self.clock = time.process_time_ns if clock == "cpu" else time.perf_counter_ns
        self.limits.enter_context(measure.set_threads(cell.threads))
        prepared, err = worker.prepare(cell, plugins)
        tolerance = TOLERANCE[cell.dtype]
        if not math.isfinite(err) or err > tolerance:
            raise Incorrect(f"max_rel_err {err:.3g} exceeds the {cell.dtype} tolerance "
                            f"{tolerance:g}", err)
        self.prepared, self.err = prepared, err
        return err

    def op_calibrate(self, min_time_ns: float) -> int:
        """First call timed alone, then loops by doubling (measure.calibrate_loops)."""
        from bench import measure

        with measure.gc_paused():
            self.first_ns = measure.run_sample(self.prepared.call, 1, self.clock)
            return measure.calibrate_loops(self.prepared.call, min_time_ns, self.clock)

    def op_warmup(self, loops: int, max_warmups: int) -> int:
        """Warmup samples until settled (measure.warm_up)."""
        from bench import measure

        with measure.gc_paused():
            self.warmups, self.settled = measure.warm_up(self.prepared.call, loops, max_warmups,
                                                         self.clock)
        return self.warmups

    def op_sample(self, loops: int) -> float:
        """One untimed call (warms this side's caches after the other side ran), then one
        timed sample of ``loops`` calls; returns and keeps ns per call."""
        from bench import measure

        with measure.gc_paused():
            self.prepared.call()
            ns = measure.run_sample(self.prepared.call, loops, self.clock) / loops
        self.samples.append(ns)
        return ns

    def op_finish(self, loops: int, memory: bool, extra: dict):
        """The cell's CellResult: summary, warnings, memory pass, environment."""
        from bench import env, measure, worker

        timing = measure.summarise(self.samples, loops=loops, warmups=self.warmups,
                                   first_ns=self.first_ns, warmup_settled=self.settled)
        machine = env.collect(self.tree)
        load = env.load_avg()
        warnings = measure.timing_warnings(timing, load_avg=load, cores=machine.cores)
        if self.clock_name == "cpu":
            warnings += (CPU_CLOCK_WARNING,)
        mem = measure.memory_pass(self.prepared.call) if memory else None
        flops = self.prepared.flops
        result = worker.skeleton(
            self.cell, "ok", max_rel_err=self.err, samples_ns=timing.samples_ns, loops=loops,
            warmups=timing.warmups, first_ns=timing.first_ns, median_ns=timing.median_ns,
            mad_ns=timing.mad_ns, ci_low_ns=timing.ci_low_ns, ci_high_ns=timing.ci_high_ns,
            warnings=warnings, load_avg=load, flops=flops,
            gflops=flops / timing.median_ns if timing.median_ns else None,
            peak_bytes=mem.peak_bytes if mem else None,
            retained_bytes=mem.retained_bytes if mem else None,
            alloc_count=mem.alloc_count if mem else None, **extra)
        self.limits.close()
        return with_environment(result, self.tree)


#: Recorded with every cell timed by CPU time (the cells table has no clock column).
CPU_CLOCK_WARNING = ("cpu-clock: samples are this process's CPU time (time.process_time_ns), "
                     "not wall time")


class Incorrect(Exception):
    """The variant's gradients disagree with the reference."""

    def __init__(self, message: str, err: float):
        super().__init__(message)
        self.err = err


def with_environment(result, tree: str):
    """``result`` with the machine and ``tree``'s git state filled in."""
    from dataclasses import replace

    from bench import env

    machine = env.collect(tree)
    return replace(result, node=machine.host, host=machine.host, cpu=machine.cpu,
                   cores=machine.cores, blas=machine.blas, numpy_version=machine.numpy_version,
                   python_version=machine.python_version,
                   openblas_coretype=machine.openblas_coretype, git_commit=machine.git_commit,
                   git_dirty=machine.git_dirty)


def main(argv: list[str]) -> None:
    """Entry: ``TREE HARNESS CORES`` (cores comma-separated), then serve requests."""
    tree, harness, cores = argv
    os.sched_setaffinity(0, {int(c) for c in cores.split(",")})  # before numpy's threads
    arrange_path(tree, harness)
    inbox, outbox = _connections()
    Side(tree).serve(inbox, outbox)


if __name__ == "__main__":
    main(sys.argv[1:])
