"""GRU (torch's convention): forward, float64 reference backward and BPTT variants.

Forward, batch-major, h0 = 0 (matches ``torch.nn.GRU(batch_first=True)``), gate
order r, z, n in the columns of Wx (D, 3H), Wh (H, 3H), b_ih and b_hh (3H,)::

    gx  = x_t Wx + b_ih                   gh = h_{t-1} Wh + b_hh
    r   = σ(gx_r + gh_r)                  z  = σ(gx_z + gh_z)
    n   = tanh(gx_n + r * gh_n)           h_t = (1 - z) * n + z * h_{t-1}

The reset gate multiplies ``gh_n = h_{t-1} Whn + b_hn``, i.e. it is applied
*after* the recurrent matmul (torch's and cuDNN's convention, not Cho et al.'s
``(r * h) Whn``).

Backward through time, with dh = dL/dh_t (upstream plus recurrent)::

    da_n = dh (1 - z)(1 - n²)             (gradient of the n pre-activation)
    da_z = dh (h_{t-1} - n) z (1 - z)
    da_r = da_n gh_n r (1 - r)
    Gx   = [da_r, da_z, da_n]             (gradient of gx, N x 3H)
    Gh   = [da_r, da_z, da_n r]           (gradient of gh, N x 3H)
    dh_{t-1} = dh z + Gh Whᵀ
    dWx  = Σ_t x_tᵀ Gx,  dWh = Σ_t h_{t-1}ᵀ Gh,  db_ih = Σ Gx,  db_hh = Σ Gh
    dX_t = Gx Wxᵀ

Variants. ``buffers=list`` computes each step's gate gradients from the cached
gate values with fresh temporaries and keeps per-step results in Python lists
(``insert(0)``) stacked at the end, as numpy-ml does. ``buffers=prealloc``
writes them into preallocated time-major arrays with ``out=``: every gate
gradient is dh times a coefficient the forward cached, so one fused multiply
per step fills the N x 4H rows ``[da_n r, da_r, da_z, da_n]`` of a buffer B;
then ``Gh = B[:, :3H]`` in the order (n, r, z), matched by a column-permuted
copy of Wh, and ``Gx = B[:, H:]`` in the order (r, z, n). ``wgrad=step``
accumulates the weight gradients (and writes dX) at every step;
``wgrad=batched`` leaves only the recurrent product in the loop and computes
dX and [dWx; db_ih] = [X, 1]ᵀ Gx and [dWh; db_hh] = [h, 1]ᵀ Gh as one GEMM each
over all T·N rows after it.
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

NAME = "gru"
PARAMS = ("Wx", "Wh", "b_ih", "b_hh")
DIMS = bptt.SEQUENCE_DIMS
AXES = bptt.BPTT_AXES
AXIS_ORDER = tuple(a.name for a in AXES)
#: Scale of the random weights: keeps the gates out of saturation.
WEIGHT_SCALE = 0.5
#: Gates per step (r, z, n) and columns of the fused gradient buffer B.
GATES = 3
FUSED = 4


check = bptt.any_shape


def make_case(shape, dtype: str, seed: int, clip_value: float = DEFAULT_CLIP_VALUE,
              clip_norm: float = DEFAULT_CLIP_NORM) -> Case:
    """Random X (N,T,D), Wx (D,3H), Wh (H,3H), nonzero b_ih, b_hh (3H,), dY (N,T,H)."""
    N, T, D, H = (shape[k] for k in "NTDH")
    rng = rng_for(seed, NAME, N, T, D, H)
    params = {
        "Wx": rng.standard_normal((D, GATES * H)) * WEIGHT_SCALE / np.sqrt(D),
        "Wh": rng.standard_normal((H, GATES * H)) * WEIGHT_SCALE / np.sqrt(H),
        "b_ih": bias_like(rng, GATES * H, "float64"),
        "b_hh": bias_like(rng, GATES * H, "float64"),
    }
    X = rng.standard_normal((N, T, D))
    dY = rng.standard_normal((N, T, H))
    case = Case(NAME, dict(shape), "float64", seed, params, X, dY, clip_value, clip_norm)
    return case.astype(dtype)


def _sigmoid(a: np.ndarray) -> np.ndarray:
    """σ(a) = (1 + tanh(a/2)) / 2, in place on ``a``; no overflow for any a."""
    a *= 0.5
    np.tanh(a, out=a)
    a += 1.0
    a *= 0.5
    return a


def _gates(X, Wx, Wh, b_ih, b_hh) -> dict[str, np.ndarray]:
    """Run the GRU; every gate value (N, T, H) in the arrays' dtype.

    Returns
    -------
    dict
        ``Y`` (h_t), ``Hprev`` (h_{t-1}, zeros at t = 0), ``R``, ``Z``, ``Ng``
        (the candidate n) and ``Ghn`` (h_{t-1} Whn + b_hn).
    """
    N, T, D = X.shape
    H = Wh.shape[0]
    GX = (X.reshape(N * T, D) @ Wx + b_ih).reshape(N, T, GATES * H)
    out = {k: np.empty((N, T, H), dtype=X.dtype) for k in ("Y", "Hprev", "R", "Z", "Ng", "Ghn")}
    h = np.zeros((N, H), dtype=X.dtype)
    for t in range(T):
        gh = h @ Wh + b_hh
        rz = _sigmoid(GX[:, t, :2 * H] + gh[:, :2 * H])
        r, z = rz[:, :H], rz[:, H:]
        n = np.tanh(GX[:, t, 2 * H:] + r * gh[:, 2 * H:])
        out["Hprev"][:, t] = h
        h = n + z * (h - n)
        out["Y"][:, t], out["R"][:, t], out["Z"][:, t] = h, r, z
        out["Ng"][:, t], out["Ghn"][:, t] = n, gh[:, 2 * H:]
    return out


def _coefficients(g: dict[str, np.ndarray]) -> np.ndarray:
    """C (N, T, 4H) with B = C * dh giving [da_n r, da_r, da_z, da_n] per step."""
    R, Z, Ng, Ghn, Hprev = g["R"], g["Z"], g["Ng"], g["Ghn"], g["Hprev"]
    H = R.shape[-1]
    c_n = (1 - Z) * (1 - Ng * Ng)
    C = np.empty((*R.shape[:2], FUSED * H), dtype=R.dtype)
    np.multiply(c_n, R, out=C[..., :H])
    np.multiply(c_n, Ghn * R * (1 - R), out=C[..., H:2 * H])
    np.multiply(Hprev - Ng, Z * (1 - Z), out=C[..., 2 * H:3 * H])
    C[..., 3 * H:] = c_n
    return C


def _time_major_ones(A: np.ndarray) -> np.ndarray:
    """(N, T, K) -> contiguous (T, N, K + 1) with a last column of ones.

    ``[A, 1]ᵀ G`` then gives a weight gradient and, in its last row, the bias one.
    """
    N, T, K = A.shape
    out = np.ones((T, N, K + 1), dtype=A.dtype)
    out[..., :K] = A.transpose(1, 0, 2)
    return out


def forward(case: Case) -> tuple[np.ndarray, dict]:
    """Y = all hidden states (N, T, H).

    The cache holds X, the parameters and every gate value (N, T, H) for the
    list variants and the reference; for the prealloc variants, time-major
    copies of z (T, N, H), ``X1`` = [X, 1] (T, N, D+1) and ``H1`` = [h_{t-1}, 1]
    (T, N, H+1), the fused coefficients ``C`` (T, N, 4H) and ``Whp``, Wh's columns
    in the order (n, r, z).
    """
    X, p = case.X, case.params
    g = _gates(X, p["Wx"], p["Wh"], p["b_ih"], p["b_hh"])
    H = p["Wh"].shape[0]
    tm = {k: g[k].transpose(1, 0, 2) for k in ("R", "Z", "Ng", "Ghn", "Hprev")}
    cache = {
        "X": X, **{k: p[k] for k in PARAMS}, **g,
        "Whp": np.concatenate([p["Wh"][:, 2 * H:], p["Wh"][:, :2 * H]], axis=1),
        "C_tm": _coefficients(tm), "X1_tm": _time_major_ones(X),
        "H1_tm": _time_major_ones(g["Hprev"]), "Z_tm": np.ascontiguousarray(tm["Z"]),
    }
    return g["Y"], cache


def _gate_grads(dh, r, z, n, ghn, h_prev):
    """Gx, Gh (N, 3H) of one step from dh and the gate values (fresh arrays)."""
    da_n = dh * (1 - z) * (1 - n ** 2)
    da_z = dh * (h_prev - n) * z * (1 - z)
    da_r = da_n * ghn * r * (1 - r)
    Gx = np.concatenate([da_r, da_z, da_n], axis=1)
    Gh = np.concatenate([da_r, da_z, da_n * r], axis=1)
    return Gx, Gh


def reference(case: Case, cache: dict) -> Grads:
    """Plain float64 BPTT, one step at a time; the oracle for every variant.

    Recomputes the gate values in float64 from the cached X and parameters, so
    it trusts none of the layouts the fast variants use.
    """
    X = cache["X"].astype(np.float64)
    p = {k: cache[k].astype(np.float64) for k in PARAMS}
    dY = case.dY.astype(np.float64)
    g = _gates(X, p["Wx"], p["Wh"], p["b_ih"], p["b_hh"])
    N, T, _ = X.shape
    dX = np.zeros_like(X)
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    dh_next = np.zeros((N, p["Wh"].shape[0]))
    for t in reversed(range(T)):
        dh = dY[:, t] + dh_next
        Gx, Gh = _gate_grads(dh, g["R"][:, t], g["Z"][:, t], g["Ng"][:, t],
                             g["Ghn"][:, t], g["Hprev"][:, t])
        grads["Wx"] += X[:, t].T @ Gx
        grads["Wh"] += g["Hprev"][:, t].T @ Gh
        grads["b_ih"] += Gx.sum(axis=0)
        grads["b_hh"] += Gh.sum(axis=0)
        dX[:, t] = Gx @ p["Wx"].T
        dh_next = dh * g["Z"][:, t] + Gh @ p["Wh"].T
    return {"dX": dX, **grads}


def _list_steps(case: Case, cache: dict, wgrad: str) -> Grads:
    """numpy-ml style: gate gradients with temporaries, per-step results in lists."""
    X, Wx, Wh, dY = cache["X"], cache["Wx"], cache["Wh"], case.dY
    R, Z, Ng, Ghn, Hprev = (cache[k] for k in ("R", "Z", "Ng", "Ghn", "Hprev"))
    N, T, D = X.shape
    step = wgrad == "step"
    grads = {k: np.zeros_like(cache[k]) for k in PARAMS}
    dX_steps: list[np.ndarray] = []
    Gx_steps: list[np.ndarray] = []
    Gh_steps: list[np.ndarray] = []
    dh_next = np.zeros((N, Wh.shape[0]), dtype=X.dtype)
    for t in reversed(range(T)):
        dh = dY[:, t] + dh_next
        Gx, Gh = _gate_grads(dh, R[:, t], Z[:, t], Ng[:, t], Ghn[:, t], Hprev[:, t])
        if step:
            grads["Wx"] += X[:, t].T @ Gx
            grads["Wh"] += Hprev[:, t].T @ Gh
            grads["b_ih"] += Gx.sum(axis=0)
            grads["b_hh"] += Gh.sum(axis=0)
            dX_steps.insert(0, Gx @ Wx.T)
        else:
            Gx_steps.insert(0, Gx)
            Gh_steps.insert(0, Gh)
        dh_next = dh * Z[:, t] + Gh @ Wh.T
    if step:
        return {"dX": np.stack(dX_steps, axis=1), **grads}
    Gx_all = np.stack(Gx_steps, axis=1).reshape(N * T, -1)
    Gh_all = np.stack(Gh_steps, axis=1).reshape(N * T, -1)
    return {
        "dX": (Gx_all @ Wx.T).reshape(N, T, D),
        "Wx": X.reshape(N * T, D).T @ Gx_all,
        "Wh": Hprev.reshape(N * T, -1).T @ Gh_all,
        "b_ih": Gx_all.sum(axis=0),
        "b_hh": Gh_all.sum(axis=0),
    }


def _recur(Gh, WhpT, rec, dh, Zt, dY_prev) -> None:
    """dh <- dh z + Gh Whpᵀ + dY_{t-1}, in place; ``rec`` is scratch (N, H)."""
    np.matmul(Gh, WhpT, out=rec)
    np.multiply(dh, Zt, out=dh)
    dh += rec
    dh += dY_prev


def _batch_major(A: np.ndarray) -> np.ndarray:
    """(T, N, ·) -> contiguous (N, T, ·)."""
    return np.ascontiguousarray(A.transpose(1, 0, 2))


def _hh_order(A_nrz: np.ndarray) -> np.ndarray:
    """Columns (n, r, z) of a (·, 3H) gradient back to the parameter order (r, z, n)."""
    H = A_nrz.shape[-1] // GATES
    return np.concatenate([A_nrz[..., H:], A_nrz[..., :H]], axis=-1)


def _prealloc_batched(case: Case, cache: dict) -> Grads:
    """Only Gh·Whpᵀ in the loop; dX, dWx, dWh, db_ih, db_hh as one GEMM each after it.

    B (T, N, 4H) is time-major, so each step's rows are contiguous.
    """
    Wx, Z, C, dY = cache["Wx"], cache["Z_tm"], cache["C_tm"], case.dY
    T, N, H = Z.shape
    B = np.empty((T, N, FUSED * H), dtype=C.dtype)
    B4, C4 = B.reshape(T, N, FUSED, H), C.reshape(T, N, FUSED, H)
    WhpT = cache["Whp"].T
    dh = dY[:, T - 1].copy()
    rec = np.empty_like(dh)
    for t in range(T - 1, -1, -1):
        np.multiply(C4[t], dh[:, None, :], out=B4[t])
        if t:
            _recur(B[t, :, :GATES * H], WhpT, rec, dh, Z[t], dY[:, t - 1])
    B2 = B.reshape(T * N, FUSED * H)
    Gx = B2[:, H:]
    dWx1 = cache["X1_tm"].reshape(T * N, -1).T @ Gx
    dWh1 = _hh_order(cache["H1_tm"].reshape(T * N, -1).T @ B2[:, :GATES * H])
    return {"dX": _batch_major((Gx @ Wx.T).reshape(T, N, -1)), **_split_bias(dWx1, dWh1)}


def _split_bias(dWx1: np.ndarray, dWh1: np.ndarray) -> Grads:
    """Weight and bias gradients from [X, 1]ᵀ Gx (D+1, 3H) and [h, 1]ᵀ Gh (H+1, 3H)."""
    return {"Wx": dWx1[:-1], "Wh": dWh1[:-1], "b_ih": dWx1[-1], "b_hh": dWh1[-1]}


def _prealloc_step(case: Case, cache: dict) -> Grads:
    """EpyNN/deepnp style: preallocated dX and step buffers, weight grads every step."""
    Wx, Z, C, dY = cache["Wx"], cache["Z_tm"], cache["C_tm"], case.dY
    X1, H1 = cache["X1_tm"], cache["H1_tm"]
    T, N, H = Z.shape
    dWx1 = np.zeros((X1.shape[-1], GATES * H), dtype=C.dtype)
    dWh1 = np.zeros((H1.shape[-1], GATES * H), dtype=C.dtype)
    dX = np.empty((T, N, Wx.shape[0]), dtype=C.dtype)
    b = np.empty((N, FUSED * H), dtype=C.dtype)
    b4, C4 = b.reshape(N, FUSED, H), C.reshape(T, N, FUSED, H)
    WhpT, WxT = cache["Whp"].T, Wx.T
    dh = dY[:, T - 1].copy()
    rec = np.empty_like(dh)
    for t in range(T - 1, -1, -1):
        np.multiply(C4[t], dh[:, None, :], out=b4)
        dWx1 += X1[t].T @ b[:, H:]
        dWh1 += H1[t].T @ b[:, :GATES * H]
        np.matmul(b[:, H:], WxT, out=dX[t])
        if t:
            _recur(b[:, :GATES * H], WhpT, rec, dh, Z[t], dY[:, t - 1])
    return {"dX": _batch_major(dX), **_split_bias(dWx1, _hh_order(dWh1))}


def make_backward(buffers: str, wgrad: str, clip: str):
    """The backward function of one point on the axes."""

    def through_time(case: Case, cache: dict) -> Grads:
        if buffers == "list":
            return _list_steps(case, cache, wgrad)
        return _prealloc_step(case, cache) if wgrad == "step" else _prealloc_batched(case, cache)

    def backward(case: Case, cache: dict) -> Grads:
        grads = through_time(case, cache)
        return clip_grads(grads, PARAMS, clip, case.clip_value, case.clip_norm)

    backward.__name__ = f"gru_{buffers}_{wgrad}_{clip}"
    return backward


def flops(shape) -> int:
    """GEMMs of the minimal backward: 12·N·T·H·(D+H).

    Per step, with the gate gradients Gx, Gh of shape (N, 3H):
    dX_t = Gx Wxᵀ costs 2·N·3H·D, dWx += x_tᵀ Gx costs 2·D·N·3H,
    dWh += h_{t-1}ᵀ Gh costs 2·H·N·3H and dh_{t-1} = Gh Whᵀ costs 2·N·3H·H:
    12·N·H·(D+H) per step, T steps. Elementwise work and bias sums are O(N·T·H)
    and not counted.
    """
    N, T, D, H = (shape[k] for k in "NTDH")
    return 12 * N * T * H * (D + H)


def memory_estimate(shape, dtype: str) -> int:
    """Inputs, cache (gates, coefficients), gradients and buffers, in bytes."""
    N, T, D, H = (shape[k] for k in "NTDH")
    item = np.dtype(dtype).itemsize
    n_params = GATES * H * (D + H + 2)
    return item * (4 * N * T * D + 21 * N * T * H + 3 * n_params)


KERNEL = bptt.bptt_kernel(NAME, AXES, make_backward, make_case=make_case, forward=forward,
                          reference=reference, flops=flops, memory_estimate=memory_estimate)
BACKWARDS = KERNEL.variants
KERNELS = [KERNEL]
