"""The program valgrind counts for ``gradsweep ci --clock instructions``: cells' backwards.

Usage (by :mod:`gradsweep.gate.instructions`, never by hand)::

    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=DIR/cg.%p \\
        PYTHON <harness>/gate/count_target.py REQUEST.json

The request (JSON) names the cells, plugins, ``calls`` (``k``), the source
``tree`` whose kernels are counted, the ``harness`` (the directory of the
``gradsweep`` package that builds and verifies the cases) and where to write the
``outcome``. This process imports everything once; each cell then gets a
process forked from that state, which builds and verifies the case and forks
two children from the same state: one calls the backward ``k`` times, the
other ``2k`` times, and each exits at once. valgrind follows a fork and
writes each child's count to its own file (``%p``: its pid), so the two counts
share every instruction before the fork and differ by ``k`` calls plus a small
constant: the parent's own steps between the two forks, measured first by a
few pairs of children that make no call (the *offset*). With ``calls = 0`` (the
native run) nothing is forked: the cells are only verified.

Which code runs (as in a side of the timed gate, ``gate/side.py``, whose
``arrange_path`` this uses): ``gradsweep`` is bound to the harness, the tree goes
first on ``sys.path`` so ``impls`` and the plugins are the tree's, and
``gradsweep.impls`` is an alias of the tree's ``impls``. This file imports
nothing from ``gradsweep`` at module level, so the path is arranged before any
import. A cell's failure is written
to the outcome as a status and one line, never raised.
"""

from __future__ import annotations

import json
import os
import sys

#: Seed of the entropy numpy's legacy global RandomState draws at import (see fixed_entropy).
ENTROPY_SEED = 0
#: Pairs of children that make no call, forked first: their counts' differences are the
#: offset (the last is used; the interpreter specialises fork_pair's bytecode as it runs).
OFFSET_PAIRS = 6
#: Exit code of a counted child whose backward raised.
CHILD_FAILED = 3


def fixed_entropy() -> None:
    """Make ``secrets.randbits`` (numpy's source of seed entropy) draw from a fixed seed.

    Importing ``numpy.random`` seeds its legacy global RandomState from OS entropy,
    and the instructions that takes depend on the entropy's value (about 5,000 of
    them vary, run to run). Kernels seed their own generators, so nothing they
    compute changes; two counted processes of one program then execute alike.
    Must run before ``numpy.random`` is first imported.
    """
    import random
    import secrets

    secrets.randbits = random.Random(ENTROPY_SEED).getrandbits


def arrange_path(tree: str, harness: str) -> None:
    """Bind ``gradsweep`` to ``harness`` and ``impls`` (and plugins) to ``tree``.

    Done by ``gate/side.py``'s ``arrange_path``, loaded by path; the script's own
    directory first leaves ``sys.path`` (run by path, Python puts it there, and it
    would shadow top-level modules).
    """
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != here]
    spec = importlib.util.spec_from_file_location("_gate_side", os.path.join(here, "side.py"))
    side = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(side)
    side.arrange_path(tree, harness)


def simd_features() -> list[str]:
    """The CPU features numpy detected and uses for its dispatch, in numpy's order."""
    from numpy._core._multiarray_umath import __cpu_features__

    return [name for name, on in __cpu_features__.items() if on]


def blas() -> str:
    """numpy's BLAS and the core type it chose, e.g. ``openblas 0.3.31 Haswell``."""
    from gradsweep import measure

    return measure.describe_blas(measure.numpy_blas(measure.blas_libraries()))


def fork_pair(call, first: int, second: int) -> list[int]:
    """Fork a child calling ``call`` ``first`` times, then one calling it ``second`` times.

    Each child exits with ``os._exit`` as soon as its loop ends (0, or CHILD_FAILED if
    ``call`` raised); the parent returns both pids without waiting. Every pair is
    forked by this same code, so the parent's steps between its two forks (the
    offset) are the same for every pair.
    """
    pids = []
    for calls in (first, second):
        pid = os.fork()
        if pid == 0:
            try:
                for _ in range(calls):
                    call()
            except BaseException:  # reported by the exit code; nothing may escape a child
                os._exit(CHILD_FAILED)
            os._exit(0)
        pids.append(pid)
    return pids


