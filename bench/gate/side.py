"""One side of the paired A/B gate: a worker process that times a cell on command.

``gradsweep.gate.pairs`` starts two of these (base and candidate), pinned to the
same core, and drives them over a pipe one sample at a time, so they never run
at once. The file is run by path from the *candidate's* harness, as

    python -c "import runpy; runpy.run_path('<harness>/gate/side.py',
               run_name='__main__')" TREE HARNESS CORES

Which code each side runs: the ``gradsweep`` package (the harness: case
building, verification, the clock, summaries) is loaded from HARNESS (the
directory of the driver's own ``gradsweep``) on both sides, so the two sides
are measured by identical code; ``gradsweep.impls`` and the spec's plugins come
from TREE (the base revision's worktree, or the working tree), which is first on
``sys.path`` (and is the cwd, and first on PYTHONPATH). TREE's ``impls`` folder
is imported as ``impls`` and ``gradsweep.impls`` is an alias of it, so a
revision from before the ``gradsweep`` import name (whose kernels import
``gradsweep.impls.base``) and a newer one (``gradsweep.impls.base``) both load one copy of
their own kernels. This file imports nothing from ``gradsweep`` at module level,
so the path is arranged before any import.

Protocol (``multiprocessing.connection`` frames on stdin and a duplicate of
stdout; the process's own stdout goes to stderr so prints cannot corrupt it):
requests are tuples ``(op, *args)`` (ops ``hello``, ``prepare``, ``calibrate``,
``warmup``, ``sample``, ``finish``, ``quit``), replies ``("ok", value)`` or
``("fail", status, error, max_rel_err)``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys

#: The kernels' package inside the harness, served from the side's tree.
IMPLS = "gradsweep.impls"


class ImplsAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``gradsweep.impls[.X]`` as the module ``impls[.X]`` (the tree's)."""

    def find_spec(self, fullname, path, target=None):
        """A spec for names under :data:`IMPLS`, else None (other finders answer)."""
        if fullname == IMPLS or fullname.startswith(IMPLS + "."):
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        """The tree's module of the same relative name."""
        return importlib.import_module("impls" + spec.name[len(IMPLS):])

    def exec_module(self, module) -> None:
        """Nothing: the aliased module is already executed."""


