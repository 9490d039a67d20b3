"""The program valgrind counts for ``gradsweep ci --clock instructions``: cells' backwards.

Usage (by :mod:`bench.gate.instructions`, never by hand)::

    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=DIR/cg.%p \\
        PYTHON bench/gate/count_target.py REQUEST.json

The request (JSON) names the cells, plugins, ``calls`` (``k``), the source
``tree`` whose kernels are counted, the ``harness`` (the directory holding the
``bench`` package that builds and verifies the cases) and where to write the
``outcome``. This process imports everything once; each cell then gets a
process forked from that state, which builds and verifies the case and forks
two children from the same state: one calls the backward ``k`` times, the
other ``2k`` times, and each exits at once. valgrind follows a fork and
writes each child's count to its own file (``%p``: its pid), so the two counts
share every instruction before the fork and differ by ``k`` calls plus a small
constant: the parent's own steps between the two forks, measured first by a
few pairs of children that make no call (the *offset*). With ``calls = 0`` (the
native run) nothing is forked: the cells are only verified.

Which code runs (as in ``bench/abworker.py``): ``bench`` is bound to the
harness, then the tree goes first on ``sys.path`` so ``impls`` and the
plugins are the tree's. This file imports nothing from ``bench`` at module
level, so the path is arranged before any import. A cell's failure is written
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
    """Bind ``bench`` to ``harness``, then put ``tree`` first for everything else.

    The script's own directory leaves ``sys.path`` first (run by path, Python puts it
    there, and it would shadow top-level modules).
    """
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path
                   if p not in ("", tree, harness) and os.path.abspath(p) != here]
    sys.path.insert(0, harness)
    import bench  # noqa: F401  (the package object now points at the harness)

    sys.path.remove(harness)
    sys.path.insert(0, tree)


def simd_features() -> list[str]:
    """The CPU features numpy detected and uses for its dispatch, in numpy's order."""
    from numpy._core._multiarray_umath import __cpu_features__

    return [name for name, on in __cpu_features__.items() if on]


def blas() -> str:
    """numpy's BLAS and the core type it chose, e.g. ``openblas 0.3.31 Haswell``."""
    from bench import measure

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
    from bench import measure

    with measure.gc_paused():
        pids = fork_pair(call, calls, 2 * calls)
    exits = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    return {"pids": pids, "exits": exits}


def warm(plugins: tuple[str, ...]) -> None:
    """Import what every cell needs, once, before the cells' processes fork from here."""
    import numpy.random  # noqa: F401  (numpy imports it lazily, at a kernel's first case)

    from bench import worker  # noqa: F401
    from impls.registry import load

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
    from bench.spec import Cell

    fields = dict(record)
    fields["shape"] = tuple((k, int(v)) for k, v in fields["shape"])
    return Cell(**fields)


def count_cell(record: dict, plugins: tuple[str, ...], calls: int) -> dict:
    """Build and verify one cell; unless ``calls`` is 0, its counted pair."""
    import math
    import time

    from bench import measure
    from bench.worker import _error_text, prepare
    from impls.base import SkipCell
    from impls.gradcheck import TOLERANCE

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
        return {"status": "error", "error": _error_text(exc)}
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
    import impls

    outcome = {"offsets": offsets, "cells": cells, "simd": simd_features(), "blas": blas(),
               "impls": impls.__file__}
    with open(request["outcome"], "w") as f:
        json.dump(outcome, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
