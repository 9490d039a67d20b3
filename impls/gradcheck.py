"""Correctness measures: DESIGN.md's error measure and central finite differences."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from gradsweep.impls.base import Case, Grads
from gradsweep.impls.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
else:  # imported when a kernel first computes (gradsweep.impls.lazy)
    np = lazy_import("numpy")

#: Largest accepted max_rel_err against the float64 reference, per dtype.
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}
#: Floor of the denominator of the relative error (DESIGN.md).
REL_ERR_FLOOR = 1e-30
#: Step of the central differences; O(h²) truncation, ~1e-10 rounding in float64.
FD_STEP = 1e-6


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖∞ / max(‖b‖∞, 1e-30), computed in float64."""
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a64.shape != b64.shape:
        raise ValueError(f"shape {a64.shape} != {b64.shape}")
    if a64.size == 0:
        return 0.0
    denom = max(float(np.max(np.abs(b64))), REL_ERR_FLOOR)
    return float(np.max(np.abs(a64 - b64))) / denom


def max_rel_err(got: Grads, want: Grads) -> float:
    """The largest :func:`rel_err` over every gradient ``want`` names.

    Raises
    ------
    KeyError
        When ``got`` lacks a gradient that ``want`` has.
    """
    missing = sorted(set(want) - set(got))
    if missing:
        raise KeyError(f"missing gradients: {', '.join(missing)}")
    return max(rel_err(got[k], want[k]) for k in want)


def _with_array(case: Case, name: str, value: np.ndarray) -> Case:
    if name == "X":
        return replace(case, X=value)
    return replace(case, params={**case.params, name: value})


def loss(forward: Callable[[Case], tuple[np.ndarray, object]], case: Case) -> float:
    """L = sum(dY * Y): its gradient w.r.t. Y is the upstream gradient dY."""
    Y, _ = forward(case)
    return float(np.sum(case.dY * Y))


def finite_differences(forward: Callable[[Case], tuple[np.ndarray, object]], case: Case,
                       step: float = FD_STEP) -> Grads:
    """Central differences of :func:`loss` for ``X`` and every parameter.

    ``(L(θ + h) − L(θ − h)) / 2h`` per element; the case must be float64.
    Cost: two forwards per element, so keep shapes small.

    Returns
    -------
    Grads
        ``"dX"`` (shape of X) and one entry per parameter name.
    """
    if case.dtype != "float64":
        raise ValueError("finite differences need a float64 case")
    grads: Grads = {}
    for name, array in {"X": case.X, **case.params}.items():
        grad = np.zeros_like(array)
        for idx in np.ndindex(array.shape):
            bumped = array.copy()
            bumped[idx] += step
            up = loss(forward, _with_array(case, name, bumped))
            bumped[idx] -= 2 * step
            down = loss(forward, _with_array(case, name, bumped))
            grad[idx] = (up - down) / (2 * step)
        grads["dX" if name == "X" else name] = grad
    return grads
