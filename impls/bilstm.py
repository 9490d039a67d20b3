"""Bidirectional LSTM: two LSTM directions merged; reference and BPTT variants.

Forward (matches ``torch.nn.LSTM(bidirectional=True, batch_first=True)`` with
``bias_hh = 0`` followed by the merge)::

    Yf = LSTM_fwd(X)                          (N, T, H), time order
    Yb = reverse(LSTM_bwd(reverse(X)))        (N, T, H), back in original order
    Y  = [Yf, Yb] (concat, (N, T, 2H)), Yf + Yb (sum), (Yf + Yb)/2 (average),
         Yf · Yb (multiply)                   (N, T, H)

Parameters ``fwd_Wx``, ``fwd_Wh``, ``fwd_b``, ``bwd_Wx``, ``bwd_Wh``, ``bwd_b``
(torch: ``weight_ih_l0 = fwd_Wxᵀ``, ``weight_ih_l0_reverse = bwd_Wxᵀ``, ...).

Merge mode is a variant axis, but a Case (and so its upstream dY) is per
kernel. Conventions:

- ``case.dY`` is always (N, T, 2H), the concat-shaped upstream gradient. For a
  merge whose output is (N, T, H) the upstream gradient is ``dY[..., :H]``
  (:func:`upstream`). In every case the loss is L = sum(upstream · Y_merge).
- The kernel's ``forward`` and ``reference`` are the concat ones. The cache is
  the same for every merge mode (both directions' outputs and caches), so any
  variant runs on the kernel forward's cache.
- Every variant's backward function carries two optional attributes (the lead
  adds them to the contract in ``gradsweep.impls.base``/the worker):

  ``backward.forward(case) -> (Y, cache)``
      the forward of its merge mode (Y (N, T, H) or (N, T, 2H)); use it for
      finite differences with ``replace(case, dY=upstream(case, merge))``.
  ``backward.reference(case, cache) -> Grads``
      the float64 reference of its merge mode, *unclipped*, exactly like
      ``Kernel.reference``; the worker clips it like the kernel's reference.

  ``backward.merge`` names the merge mode. numpy-ml's bidirectional layer
  crashes in multiply mode (a misspelt mode name); all four work here.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from gradsweep.impls import bptt, lstm
from gradsweep.impls.base import (
    DEFAULT_CLIP_NORM,
    DEFAULT_CLIP_VALUE,
    Axis,
    Case,
    Grads,
    clip_grads,
    rng_for,
)
from gradsweep.impls.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
else:  # imported when a kernel first computes (gradsweep.impls.lazy)
    np = lazy_import("numpy")

NAME = "bilstm"
DIRECTIONS = ("fwd", "bwd")
PARAMS = tuple(f"{d}_{p}" for d in DIRECTIONS for p in lstm.PARAMS)
DIMS = lstm.DIMS
MERGES = ("concat", "sum", "average", "multiply")
AXES = (*lstm.AXES, Axis("merge", MERGES))
AXIS_ORDER = tuple(a.name for a in AXES)
#: Factor of the average merge.
HALF = 0.5


check = bptt.any_shape


def make_case(shape, dtype: str, seed: int, clip_value: float = DEFAULT_CLIP_VALUE,
              clip_norm: float = DEFAULT_CLIP_NORM) -> Case:
    """Random X (N,T,D), two LSTM parameter sets, random concat-shaped dY (N,T,2H)."""
    N, T, D, H = (shape[k] for k in "NTDH")
    rng = rng_for(seed, NAME, N, T, D, H)
    params = {f"{d}_{k}": v for d in DIRECTIONS for k, v in lstm.lstm_params(rng, D, H).items()}
    X = rng.standard_normal((N, T, D))
    dY = rng.standard_normal((N, T, 2 * H))
    case = Case(NAME, dict(shape), "float64", seed, params, X, dY, clip_value, clip_norm)
    return case.astype(dtype)


def _directions(case: Case) -> dict:
    """Both directions' outputs ``Yf``, ``Yb`` (N, T, H) and caches ``fwd``, ``bwd``."""
    cache: dict = {}
    for d, reverse in zip(DIRECTIONS, (False, True)):
        p = case.params
        Y, cache[d] = lstm.direction_forward(case.X, p[f"{d}_Wx"], p[f"{d}_Wh"], p[f"{d}_b"],
                                             reverse=reverse)
        cache["Yf" if d == "fwd" else "Yb"] = Y
    return cache