def counted_pair(call, calls: int) -> dict:
    """Fork the ``calls`` and ``2 * calls`` children with GC paused, wait for both."""
    from gradsweep import measure

    with measure.gc_paused():
        pids = fork_pair(call, calls, 2 * calls)
    exits = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    return {"pids": pids, "exits": exits}


def warm(plugins: tuple[str, ...]) -> None:
    """Import what every cell needs, once, before the cells' processes fork from here."""
    import numpy.random  # noqa: F401  (numpy imports it lazily, at a kernel's first case)

    from gradsweep import worker  # noqa: F401
    from gradsweep.impls.registry import load

    try:
        load(plugins)
    except Exception:  # every cell reports it from its own process
        pass


def in_own_process(work, path: str) -> dict:
    """``work()``'s dict, computed in a forked process that writes it to ``path``.

    Every cell starts from the state the imports left, whatever other cells did
    (a cell's calls leave the heap changed, and a later cell's count with it), and
    a cell that kills its process takes only itself down (status ``crashed``).
    """
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            result = work()
            with open(path, "w") as f:
                json.dump(result, f)
        except BaseException:  # reported by the exit code; nothing may escape a child
            code = CHILD_FAILED
        os._exit(code)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return {"status": "crashed",
                "error": f"the process of the cell died (exit code {code})"}


def _cell(record: dict):
    from gradsweep.records import Cell

    fields = dict(record)
    fields["shape"] = tuple((k, int(v)) for k, v in fields["shape"])
    return Cell(**fields)


def count_cell(record: dict, plugins: tuple[str, ...], calls: int) -> dict:
    """Build and verify one cell; unless ``calls`` is 0, its counted pair."""
    import math
    import time

    from gradsweep import measure
    from gradsweep.impls.base import SkipCell
    from gradsweep.impls.gradcheck import TOLERANCE
    from gradsweep.worker import error_text, prepare

    cell, t0 = _cell(record), time.perf_counter()
    try:
        with measure.set_threads(cell.threads):
            prepared, err = prepare(cell, plugins)
            tolerance = TOLERANCE[cell.dtype]
            if not math.isfinite(err) or err > tolerance:
                return {"status": "incorrect", "max_rel_err": err,
                        "error": f"max_rel_err {err:.3g} exceeds the {cell.dtype} "
                                 f"tolerance {tolerance:g}"}
            t1 = time.perf_counter()
            pair = counted_pair(prepared.call, calls) if calls else {}
    except SkipCell as exc:
        return {"status": "skipped", "error": str(exc)}
    except Exception as exc:  # the cell's failure, reported to the driver
        return {"status": "error", "error": error_text(exc)}
    return {"status": "ok", "max_rel_err": err, "build_s": t1 - t0,
            "wall_s": time.perf_counter() - t0, **pair}


def main(argv: list[str]) -> int:
    """Read the request named by ``argv[0]``, count its cells, write the outcome it names."""
    with open(argv[0]) as f:
        request = json.load(f)
    fixed_entropy()
    arrange_path(request["tree"], request["harness"])
    calls, plugins = int(request["calls"]), tuple(request["plugins"])
    warm(plugins)
    offsets = [counted_pair(lambda: None, 0) for _ in range(OFFSET_PAIRS if calls else 0)]
    cells = [in_own_process(lambda r=record: count_cell(r, plugins, calls),
                            f"{request['outcome']}.cell{i}")
             for i, record in enumerate(request["cells"])]
    import gradsweep.impls

    outcome = {"offsets": offsets, "cells": cells, "simd": simd_features(), "blas": blas(),
               "impls": gradsweep.impls.__file__}
    with open(request["outcome"], "w") as f:
        json.dump(outcome, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
