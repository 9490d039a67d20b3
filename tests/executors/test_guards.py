"""The worker-process guards: frozen survivors (tests mirror bench/executors/guards.py)."""

import gc
import weakref

from gradsweep.executors.guards import freeze_survivors


class _Node:
    def __init__(self):
        self.other = self  # a reference cycle: only the cyclic collector frees it


def test_freeze_survivors_collects_garbage_first_and_freezes_what_lives():
    alive = [_Node() for _ in range(100)]
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    before = gc.get_freeze_count()
    try:
        freeze_survivors()
        assert gone() is None  # the cycle was collected, not frozen
        assert gc.get_freeze_count() >= before + len(alive)
        assert not any(gc.is_tracked(n) and n in gc.get_objects(generation=2) for n in alive[:3])
    finally:
        gc.unfreeze()