def merge_outputs(Yf: np.ndarray, Yb: np.ndarray, merge: str) -> np.ndarray:
    """The merged output: (N, T, 2H) for concat, else (N, T, H)."""
    if merge == "concat":
        return np.concatenate([Yf, Yb], axis=-1)
    if merge == "sum":
        return Yf + Yb
    if merge == "average":
        return (Yf + Yb) * Yf.dtype.type(HALF)
    if merge == "multiply":
        return Yf * Yb
    raise ValueError(f"merge {merge!r}: expected one of {', '.join(MERGES)}")


def forward_merged(case: Case, merge: str) -> tuple[np.ndarray, dict]:
    """(Y of ``merge``, cache); the cache is the same for every merge mode."""
    cache = _directions(case)
    return merge_outputs(cache["Yf"], cache["Yb"], merge), cache


def forward(case: Case) -> tuple[np.ndarray, dict]:
    """The concat forward: Y (N, T, 2H) = [Yf, Yb]."""
    return forward_merged(case, "concat")


def upstream(case: Case, merge: str) -> np.ndarray:
    """The upstream gradient of ``merge``'s output: dY, or dY[..., :H] for H-wide merges."""
    if merge == "concat":
        return case.dY
    return case.dY[..., :case.dY.shape[-1] // 2]


def split_upstream(case: Case, cache: dict, merge: str) -> tuple[np.ndarray, np.ndarray]:
    """dL/dYf and dL/dYb (N, T, H); views of dY where the merge allows."""
    dY = upstream(case, merge)
    if merge == "concat":
        H = dY.shape[-1] // 2
        return dY[..., :H], dY[..., H:]
    if merge == "sum":
        return dY, dY
    if merge == "average":
        half = dY * dY.dtype.type(HALF)
        return half, half
    if merge == "multiply":
        return dY * cache["Yb"], dY * cache["Yf"]
    raise ValueError(f"merge {merge!r}: expected one of {', '.join(MERGES)}")


def reference_merged(case: Case, cache: dict, merge: str) -> Grads:
    """Plain float64 BPTT of both directions for ``merge``; dX is their sum."""
    grads: Grads = {}
    dX = 0.0
    for d, dH in zip(DIRECTIONS, split_upstream(case, cache, merge)):
        dX_d, dWx, dWh, db = lstm.direction_reference(dH, cache[d])
        dX = dX + dX_d
        grads.update({f"{d}_Wx": dWx, f"{d}_Wh": dWh, f"{d}_b": db})
    return {"dX": dX, **grads}


def reference(case: Case, cache: dict) -> Grads:
    """The concat reference (the kernel's ``reference``)."""
    return reference_merged(case, cache, "concat")


def make_backward(buffers: str, wgrad: str, clip: str, merge: str):
    """The backward function of one point on the axes, with ``forward``/``reference``."""
    through_time = lstm.bptt_step_wgrad if wgrad == "step" else lstm.bptt_batched_wgrad
    prealloc = buffers == "prealloc"

    def backward(case: Case, cache: dict) -> Grads:
        grads: Grads = {}
        dX_tm = None
        for d, dH in zip(DIRECTIONS, split_upstream(case, cache, merge)):
            dX_d, dW = through_time(dH, cache[d], prealloc)
            dX_tm = dX_d if dX_tm is None else np.add(dX_tm, dX_d, out=dX_tm)
            D, H = cache[d]["Wx"].shape[0], cache[d]["Wh"].shape[0]
            grads.update(zip((f"{d}_Wx", f"{d}_Wh", f"{d}_b"), lstm.split_dW(dW, D, H)))
        grads = {"dX": lstm.batch_major(dX_tm), **grads}
        return clip_grads(grads, PARAMS, clip, case.clip_value, case.clip_norm)

    backward.__name__ = f"bilstm_{buffers}_{wgrad}_{clip}_{merge}"
    backward.merge = merge
    backward.forward = functools.partial(forward_merged, merge=merge)
    backward.reference = functools.partial(reference_merged, merge=merge)
    return backward


def flops(shape) -> int:
    """Two LSTM directions' minimal backward: 32·N·T·H·(D+H)."""
    return 2 * lstm.flops(shape)


def memory_estimate(shape, dtype: str) -> int:
    """Two directions' LSTM estimate plus the merged output and upstream, in bytes."""
    N, T, H = (shape[k] for k in "NTH")
    return 2 * lstm.memory_estimate(shape, dtype) + np.dtype(dtype).itemsize * 4 * N * T * H


KERNEL = bptt.bptt_kernel(NAME, AXES, make_backward, make_case=make_case, forward=forward,
                          reference=reference, flops=flops, memory_estimate=memory_estimate)
BACKWARDS = KERNEL.variants
KERNELS = [KERNEL]
