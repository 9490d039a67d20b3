"""Elman RNN (tanh): forward, float64 reference backward and BPTT variants.

Forward, batch-major, h0 = 0 (matches ``torch.nn.RNN(nonlinearity="tanh",
batch_first=True)`` with ``bias_hh = 0``)::

    h_t = tanh(x_t Wx + h_{t-1} Wh + b)      x_t (N, D), h_t (N, H)

Backward through time, with dZ_t = dL/d(pre-activation at t)::

    dh_t  = dY_t + dZ_{t+1} Whᵀ
    dZ_t  = dh_t * (1 - h_t²)
    dWx   = Σ_t x_tᵀ dZ_t,  dWh = Σ_t h_{t-1}ᵀ dZ_t,  db = Σ_t Σ_n dZ_t
    dX_t  = dZ_t Wxᵀ
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gradsweep.impls import bptt
from gradsweep.impls.base import (
    DEFAULT_CLIP_NORM,
    DEFAULT_CLIP_VALUE,
    Case,
    Grads,
    bias_like,
    clip_grads,
    rng_for,
)
from gradsweep.impls.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
else:  # imported when a kernel first computes (gradsweep.impls.lazy)
    np = lazy_import("numpy")

NAME = "rnn"
PARAMS = ("Wx", "Wh", "b")
DIMS = bptt.SEQUENCE_DIMS
AXES = bptt.BPTT_AXES
AXIS_ORDER = tuple(a.name for a in AXES)
#: Scale of the random weights: keeps tanh out of saturation.
WEIGHT_SCALE = 0.5


check = bptt.any_shape


def make_case(shape, dtype: str, seed: int, clip_value: float = DEFAULT_CLIP_VALUE,
              clip_norm: float = DEFAULT_CLIP_NORM) -> Case:
    """Random X (N,T,D), Wx (D,H), Wh (H,H), nonzero b (H,), random dY (N,T,H)."""
    N, T, D, H = (shape[k] for k in "NTDH")
    rng = rng_for(seed, NAME, N, T, D, H)
    params = {
        "Wx": rng.standard_normal((D, H)) * WEIGHT_SCALE / np.sqrt(D),
        "Wh": rng.standard_normal((H, H)) * WEIGHT_SCALE / np.sqrt(H),
        "b": bias_like(rng, H, "float64"),
    }
    X = rng.standard_normal((N, T, D))
    dY = rng.standard_normal((N, T, H))
    case = Case(NAME, dict(shape), "float64", seed, params, X, dY, clip_value, clip_norm)
    return case.astype(dtype)


def forward(case: Case) -> tuple[np.ndarray, dict]:
    """Y = all hidden states (N, T, H); cache holds X, Y and the parameters."""
    X, Wx, Wh, b = case.X, case.params["Wx"], case.params["Wh"], case.params["b"]
    N, T, _ = X.shape
    Y = np.empty((N, T, Wh.shape[0]), dtype=X.dtype)
    h = np.zeros((N, Wh.shape[0]), dtype=X.dtype)
    XWx = (X.reshape(N * T, -1) @ Wx).reshape(N, T, -1)
    for t in range(T):
        h = np.tanh(XWx[:, t] + h @ Wh + b)
        Y[:, t] = h
    return Y, {"X": X, "Y": Y, "Wx": Wx, "Wh": Wh, "b": b}


def _h_prev(Y: np.ndarray, t: int) -> np.ndarray:
    """h_{t-1} (N, H); zeros at t = 0."""
    return Y[:, t - 1] if t > 0 else np.zeros_like(Y[:, 0])


def reference(case: Case, cache: dict) -> Grads:
    """Plain float64 BPTT, one step at a time; the oracle for every variant."""
    X, Y = cache["X"].astype(np.float64), cache["Y"].astype(np.float64)
    Wx, Wh = cache["Wx"].astype(np.float64), cache["Wh"].astype(np.float64)
    dY = case.dY.astype(np.float64)
    N, T, D = X.shape
    dX = np.zeros_like(X)
    dWx, dWh, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros(Wh.shape[0])
    dh_next = np.zeros((N, Wh.shape[0]))
    for t in reversed(range(T)):
        dZ = (dY[:, t] + dh_next) * (1.0 - Y[:, t] ** 2)
        dWx += X[:, t].T @ dZ
        dWh += _h_prev(Y, t).T @ dZ
        db += dZ.sum(axis=0)
        dX[:, t] = dZ @ Wx.T
        dh_next = dZ @ Wh.T
    return {"dX": dX, "Wx": dWx, "Wh": dWh, "b": db}


def _bptt_step_wgrad(case: Case, cache: dict, prealloc: bool) -> Grads:
    """Weight gradients accumulated at every step; dX in a list or a buffer."""
    X, Y, Wx, Wh = cache["X"], cache["Y"], cache["Wx"], cache["Wh"]
    dY = case.dY
    N, T, _ = X.shape
    dWx, dWh = np.zeros_like(Wx), np.zeros_like(Wh)
    db = np.zeros_like(cache["b"])
    dh_next = np.zeros((N, Wh.shape[0]), dtype=X.dtype)
    dX = np.empty_like(X) if prealloc else None
    dX_steps: list[np.ndarray] = []
    for t in reversed(range(T)):
        dZ = (dY[:, t] + dh_next) * (1 - Y[:, t] ** 2)
        dWx += X[:, t].T @ dZ
        dWh += _h_prev(Y, t).T @ dZ
        db += dZ.sum(axis=0)
        if prealloc:
            dX[:, t] = dZ @ Wx.T
        else:
            dX_steps.insert(0, dZ @ Wx.T)
        dh_next = dZ @ Wh.T
    if not prealloc:
        dX = np.stack(dX_steps, axis=1)
    return {"dX": dX, "Wx": dWx, "Wh": dWh, "b": db}


def _bptt_batched_wgrad(case: Case, cache: dict, prealloc: bool) -> Grads:
    """Only dZ·Whᵀ in the loop; dX, dWx, dWh and db as one GEMM each after it."""
    X, Y, Wx, Wh = cache["X"], cache["Y"], cache["Wx"], cache["Wh"]
    dY = case.dY
    N, T, D = X.shape
    H = Wh.shape[0]
    dZ_all = np.empty((N, T, H), dtype=X.dtype) if prealloc else None
    dZ_steps: list[np.ndarray] = []
    dh_next = np.zeros((N, H), dtype=X.dtype)
    for t in reversed(range(T)):
        dZ = (dY[:, t] + dh_next) * (1 - Y[:, t] ** 2)
        if prealloc:
            dZ_all[:, t] = dZ
        else:
            dZ_steps.insert(0, dZ)
        dh_next = dZ @ Wh.T
    if not prealloc:
        dZ_all = np.stack(dZ_steps, axis=1)
    dZ2 = dZ_all.reshape(N * T, H)
    dWx = X.reshape(N * T, D).T @ dZ2
    dWh = Y[:, :-1].reshape(N * (T - 1), H).T @ dZ_all[:, 1:].reshape(N * (T - 1), H)
    dX = (dZ2 @ Wx.T).reshape(N, T, D)
    return {"dX": dX, "Wx": dWx, "Wh": dWh, "b": dZ2.sum(axis=0)}


def make_backward(buffers: str, wgrad: str, clip: str):
    """The backward function of one point on the axes."""
    through_time = _bptt_step_wgrad if wgrad == "step" else _bptt_batched_wgrad
    prealloc = buffers == "prealloc"

    def backward(case: Case, cache: dict) -> Grads:
        grads = through_time(case, cache, prealloc)
        return clip_grads(grads, PARAMS, clip, case.clip_value, case.clip_norm)

    backward.__name__ = f"rnn_{buffers}_{wgrad}_{clip}"
    return backward


def flops(shape) -> int:
    """GEMMs of the minimal backward: dX, dWx, dWh and dh: 4·N·T·H·(D+H)."""
    N, T, D, H = (shape[k] for k in "NTDH")
    return 4 * N * T * H * (D + H)


def memory_estimate(shape, dtype: str) -> int:
    """Inputs, cache, gradients and per-step buffers, in bytes."""
    N, T, D, H = (shape[k] for k in "NTDH")
    item = np.dtype(dtype).itemsize
    return item * (3 * N * T * D + 4 * N * T * H + 2 * (D * H + H * H + H))


KERNEL = bptt.bptt_kernel(NAME, AXES, make_backward, make_case=make_case, forward=forward,
                          reference=reference, flops=flops, memory_estimate=memory_estimate)
BACKWARDS = KERNEL.variants
KERNELS = [KERNEL]
