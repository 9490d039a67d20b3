"""Test-only plugin: rnn variants that fail the harness rather than the maths.

``crash`` ends its worker process (``os._exit``), ``sleep`` outlives any small
``timeout_s``, ``hog`` asks for far more memory than any budget. Each one
appends a line to ``$GS_FAULT_DIR/<name>.log`` (when set) before misbehaving,
so tests can count attempts. Loaded as ``plugins = ["gs_faults"]``.
"""

import os
import time
from pathlib import Path

import numpy as np

from gradsweep.impls import rnn
from gradsweep.impls.base import Variant

FAULT_DIR_ENV = "GS_FAULT_DIR"
#: Exit status of a crashing worker.
CRASH_CODE = 3
SLEEP_S = 120.0
HOG_BYTES = 2 * 2**30  # fits this machine; not a cell under a 256 MB budget

_copy = rnn.make_backward("prealloc", "batched", "none")


def _note(name: str) -> None:
    where = os.environ.get(FAULT_DIR_ENV)
    if where:
        with open(Path(where) / f"{name}.log", "a") as log:
            log.write(f"{os.getpid()}\n")


def _crash(case, cache):
    _note("crash")
    os._exit(CRASH_CODE)


def _sleep(case, cache):
    _note("sleep")
    time.sleep(SLEEP_S)
    return _copy(case, cache)


def _hog(case, cache):
    _note("hog")
    block = np.zeros(HOG_BYTES // 8)
    block[-1] = 1.0
    return _copy(case, cache)


VARIANTS = [
    Variant("rnn", {"buffers": "crash", "wgrad": "batched", "clip": "none"}, _crash),
    Variant("rnn", {"buffers": "sleep", "wgrad": "batched", "clip": "none"}, _sleep),
    Variant("rnn", {"buffers": "hog", "wgrad": "batched", "clip": "none"}, _hog),
]
