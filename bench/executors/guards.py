"""Guards a block runs under in its worker process: an address-space cap
and frozen imports (so per-cell ``gc.collect`` stays cheap)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gradsweep.units import BYTES_PER_MB

#: Address space a cell may take above its process's baseline, beyond memory_budget_mb
#: (shared libraries a cell loads, allocator arenas, thread stacks).
GUARD_MARGIN_MB = 1024



def _vm_bytes() -> int | None:
    """This process's virtual size (``VmSize``), None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@contextmanager
def memory_guard(budget_mb: float) -> Iterator[int | None]:
    """Cap this process's address space at its size now + budget + margin.

    An allocation past the cap raises ``MemoryError`` (a catchable ``error``
    row) instead of waking the kernel's or Ray's OOM killer, whose kills Ray
    retries. Yields the limit in bytes (None when no limit could be set).
    """
    import resource

    base = _vm_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if base is None:
        yield None
        return
    limit = base + int((budget_mb + GUARD_MARGIN_MB) * BYTES_PER_MB)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY and soft <= limit:
        yield soft
        return
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))



_FROZEN = []


def freeze_imports() -> None:
    """Once per process: move every object alive now out of the collector's reach.

    Each cell starts with ``gc.collect()``; in a Ray worker that walks Ray's,
    numpy's and the plugins' ~100k long-lived objects (tens of ms per cell).
    ``gc.freeze`` leaves them out; whatever a cell creates is still collected.
    """
    if not _FROZEN:
        freeze_survivors()
        _FROZEN.append(True)


def freeze_survivors() -> None:
    """Collect garbage, then move every object still alive out of the collector's reach.

    Collected first, so no garbage is frozen. (Workers no longer call it after a
    block: each block runs in a process of its own that exits after it.)
    """
    import gc

    gc.collect()
    gc.freeze()
