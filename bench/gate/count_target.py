"""The program valgrind counts for ``gradsweep ci --clock instructions``: one cell's backward.

Usage (by :mod:`bench.gate.instructions`, never by hand)::

    valgrind --tool=cachegrind --cache-sim=no ... PYTHON bench/gate/count_target.py REQUEST.json

The request (JSON) names the cell, plugins, how many backward ``calls`` to
make, the source ``tree`` whose kernels are counted, the ``harness`` (the
directory holding the ``bench`` package that builds and verifies the case)
and where to write the ``outcome``. Everything this process does apart from
the loop of ``calls`` backward calls is the same whatever ``calls`` is, so
the difference of two counts is the loop's alone.

Which code runs (as in ``bench/abworker.py``): ``bench`` is bound to the
harness, then the tree goes first on ``sys.path`` so ``impls`` and the
plugins are the tree's. This file imports nothing from ``bench`` at module
level, so the path is arranged before any import. Failures are written to the
outcome as a status and one line, never raised.
"""

from __future__ import annotations

import json
import os
import sys

#: Seed of the entropy numpy's legacy global RandomState draws at import (see fixed_entropy).
ENTROPY_SEED = 0


def fixed_entropy() -> None:
    """Make ``secrets.randbits`` (numpy's source of seed entropy) draw from a fixed seed.

    Importing ``numpy.random`` seeds its legacy global RandomState from OS entropy,
    and the instructions that takes depend on the entropy's value (about 5,000 of
    them vary, run to run): the one difference we found between two counted runs
    of the same program. Kernels seed their own generators, so nothing they
    compute changes. Must run before ``numpy.random`` is first imported.
    """
    import random
    import secrets

    secrets.randbits = random.Random(ENTROPY_SEED).getrandbits


def arrange_path(tree: str, harness: str, extra: list[str]) -> None:
    """Bind ``bench`` to ``harness``, put ``tree`` first for everything else, append ``extra``.

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
    sys.path.extend(p for p in extra if p not in sys.path)


def simd_features() -> list[str]:
    """The CPU features numpy detected and uses for its dispatch, in numpy's order."""
    from numpy._core._multiarray_umath import __cpu_features__

    return [name for name, on in __cpu_features__.items() if on]


def blas() -> str:
    """numpy's BLAS and the core type it chose, e.g. ``openblas 0.3.31 Haswell``."""
    from bench import measure

    return measure.describe_blas(measure.numpy_blas(measure.blas_libraries()))


def _cell(record: dict):
    from bench.spec import Cell

    fields = dict(record)
    fields["shape"] = tuple((k, int(v)) for k, v in fields["shape"])
    return Cell(**fields)


def counted(request: dict) -> dict:
    """Build and verify the cell, then call its backward ``calls`` times with GC paused."""
    import math

    from bench import measure
    from bench.worker import _error_text, prepare
    from impls.base import SkipCell
    from impls.gradcheck import TOLERANCE

    cell = _cell(request["cell"])
    try:
        with measure.set_threads(cell.threads):
            prepared, err = prepare(cell, tuple(request["plugins"]))
            tolerance = TOLERANCE[cell.dtype]
            if not math.isfinite(err) or err > tolerance:
                return {"status": "incorrect", "max_rel_err": err,
                        "error": f"max_rel_err {err:.3g} exceeds the {cell.dtype} "
                                 f"tolerance {tolerance:g}"}
            with measure.gc_paused():
                for _ in range(int(request["calls"])):
                    prepared.call()
    except SkipCell as exc:
        return {"status": "skipped", "error": str(exc)}
    except Exception as exc:  # the cell's failure, reported to the driver
        return {"status": "error", "error": _error_text(exc)}
    return {"status": "ok", "max_rel_err": err}


def main(argv: list[str]) -> int:
    """Read the request named by ``argv[0]``, count, write the outcome it names."""
    with open(argv[0]) as f:
        request = json.load(f)
    fixed_entropy()
    arrange_path(request["tree"], request["harness"], request.get("sys_path", []))
    outcome = counted(request)
    import impls

    outcome.update(simd=simd_features(), blas=blas(), calls=int(request["calls"]),
                   impls=impls.__file__)
    with open(request["outcome"], "w") as f:
        json.dump(outcome, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