def _load_package(name: str, directory: str) -> None:
    """Import ``directory`` as the package ``name`` (its submodules from there too)."""
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(directory, "__init__.py"), submodule_search_locations=[directory])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def arrange_path(tree: str, harness: str) -> None:
    """Bind ``gradsweep`` to ``harness``, ``impls`` and plugins to ``tree``."""
    sys.path[:] = [p for p in sys.path if p not in ("", tree, harness)]
    sys.path.insert(0, tree)
    sys.meta_path.insert(0, ImplsAlias())
    _load_package("gradsweep", harness)


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
        self.paused = ExitStack()
        self.frozen = False
        self.cell = self.prepared = None
        self.cpu_ns: list[float] = []

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
        from gradsweep.impls.base import SkipCell

        try:
            return "ok", getattr(self, f"op_{op}")(*args)
        except Incorrect as exc:
            return "fail", "incorrect", str(exc), exc.err
        except SkipCell as exc:
            return "fail", "skipped", str(exc), None
        except MemoryError as exc:
            return "fail", "error", f"MemoryError: {exc or 'out of memory'}", None
        except Exception as exc:  # the cell's failure, reported to the driver
            from gradsweep.worker import error_text

            return "fail", "error", error_text(exc), None

    def op_hello(self) -> dict:
        """Where this side's code comes from, for the driver to check and record."""
        import gradsweep
        import gradsweep.impls

        return {"gradsweep": gradsweep.__file__, "impls": gradsweep.impls.__file__,
                "pid": os.getpid(),
                "cores": sorted(os.sched_getaffinity(0))}

    def op_prepare(self, cell, plugins: tuple[str, ...], clock: str, seed: int) -> float:
        """Build and verify the cell (worker.prepare); fail ``incorrect`` beyond tolerance.

        ``clock`` is what this cell's samples rank on: ``cpu`` (CPU time of the
        timing thread, ``measure.cpu_clock``) or ``wall``; both are recorded.
        ``seed`` drives the random offsets of the case and cache between rounds.
        """
        import gc

        import numpy as np

        from gradsweep import measure, worker

        self.paused.close()
        self.limits.close()
        self.cell, self.prepared = cell, None
        self.cpu_ns, self.wall_ns, self.rounds = [], [], []
        self.clock_name = clock
        self.clock = measure.ranking_clock(clock, cell.threads)
        self.cpu = measure.cpu_clock(cell.threads)
        self.rng = np.random.default_rng(seed)
        self.limits.enter_context(measure.set_threads(cell.threads))
        prepared, err = worker.prepare(cell, plugins)
        wrong = worker.correctness_error(err, cell.dtype)
        if wrong:
            raise Incorrect(wrong, err)
        self.prepared, self.err = prepared, err
        if not self.frozen:  # everything imported so far is never garbage: collections
            gc.collect()     # then only scan what the cells made (50-150 ms -> ~1 ms)
            gc.freeze()
            self.frozen = True
        self.paused.enter_context(measure.gc_paused())  # one collection per cell, not per
        return err                                      # sample

    def op_calibrate(self, min_time_ns: float) -> int:
        """First call timed alone, then loops by doubling (measure.calibrate_loops)."""
        from gradsweep import measure

        self.first_ns = float(measure.run_sample(self.prepared.call, 1, self.clock))
        return measure.calibrate_loops(self.prepared.call, min_time_ns, self.clock)

    def op_warmup(self, loops: int, max_warmups: int) -> int:
        """Warmup samples until settled (measure.warm_up)."""
        from gradsweep import measure

        self.warmups, self.settled = measure.warm_up(self.prepared.call, loops, max_warmups,
                                                     self.clock)
        return self.warmups

    def relayout(self) -> None:
        """The case and cache copied to fresh buffers at random offsets (outside the clock,
        as ``worker.run_block`` does between rounds: Stabilizer, Curtsinger & Berger 2013)."""
        from dataclasses import replace

        from gradsweep import measure

        case, state = measure.rematerialise((self.prepared.case, self.prepared.state), self.rng)
        self.prepared = replace(self.prepared, case=case, state=state)

    def op_sample(self, loops: int, round_: int) -> float:
        """Round ``round_``'s sample: a fresh layout (from round 1 on), one untimed call
        (this side's caches warm after the other side ran), then ``loops`` timed calls;
        keeps both clocks and returns ns per call on the ranking clock."""
        from gradsweep import measure

        if round_ > 0:
            self.relayout()
        self.prepared.call()
        cpu_ns, wall_ns = measure.timed_sample(self.prepared.call, loops, self.cpu)
        self.cpu_ns.append(cpu_ns)
        self.wall_ns.append(wall_ns)
        self.rounds.append(round_)
        return cpu_ns if self.clock_name == "cpu" else wall_ns

    def op_finish(self, loops: int, memory: bool, block: int, extra: dict):
        """This side's row for the cell in this process pair (block ``block``): its
        samples with their block and rounds, both clocks, the memory pass if asked."""
        from gradsweep import env, measure, worker

        samples = self.cpu_ns if self.clock_name == "cpu" else self.wall_ns
        timing = measure.summarise(samples, loops=loops, warmups=self.warmups,
                                   first_ns=self.first_ns, warmup_settled=self.settled)
        self.paused.close()
        mem = measure.memory_pass(self.prepared.call) if memory else None
        result = worker.ok_result(
            self.cell, self.err, timing, flops=self.prepared.flops, memory=mem,
            load=env.load_avg(), clock=self.clock_name, cpu_ns=tuple(self.cpu_ns),
            wall_ns=tuple(self.wall_ns), sample_block=(block,) * len(samples),
            sample_round=tuple(self.rounds), blocks=1, pids=(os.getpid(),),
            descheduled=measure.descheduled(self.cpu_ns, self.wall_ns), **extra)
        self.limits.close()
        self.prepared = None
        return worker.stamped(result, tree=self.tree)


class Incorrect(Exception):
    """The variant's gradients disagree with the reference."""

    def __init__(self, message: str, err: float):
        super().__init__(message)
        self.err = err


def main(argv: list[str]) -> None:
    """Entry: ``TREE HARNESS CORES`` (cores comma-separated), then serve requests."""
    tree, harness, cores = argv
    os.sched_setaffinity(0, {int(c) for c in cores.split(",")})  # before numpy's threads
    arrange_path(tree, harness)
    inbox, outbox = _connections()
    Side(tree).serve(inbox, outbox)


if __name__ == "__main__":
    main(sys.argv[1:])
