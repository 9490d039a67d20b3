"""Test-only plugin: an rnn variant slowed on purpose by a known factor.

``rnn/buffers=slowed,wgrad=batched,clip=none`` computes the same gradients as
``buffers=prealloc``, then repeats the whole backward ``REPEATS`` more times
and finally busy-waits for ``EXTRA`` times the CPU time of one backward (CPU
time, so that time descheduled counts for neither), so a call costs about
``(1 + REPEATS + EXTRA)`` times the plain one, by either clock. The CI tests
edit these two constants on the candidate side (the gate's benchmark,
tests/benchmarks/gate_power.py, injects real work with gs_inject instead).
"""

import time

from gradsweep.impls import rnn
from gradsweep.impls.base import Variant

#: Extra full repetitions of the backward (1 makes the variant 2x slower).
REPEATS = 0
#: Extra fraction of one backward's duration spent busy-waiting (0.10 is 10% slower).
EXTRA = 0.0

_plain = rnn.make_backward("prealloc", "batched", "none")


def _slowed(case, cache):
    start = time.thread_time()
    grads = _plain(case, cache)
    once = time.thread_time() - start
    for _ in range(REPEATS):
        grads = _plain(case, cache)
    if EXTRA > 0:
        until = time.thread_time() + EXTRA * once
        while time.thread_time() < until:
            pass
    return grads


VARIANTS = [Variant("rnn", {"buffers": "slowed", "wgrad": "batched", "clip": "none"}, _slowed)]
