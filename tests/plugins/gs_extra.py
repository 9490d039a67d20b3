"""Test-only plugin: extra rnn variants (a correct copy, a wrong one, one that raises).

Loaded by specs as ``plugins = ["gs_extra"]`` with tests/plugins on the path.
"""

import numpy as np

from gradsweep.impls import rnn
from gradsweep.impls.base import Variant

_copy = rnn.make_backward("prealloc", "batched", "none")


def _wrong(case, cache):
    grads = _copy(case, cache)
    return {**grads, "Wh": grads["Wh"] * 1.5}


def _raises(case, cache):
    raise RuntimeError("deliberate failure <b>in a plugin</b>")


def _scratch(case, cache):
    scratch = np.ones(64 * 2**20 // 8)  # 64 MiB, freed before returning
    scratch[0] = 0.0
    del scratch
    return _copy(case, cache)


VARIANTS = [
    Variant("rnn", {"buffers": "plugin", "wgrad": "batched", "clip": "none"}, _copy),
    Variant("rnn", {"buffers": "wrong", "wgrad": "batched", "clip": "none"}, _wrong),
    Variant("rnn", {"buffers": "raises", "wgrad": "batched", "clip": "none"}, _raises),
    Variant("rnn", {"buffers": "scratch", "wgrad": "batched", "clip": "none"}, _scratch),
]
