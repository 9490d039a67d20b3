"""LSTM: forward, float64 reference backward and BPTT variants.

Forward, batch-major, h0 = c0 = 0 (matches ``torch.nn.LSTM(batch_first=True)``
with ``bias_hh = 0``; torch's ``weight_ih_l0 = Wxᵀ``, ``weight_hh_l0 = Whᵀ``,
``bias_ih_l0 = b``)::

    a_t = x_t Wx + h_{t-1} Wh + b              x_t (N, D), a_t (N, 4H)
    i, f, g, o = σ(a_i), σ(a_f), tanh(a_g), σ(a_o)   (gate order i, f, g, o)
    c_t = f c_{t-1} + i g,   h_t = o tanh(c_t)

Backward through time, with dA_t = dL/da_t = [dA_i, dA_f, dA_g, dA_o]::

    dh_t  = dY_t + dA_{t+1} Whᵀ
    dc_t  = dc_{t+1} f_{t+1} + dh_t o (1 − tanh² c_t)
    dA_i  = dc_t g i (1 − i),       dA_f = dc_t c_{t-1} f (1 − f)
    dA_g  = dc_t i (1 − g²),        dA_o = dh_t tanh(c_t) o (1 − o)
    dWx = Σ_t x_tᵀ dA_t,  dWh = Σ_t h_{t-1}ᵀ dA_t,  db = Σ_t Σ_n dA_t,  dX_t = dA_t Wxᵀ

The forward runs outside the clock, so its cache holds time-major layouts that
keep the backward's hot loop on contiguous memory: ``XH1`` (T, N, D+H+1) =
[x_t, h_{t-1}, 1], so that one GEMM ``XH1ᵀ dA`` yields dWx, dWh and db stacked;
the activated gates ``G`` (T, N, 4H); ``Cprev`` = c_{t-1} and ``TC`` = tanh(c_t),
both (T, N, H). A direction may run over reversed time (``reverse=True``, used by
:mod:`gradsweep.impls.bilstm`): its arrays stay indexed by original time, and "previous"
means the step before in the direction's own order.
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

NAME = "lstm"
PARAMS = ("Wx", "Wh", "b")
DIMS = bptt.SEQUENCE_DIMS
AXES = bptt.BPTT_AXES
AXIS_ORDER = tuple(a.name for a in AXES)
#: Gates per unit (i, f, g, o); pre-activations are (N, GATES·H).
GATES = 4
#: Scale of the random weights: keeps the gates out of saturation.
WEIGHT_SCALE = 0.5


check = bptt.any_shape


def lstm_params(rng: np.random.Generator, D: int, H: int) -> dict[str, np.ndarray]:
    """Random float64 Wx (D, 4H), Wh (H, 4H) and a nonzero b (4H,)."""
    return {
        "Wx": rng.standard_normal((D, GATES * H)) * WEIGHT_SCALE / np.sqrt(D),
        "Wh": rng.standard_normal((H, GATES * H)) * WEIGHT_SCALE / np.sqrt(H),
        "b": bias_like(rng, GATES * H, "float64"),
    }


def make_case(shape, dtype: str, seed: int, clip_value: float = DEFAULT_CLIP_VALUE,
              clip_norm: float = DEFAULT_CLIP_NORM) -> Case:
    """Random X (N,T,D), Wx (D,4H), Wh (H,4H), nonzero b (4H,), random dY (N,T,H)."""
    N, T, D, H = (shape[k] for k in "NTDH")
    rng = rng_for(seed, NAME, N, T, D, H)
    params = lstm_params(rng, D, H)
    X = rng.standard_normal((N, T, D))
    dY = rng.standard_normal((N, T, H))
    case = Case(NAME, dict(shape), "float64", seed, params, X, dY, clip_value, clip_norm)
    return case.astype(dtype)


def forward_order(T: int, reverse: bool) -> range:
    """The time steps in the order a direction visits them."""
    return range(T - 1, -1, -1) if reverse else range(T)


def bptt_order(T: int, reverse: bool) -> range:
    """The time steps in the order backpropagation visits them."""
    return range(T) if reverse else range(T - 1, -1, -1)


def gate_views(A: np.ndarray) -> tuple[np.ndarray, ...]:
    """The four (N, H) column blocks i, f, g, o of an (N, 4H) array (views)."""
    H = A.shape[-1] // GATES
    return tuple(A[..., k * H:(k + 1) * H] for k in range(GATES))


def _sigmoid(a: np.ndarray, out: np.ndarray) -> None:
    """σ(a) = (1 + tanh(a/2)) / 2 into ``out``; never overflows."""
    np.multiply(a, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5


def direction_forward(X: np.ndarray, Wx: np.ndarray, Wh: np.ndarray, b: np.ndarray,
                      reverse: bool = False) -> tuple[np.ndarray, dict]:
    """One LSTM direction over X (N, T, D), in time order or reversed.

    Returns
    -------
    Y : np.ndarray
        (N, T, H) hidden states indexed by original time (for ``reverse``, the
        re-reversed output, like torch's bidirectional second half).
    cache : dict
        ``XH1``, ``G``, ``Cprev``, ``TC`` (time-major, see the module), the
        weights ``Wx``, ``Wh``, their contiguous transposes ``WxT`` (4H, D) and
        ``WhT`` (4H, H) (a GEMM with a non-transposed operand runs faster) and
        ``reverse``.
    """
    N, T, D = X.shape
    H = Wh.shape[0]
    XH1 = np.empty((T, N, D + H + 1), dtype=X.dtype)
    XH1[:, :, :D] = X.transpose(1, 0, 2)
    XH1[:, :, D + H] = 1
    A = (np.ascontiguousarray(XH1[:, :, :D]).reshape(T * N, D) @ Wx).reshape(T, N, -1)
    A += b
    G = np.empty((T, N, GATES * H), dtype=X.dtype)
    Cprev, TC, Y = (np.empty((T, N, H), dtype=X.dtype) for _ in range(3))
    h, c = np.zeros((N, H), dtype=X.dtype), np.zeros((N, H), dtype=X.dtype)
    for t in forward_order(T, reverse):
        XH1[t, :, D:D + H] = h
        Cprev[t] = c
        a = A[t] + h @ Wh
        _sigmoid(a[:, :2 * H], G[t, :, :2 * H])
        np.tanh(a[:, 2 * H:3 * H], out=G[t, :, 2 * H:3 * H])
        _sigmoid(a[:, 3 * H:], G[t, :, 3 * H:])
        i, f, g, o = gate_views(G[t])
        c = f * c + i * g
        np.tanh(c, out=TC[t])
        h = o * TC[t]
        Y[t] = h
    cache = {"XH1": XH1, "G": G, "Cprev": Cprev, "TC": TC, "Wx": Wx, "Wh": Wh,
             "WxT": np.ascontiguousarray(Wx.T), "WhT": np.ascontiguousarray(Wh.T),
             "reverse": reverse}
    return np.ascontiguousarray(Y.transpose(1, 0, 2)), cache


def forward(case: Case) -> tuple[np.ndarray, dict]:
    """Y = all hidden states (N, T, H); the cache is :func:`direction_forward`'s."""
    p = case.params
    return direction_forward(case.X, p["Wx"], p["Wh"], p["b"])


def direction_reference(dH: np.ndarray, d: dict) -> tuple[np.ndarray, ...]:
    """Plain float64 BPTT of one direction, one step at a time.

    Parameters
    ----------
    dH : np.ndarray
        (N, T, H) upstream gradient of the direction's output, original time.
    d : dict
        The direction's cache from :func:`direction_forward`.

    Returns
    -------
    dX (N, T, D), dWx (D, 4H), dWh (H, 4H), db (4H,), all float64.
    """
    XH1, G, Cprev, TC, Wx, Wh = (np.asarray(d[k], dtype=np.float64)
                                 for k in ("XH1", "G", "Cprev", "TC", "Wx", "Wh"))
    dH = np.asarray(dH, dtype=np.float64)
    T, N, _ = XH1.shape
    D, H = Wx.shape[0], Wh.shape[0]
    dX = np.zeros((N, T, D))
    dWx, dWh, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros(GATES * H)
    dh_next, dc_next = np.zeros((N, H)), np.zeros((N, H))
    for t in bptt_order(T, d["reverse"]):
        x, h_prev = XH1[t, :, :D], XH1[t, :, D:D + H]
        i, f, g, o = gate_views(G[t])
        dh = dH[:, t] + dh_next
        dc = dc_next + dh * o * (1 - TC[t] ** 2)
        dA = np.concatenate([dc * g * i * (1 - i), dc * Cprev[t] * f * (1 - f),
                             dc * i * (1 - g ** 2), dh * TC[t] * o * (1 - o)], axis=1)
        dWx += x.T @ dA
        dWh += h_prev.T @ dA
        db += dA.sum(axis=0)
        dX[:, t] = dA @ Wx.T
        dh_next = dA @ Wh.T
        dc_next = dc * f
    return dX, dWx, dWh, db


def reference(case: Case, cache: dict) -> Grads:
    """Plain float64 BPTT, one step at a time; the oracle for every variant."""
    dX, dWx, dWh, db = direction_reference(case.dY, cache)
    return {"dX": dX, "Wx": dWx, "Wh": dWh, "b": db}


class _Scratch:
    """The per-step buffers the backward allocates once and reuses in place.

    ``dh`` (N, H) holds dA_{t+1} Whᵀ, then dh_t; ``dc`` (N, H) the cell-state
    gradient carried through time; ``u``, ``v`` (N, H) temporaries.
    """

    def __init__(self, N: int, H: int, dtype: np.dtype):
        self.dh, self.dc, self.u, self.v = (np.zeros((N, H), dtype=dtype) for _ in range(4))


def _cell_backward(s: _Scratch, gates: np.ndarray, tc: np.ndarray, c_prev: np.ndarray,
                   dA: np.ndarray) -> None:
    """One step's gate gradients dA (N, 4H), written in place, from s.dh = dh_t.

    On entry ``s.dc`` is dc_{t+1} f_{t+1}; on exit it is dc_t f_t, the carry to
    the step before. 17 in-place ufunc calls, no temporaries.
    """
    i, f, g, o = gate_views(gates)
    dAi, dAf, dAg, dAo = gate_views(dA)
    dh, dc, u, v = s.dh, s.dc, s.u, s.v
    np.multiply(dh, o, out=u)              # u = dh·o
    np.multiply(u, tc, out=v)              # v = dh·o·tanh(c)
    np.subtract(1, o, out=dAo)
    dAo *= v                               # dA_o = dh·tanh(c)·o(1 − o)
    dc += u
    v *= tc
    dc -= v                                # dc_t = carry + dh·o·(1 − tanh² c)
    np.multiply(dc, i, out=u)              # u = dc·i
    np.multiply(u, g, out=v)               # v = dc·i·g
    np.multiply(v, g, out=dAg)
    np.subtract(u, dAg, out=dAg)           # dA_g = dc·i·(1 − g²)
    np.subtract(1, i, out=dAi)
    dAi *= v                               # dA_i = dc·g·i(1 − i)
    dc *= f                                # carry dc_t·f_t
    np.multiply(dc, c_prev, out=v)         # v = dc·f·c_{t-1}
    np.subtract(1, f, out=dAf)
    dAf *= v                               # dA_f = dc·c_{t-1}·f(1 − f)


def _push(steps: list, item: np.ndarray, reverse: bool) -> None:
    """Keep ``steps`` in original time order whichever way BPTT runs."""
    if reverse:
        steps.append(item)
    else:
        steps.insert(0, item)


def bptt_step_wgrad(dH: np.ndarray, d: dict, prealloc: bool) -> tuple[np.ndarray, np.ndarray]:
    """BPTT with weight gradients accumulated at every step.

    Parameters
    ----------
    dH : np.ndarray
        (N, T, H) upstream gradient of the direction's output (read only).
    d : dict
        The direction's cache.
    prealloc : bool
        dX_t written into a preallocated (T, N, D) array, else kept in a list
        and stacked at the end.

    Returns
    -------
    dX_tm : (T, N, D) time-major input gradient.
    dW : (D+H+1, 4H) stacked [dWx; dWh; db].
    """
    XH1, G, Cprev, TC, WxT, WhT = (d[k] for k in ("XH1", "G", "Cprev", "TC", "WxT", "WhT"))
    T, N, K = XH1.shape
    s = _Scratch(N, WhT.shape[1], XH1.dtype)
    dA = np.empty((N, WhT.shape[0]), dtype=XH1.dtype)
    dW, dW_t = np.zeros((K, dA.shape[1]), dtype=XH1.dtype), np.empty((K, dA.shape[1]), XH1.dtype)
    dX_tm = np.empty((T, N, WxT.shape[1]), dtype=XH1.dtype) if prealloc else None
    dX_steps: list[np.ndarray] = []
    order = bptt_order(T, d["reverse"])
    for t in order:
        s.dh += dH[:, t]
        _cell_backward(s, G[t], TC[t], Cprev[t], dA)
        np.matmul(XH1[t].T, dA, out=dW_t)
        dW += dW_t
        if prealloc:
            np.matmul(dA, WxT, out=dX_tm[t])
        else:
            _push(dX_steps, dA @ WxT, d["reverse"])
        if t != order[-1]:
            np.matmul(dA, WhT, out=s.dh)
    if not prealloc:
        dX_tm = np.stack(dX_steps)
    return dX_tm, dW


def bptt_batched_wgrad(dH: np.ndarray, d: dict, prealloc: bool) -> tuple[np.ndarray, np.ndarray]:
    """BPTT with only dA_t Whᵀ in the loop; dX and [dWx; dWh; db] as one GEMM each after.

    Every step's dA_t is kept in a preallocated (T, N, 4H) array (``prealloc``)
    or in a list stacked at the end. Parameters and returns as
    :func:`bptt_step_wgrad`.
    """
    XH1, G, Cprev, TC, WxT, WhT = (d[k] for k in ("XH1", "G", "Cprev", "TC", "WxT", "WhT"))
    T, N, K = XH1.shape
    s = _Scratch(N, WhT.shape[1], XH1.dtype)
    dA_all = np.empty((T, N, WhT.shape[0]), dtype=XH1.dtype) if prealloc else None
    dA_steps: list[np.ndarray] = []
    order = bptt_order(T, d["reverse"])
    for t in order:
        dA = dA_all[t] if prealloc else np.empty((N, WhT.shape[0]), dtype=XH1.dtype)
        s.dh += dH[:, t]
        _cell_backward(s, G[t], TC[t], Cprev[t], dA)
        if not prealloc:
            _push(dA_steps, dA, d["reverse"])
        if t != order[-1]:
            np.matmul(dA, WhT, out=s.dh)
    if not prealloc:
        dA_all = np.stack(dA_steps)
    dA2 = dA_all.reshape(T * N, -1)
    dW = XH1.reshape(T * N, K).T @ dA2
    dX_tm = (dA2 @ WxT).reshape(T, N, -1)
    return dX_tm, dW


def split_dW(dW: np.ndarray, D: int, H: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dWx (D, 4H), dWh (H, 4H), db (4H,): contiguous row blocks of [dWx; dWh; db]."""
    return dW[:D], dW[D:D + H], dW[D + H]


def batch_major(A_tm: np.ndarray) -> np.ndarray:
    """(T, N, ·) → contiguous (N, T, ·)."""
    return np.ascontiguousarray(A_tm.transpose(1, 0, 2))


def make_backward(buffers: str, wgrad: str, clip: str):
    """The backward function of one point on the axes."""
    through_time = bptt_step_wgrad if wgrad == "step" else bptt_batched_wgrad
    prealloc = buffers == "prealloc"

    def backward(case: Case, cache: dict) -> Grads:
        dX_tm, dW = through_time(case.dY, cache, prealloc)
        dWx, dWh, db = split_dW(dW, cache["Wx"].shape[0], cache["Wh"].shape[0])
        grads = {"dX": batch_major(dX_tm), "Wx": dWx, "Wh": dWh, "b": db}
        return clip_grads(grads, PARAMS, clip, case.clip_value, case.clip_norm)

    backward.__name__ = f"lstm_{buffers}_{wgrad}_{clip}"
    return backward


def flops(shape) -> int:
    """GEMMs of the minimal backward: dX, dWx, dWh and dh: 16·N·T·H·(D+H)."""
    N, T, D, H = (shape[k] for k in "NTDH")
    return 16 * N * T * H * (D + H)


def memory_estimate(shape, dtype: str) -> int:
    """Inputs, cache, gradients and per-step buffers, in bytes."""
    N, T, D, H = (shape[k] for k in "NTDH")
    item = np.dtype(dtype).itemsize
    inputs = N * T * (D + H) + GATES * H * (D + H + 1)
    cache = N * T * (D + H + 1) + N * T * (GATES + 3) * H
    backward = 2 * N * T * GATES * H + 3 * N * T * D + 2 * GATES * H * (D + H + 1)
    return item * (inputs + cache + backward)


KERNEL = bptt.bptt_kernel(NAME, AXES, make_backward, make_case=make_case, forward=forward,
                          reference=reference, flops=flops, memory_estimate=memory_estimate)
BACKWARDS = KERNEL.variants
KERNELS = [KERNEL]
