"""What the BPTT kernels (rnn, lstm, gru, bilstm) share: dims, axes, variant tables."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from gradsweep.impls.base import Axis, Backward, Dim, Kernel, variant_name

#: Batch-major sequences: batch N, time T, input D, hidden H (minimum 1 each).
SEQUENCE_DIMS = (Dim("N", 1, 16), Dim("T", 1, 32), Dim("D", 1, 32), Dim("H", 1, 64))
#: The axes of every BPTT kernel (DESIGN.md, Variants); bilstm adds ``merge``.
BPTT_AXES = (
    Axis("buffers", ("list", "prealloc")),
    Axis("wgrad", ("step", "batched")),
    Axis("clip", ("none", "value", "norm")),
)
#: The seed style speed-ups are measured against: numpy-ml's lists and per-step wgrad.
SEED_STYLE = {"buffers": "list", "wgrad": "step"}


def any_shape(shape) -> str | None:
    """Every sequence shape with dims at their minimum or above is valid."""
    return None


def backward_table(name: str, axes: tuple[Axis, ...],
                   make_backward: Callable[..., Backward]) -> dict[str, Backward]:
    """Canonical variant name -> ``make_backward(*values)`` for every point on ``axes``."""
    order = tuple(a.name for a in axes)
    return {variant_name(name, dict(zip(order, combo, strict=True)), order): make_backward(*combo)
            for combo in itertools.product(*(a.values for a in axes))}


def bptt_kernel(name: str, axes: tuple[Axis, ...], make_backward: Callable[..., Backward],
                **parts) -> Kernel:
    """A BPTT kernel: sequence dims, ``axes``, the seed-style baseline, every variant.

    ``parts`` are the remaining :class:`Kernel` fields (make_case, forward,
    reference, flops, memory_estimate).
    """
    order = tuple(a.name for a in axes)
    baseline = {a.name: a.values[0] for a in axes} | SEED_STYLE
    return Kernel(name=name, dims=SEQUENCE_DIMS, axes=axes,
                  baseline=variant_name(name, baseline, order),
                  baseline_axes=tuple(SEED_STYLE), check=any_shape,
                  variants=backward_table(name, axes, make_backward), **parts)
