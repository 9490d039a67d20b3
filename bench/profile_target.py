"""The program scalene runs for ``gradsweep profile``: one cell's backward in a loop.

Usage (by :mod:`gradsweep.profile`, never by hand)::

    python -m scalene run --off ... bench/profile_target.py --- REQUEST.json

The request names the cell, plugins, seconds, the import path and where to
write the outcome. The cell is built and verified with profiling off; only the
loop of backward calls runs between ``scalene_profiler.start()`` and
``stop()``. Failures are written to the outcome as one line, never raised.
"""

from __future__ import annotations

import json
import os
import sys
import time

#: Backward calls made before profiling starts (first-call effects stay out).
WARM_CALLS = 1


def _fix_path(extra: list[str]) -> None:
    """Drop this script's directory (bench/ would shadow stdlib ``profile``), add ``extra``."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    root = os.path.dirname(here)
    for entry in [root, *extra]:
        if entry not in sys.path:
            sys.path.append(entry)


def _profiled_loop(call, seconds: float) -> tuple[int, float]:
    """Call ``call`` under scalene until ``seconds`` have passed (at least once)."""
    from scalene import scalene_profiler

    calls, t0 = 0, time.perf_counter()
    scalene_profiler.start()
    try:
        while calls == 0 or time.perf_counter() - t0 < seconds:
            call()
            calls += 1
    finally:
        scalene_profiler.stop()
    return calls, time.perf_counter() - t0


def run(request: dict) -> dict:
    """Build the cell, verify it once, profile its backward; the outcome as a dict."""
    from gradsweep import measure
    from gradsweep.records import Cell, one_line
    from gradsweep.worker import prepare

    fields = dict(request["cell"])
    fields["shape"] = tuple((k, int(v)) for k, v in fields["shape"])
    cell = Cell(**fields)
    try:
        with measure.set_threads(cell.threads):
            prepared, err = prepare(cell, tuple(request["plugins"]))
            for _ in range(WARM_CALLS):
                prepared.call()
            calls, elapsed = _profiled_loop(prepared.call, float(request["seconds"]))
    except Exception as exc:  # reported to the parent as the cell's error
        return {"error": one_line(f"{type(exc).__name__}: {exc}")}
    return {"calls": calls, "elapsed_s": elapsed, "max_rel_err": err}


def main(argv: list[str]) -> int:
    """Read the request JSON named by ``argv[0]``, write the outcome it names."""
    with open(argv[0]) as f:
        request = json.load(f)
    _fix_path(request.get("sys_path", []))
    outcome = run(request)
    with open(request["outcome"], "w") as f:
        json.dump(outcome, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
