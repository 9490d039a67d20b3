"""Transposed 2-D convolution (NHWC): forward, float64 reference and backward methods.

Forward (matches ``torch.nn.ConvTranspose2d`` with weight ``W.transpose(2, 3, 0, 1)``)::

    X (N, Hin, Win, Cin), W (k, k, Cin, Cout), b (Cout,)  ->  Y (N, Hout, Wout, Cout)
    Hout = (Hin - 1)·s - 2·pad + d·(k - 1) + op + 1            (same for Wout)
    Y[n, i·s - pad + p·d, j·s - pad + q·d] += X[n, i, j] · W[p, q]     for every tap (p, q)
    Y += b

where s = stride, d = dilation, pad = padding, op = output_padding; contributions that
land outside [0, Hout) × [0, Wout) are dropped. Each input pixel scatters k² taps.

Backward, with dY (N, Hout, Wout, Cout) and the sums over valid (input, tap) pairs::

    dX[n, i, j] = Σ_{p,q} dY[n, i·s - pad + p·d, j·s - pad + q·d] · W[p, q]ᵀ
    dW[p, q]    = Σ_{n,i,j} X[n, i, j]ᵀ · dY[n, i·s - pad + p·d, j·s - pad + q·d]
    db          = Σ_{n,h,w} dY[n, h, w]

so dX is a strided, dilated *convolution* of dY with W, and dW a correlation of X with
dY. The three methods (DESIGN.md, Variants):

- ``im2col``: the numpy-ml style; the forward is rewritten as a stride-1 convolution of
  the zero-inserted, padded input with the flipped kernel; its backward is im2col of that
  input, one GEMM per gradient and a col2im scatter-add (work on the inserted zeros).
- ``gather``: dX and dW from one strided gather over windows of the padded dY (no
  scatter), blocked over images so the gathered columns stay in cache between GEMMs.
- ``taps``: one GEMM per kernel tap for each of dX and dW, accumulating dX into
  strided slices.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from gradsweep.impls.base import (
    DEFAULT_CLIP_NORM,
    DEFAULT_CLIP_VALUE,
    Axis,
    Case,
    Dim,
    Grads,
    Kernel,
    bias_like,
    rng_for,
    variant_name,
)
from gradsweep.impls.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
else:  # imported when a kernel first computes (gradsweep.impls.lazy)
    np = lazy_import("numpy")

NAME = "deconv2d"
PARAMS = ("W", "b")
DIMS = (
    Dim("N", 1, 8), Dim("Hin", 1, 16), Dim("Win", 1, 16), Dim("Cin", 1, 16),
    Dim("Cout", 1, 16), Dim("k", 1, 3), Dim("stride", 1, 2), Dim("padding", 0, 1),
    Dim("dilation", 1, 1), Dim("output_padding", 0, 0),
)
METHODS = ("im2col", "gather", "taps")
AXES = (Axis("method", METHODS),)
AXIS_ORDER = tuple(a.name for a in AXES)
#: Scale of the random weights (times 1/sqrt(fan-in)); keeps Y of order one.
WEIGHT_SCALE = 1.0
#: Target size of one block (gathered columns plus dY frame) in the ``gather`` method:
#: small enough to stay in cache between the copies and the dX and dW GEMMs.
GATHER_BLOCK_BYTES = 2 << 20
#: Target size of one block of images (X, dX and dY slices) in the ``taps`` method.
TAPS_BLOCK_BYTES = 1 << 20


# --------------------------------------------------------------------------- geometry

def out_size(n_in: int, k: int, stride: int, padding: int, dilation: int,
             output_padding: int) -> int:
    """Output length of a transposed convolution along one axis (torch's formula)."""
    return (n_in - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1


def _out_hw(shape) -> tuple[int, int]:
    """(Hout, Wout) of a full shape."""
    rest = (shape["k"], shape["stride"], shape["padding"], shape["dilation"],
            shape["output_padding"])
    return out_size(shape["Hin"], *rest), out_size(shape["Win"], *rest)


def tap_range(p: int, n_in: int, n_out: int, stride: int, padding: int,
              dilation: int) -> tuple[int, int, int]:
    """The inputs whose tap ``p`` lands inside the output, along one axis.

    Returns
    -------
    (i0, i1, o0) : tuple[int, int, int]
        Input positions ``i0 <= i < i1`` reach output ``o0 + (i - i0)·stride``, all in
        ``[0, n_out)``; ``i1 <= i0`` when none does.
    """
    shift = p * dilation - padding                      # output of input 0
    i0 = max(0, -(shift // stride))                     # ceil(-shift / stride)
    i1 = min(n_in, (n_out - 1 - shift) // stride + 1)
    return i0, i1, i0 * stride + shift


def valid_pairs(n_in: int, n_out: int, k: int, stride: int, padding: int,
                dilation: int) -> int:
    """Number of (input position, tap) pairs landing inside ``[0, n_out)``, one axis."""
    ranges = (tap_range(p, n_in, n_out, stride, padding, dilation) for p in range(k))
    return sum(max(0, i1 - i0) for i0, i1, _ in ranges)


class Geometry(NamedTuple):
    """Every size a method needs; unpacks in this order."""

    N: int
    Hin: int
    Win: int
    Cin: int
    Cout: int
    k: int
    s: int
    pad: int
    d: int
    op: int
    Hout: int
    Wout: int


def _geometry(X: np.ndarray, W: np.ndarray, shape) -> Geometry:
    """The :class:`Geometry` of ``X`` (N, Hin, Win, Cin) and ``W`` (k, k, Cin, Cout)."""
    N, Hin, Win, Cin = X.shape
    k, Cout = W.shape[0], W.shape[3]
    s, pad, d, op = (shape[n] for n in ("stride", "padding", "dilation", "output_padding"))
    return Geometry(N, Hin, Win, Cin, Cout, k, s, pad, d, op,
                    out_size(Hin, k, s, pad, d, op), out_size(Win, k, s, pad, d, op))


def _tap_slices(p: int, q: int, geo: Geometry):
    """Input slice (rows, cols) and strided output slice (rows, cols) of tap (p, q).

    None when the tap reaches no output.
    """
    _, Hin, Win, _, _, _, s, pad, d, _, Hout, Wout = geo
    i0, i1, oh = tap_range(p, Hin, Hout, s, pad, d)
    j0, j1, ow = tap_range(q, Win, Wout, s, pad, d)
    if i1 <= i0 or j1 <= j0:
        return None
    return ((slice(i0, i1), slice(j0, j1)),
            (slice(oh, oh + (i1 - i0 - 1) * s + 1, s), slice(ow, ow + (j1 - j0 - 1) * s + 1, s)))


def check(shape) -> str | None:
    """None, or why torch refuses the shape (output_padding too large, empty output)."""
    s, d, op = shape["stride"], shape["dilation"], shape["output_padding"]
    if op >= max(s, d):
        return (f"output_padding={op} must be smaller than max(stride, dilation)"
                f"={max(s, d)}")
    Hout, Wout = _out_hw(shape)
    if Hout <= 0 or Wout <= 0:
        return f"output size {Hout}x{Wout} is not positive"
    return None


# --------------------------------------------------------------------------- case, forward

def make_case(shape, dtype: str, seed: int, clip_value: float = DEFAULT_CLIP_VALUE,
              clip_norm: float = DEFAULT_CLIP_NORM) -> Case:
    """Random X (N,Hin,Win,Cin), W (k,k,Cin,Cout), nonzero b (Cout,), random dY."""
    full = {dim.name: int(shape[dim.name]) for dim in DIMS}
    N, Hin, Win, Cin, Cout, k = (full[n] for n in ("N", "Hin", "Win", "Cin", "Cout", "k"))
    Hout, Wout = _out_hw(full)
    rng = rng_for(seed, NAME, *full.values())
    params = {
        "W": rng.standard_normal((k, k, Cin, Cout)) * WEIGHT_SCALE / np.sqrt(k * k * Cin),
        "b": bias_like(rng, Cout, "float64"),
    }
    X = rng.standard_normal((N, Hin, Win, Cin))
    dY = rng.standard_normal((N, Hout, Wout, Cout))
    case = Case(NAME, full, "float64", seed, params, X, dY, clip_value, clip_norm)
    return case.astype(dtype)


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a`` (cached layouts must never be written)."""
    v = a.view()
    v.flags.writeable = False
    return v


def forward(case: Case) -> tuple[np.ndarray, dict]:
    """Y (N, Hout, Wout, Cout): one GEMM X·[W_pq] then k² strided slice-adds.

    The cache holds X, W, b and the layouts the backward methods reuse:
    ``X2`` (N·Hin·Win, Cin) and ``W_cols`` (k·k·Cout, Cin), W[p, q]ᵀ stacked by tap.
    """
    X, W, b = case.X, case.params["W"], case.params["b"]
    geo = _geometry(X, W, case.shape)
    N, Hin, Win, Cin, Cout, k = geo.N, geo.Hin, geo.Win, geo.Cin, geo.Cout, geo.k
    X2 = X.reshape(N * Hin * Win, Cin)
    XW = (X2 @ W.transpose(2, 0, 1, 3).reshape(Cin, k * k * Cout))
    XW = XW.reshape(N, Hin, Win, k, k, Cout)
    Y = np.empty((N, geo.Hout, geo.Wout, Cout), dtype=X.dtype)
    Y[...] = b
    for p in range(k):
        for q in range(k):
            sl = _tap_slices(p, q, geo)
            if sl is not None:
                Y[:, sl[1][0], sl[1][1]] += XW[:, sl[0][0], sl[0][1], p, q]
    W_cols = np.ascontiguousarray(W.transpose(0, 1, 3, 2)).reshape(k * k * Cout, Cin)
    cache = {"X": X, "W": W, "b": b, "X2": _readonly(X2), "W_cols": _readonly(W_cols)}
    return Y, cache


# --------------------------------------------------------------------------- reference

def _full_frame(dY: np.ndarray, geo: Geometry) -> np.ndarray:
    """dY placed in the uncropped output frame: frame row f holds output row f - pad.

    The frame (N, Hf, Wf, Cout) covers every tap of every input,
    Hf = (Hin - 1)·s + d·(k - 1) + 1; rows outside the output are zero.
    """
    N, Hin, Win, _, Cout, k, s, pad, d, _, Hout, Wout = geo
    Hf, Wf = (Hin - 1) * s + d * (k - 1) + 1, (Win - 1) * s + d * (k - 1) + 1
    frame = np.zeros((N, Hf, Wf, Cout), dtype=dY.dtype)
    h, w = min(Hout, Hf - pad), min(Wout, Wf - pad)
    if h > 0 and w > 0:
        frame[:, pad:pad + h, pad:pad + w] = dY[:, :h, :w]
    return frame


def reference(case: Case, cache: dict) -> Grads:
    """Plain float64 backward: dY in the full frame, one einsum per tap and gradient."""
    X = np.asarray(cache["X"], dtype=np.float64)
    W = np.asarray(cache["W"], dtype=np.float64)
    dY = np.asarray(case.dY, dtype=np.float64)
    geo = _geometry(X, W, case.shape)
    _, Hin, Win, _, _, k, s, _, d, _, _, _ = geo
    frame = _full_frame(dY, geo)
    dX, dW = np.zeros_like(X), np.zeros_like(W)
    for p in range(k):
        for q in range(k):
            G = frame[:, p * d:p * d + (Hin - 1) * s + 1:s, q * d:q * d + (Win - 1) * s + 1:s]
            dX += np.einsum("nhwc,dc->nhwd", G, W[p, q])
            dW[p, q] = np.einsum("nhwd,nhwc->dc", X, G)
    return {"dX": dX, "W": dW, "b": dY.sum(axis=(0, 1, 2))}


# --------------------------------------------------------------------------- im2col

def _pad_crop(a: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``a`` padded with zeros (or cropped, where negative) by lo/hi on axes 1 and 2."""
    N, H, Wd, C = a.shape
    out = np.zeros((N, H + lo + hi, Wd + lo + hi, C), dtype=a.dtype)
    src = slice(max(0, -lo), H - max(0, -hi)), slice(max(0, -lo), Wd - max(0, -hi))
    dst = slice(max(0, lo), max(0, lo) + src[0].stop - src[0].start), \
        slice(max(0, lo), max(0, lo) + src[1].stop - src[1].start)
    out[:, dst[0], dst[1]] = a[:, src[0], src[1]]
    return out


def _im2col_backward(case: Case, cache: dict) -> Grads:
    """numpy-ml style: zero-insert X, pad, im2col, GEMMs, col2im scatter-add.

    The forward equals a stride-1, dilation-d convolution of Xdp (X with s - 1 zeros
    inserted between pixels, padded by d·(k-1) - pad before and d·(k-1) - pad + op after)
    with the flipped kernel. Its backward works on every inserted zero.
    """
    X, W, dY = cache["X"], cache["W"], case.dY
    geo = _geometry(X, W, case.shape)
    N, Hin, Win, Cin, Cout, k, s, pad, d, op, Hout, Wout = geo
    Xd = np.zeros((N, (Hin - 1) * s + 1, (Win - 1) * s + 1, Cin), dtype=X.dtype)
    Xd[:, ::s, ::s] = X
    lo = d * (k - 1) - pad
    Xdp = _pad_crop(Xd, lo, lo + op)
    span = d * (k - 1) + 1
    win = np.lib.stride_tricks.sliding_window_view(Xdp, (span, span), axis=(1, 2))
    cols = win[..., ::d, ::d].transpose(0, 1, 2, 4, 5, 3).reshape(N * Hout * Wout, k * k * Cin)
    W_flip = W[::-1, ::-1].reshape(k * k * Cin, Cout)
    dY2 = dY.reshape(N * Hout * Wout, Cout)
    dW = (cols.T @ dY2).reshape(k, k, Cin, Cout)[::-1, ::-1]
    dcols = (dY2 @ W_flip.T).reshape(N, Hout, Wout, k, k, Cin)
    dXdp = np.zeros_like(Xdp)
    for th in range(k):                                          # col2im
        for tw in range(k):
            dXdp[:, th * d:th * d + Hout, tw * d:tw * d + Wout] += dcols[:, :, :, th, tw]
    dX = _pad_crop(dXdp, -lo, -(lo + op))[:, ::s, ::s]
    return {"dX": np.ascontiguousarray(dX), "W": np.ascontiguousarray(dW),
            "b": dY2.sum(axis=0)}


# --------------------------------------------------------------------------- gather

def _gather_blocks(N: int, Hin: int, row_bytes: int, block_bytes: int):
    """Blocks ``(n0, n1, i0, i1)`` of images × input rows whose columns fit in a block.

    Whole images (n1 - n0 >= 1, i0 = 0, i1 = Hin) when one image fits, else bands of
    rows of one image; either way the block's rows are contiguous in X2 and dX.
    """
    band = max(1, block_bytes // row_bytes)
    if band >= Hin:
        step = band // Hin
        for n0 in range(0, N, step):
            yield n0, min(N, n0 + step), 0, Hin
        return
    for n in range(N):
        for i0 in range(0, Hin, band):
            yield n, n + 1, i0, min(Hin, i0 + band)


def _gather_backward(case: Case, cache: dict) -> Grads:
    """Windows of the padded dY gathered block by block; two GEMMs per block.

    Per block of images, dY is copied into a zero-bordered frame (row f holds output
    row f - pad) and cols[n, i, j, p, q, :] = frame[n, i·s + p·d, j·s + q·d, :] is
    copied out of an ``as_strided`` view of it; then dXᵀ = W_colsᵀ · colsᵀ and
    dWᵀ += X2ᵀ · cols. Frame and columns stay in cache between the copies and the
    GEMMs; no scatter, no work on inserted zeros; db is one GEMV per block.
    """
    X2, W_cols, dY = cache["X2"], cache["W_cols"], case.dY
    geo = _geometry(cache["X"], cache["W"], case.shape)
    N, Hin, Win, Cin, Cout, k, s, pad, d, _, Hout, Wout = geo
    Hf, Wf = (Hin - 1) * s + d * (k - 1) + 1, (Win - 1) * s + d * (k - 1) + 1
    h, w = min(Hout, Hf - pad), min(Wout, Wf - pad)      # dY rows/cols inside the frame
    kkC, item = k * k * Cout, dY.itemsize
    row_bytes = Win * kkC * item + s * Wf * Cout * item  # columns + frame per input row
    blocks = list(_gather_blocks(N, Hin, row_bytes, GATHER_BLOCK_BYTES))
    nb = max(n1 - n0 for n0, n1, _, _ in blocks)
    band = max(i1 - i0 for _, _, i0, i1 in blocks)
    frame = np.zeros((nb, Hf, Wf, Cout), dtype=dY.dtype)   # borders stay zero
    sN, sH, sW, sC = frame.strides
    win = np.lib.stride_tricks.as_strided(
        frame, shape=(nb, Hin, Win, k, k, Cout),
        strides=(sN, s * sH, s * sW, d * sH, d * sW, sC), writeable=False)
    buf = np.empty(nb * band * Win * kkC, dtype=dY.dtype)
    dXt = np.empty((Cin, nb * band * Win), dtype=dY.dtype)
    ones = np.ones(nb * Hout * Wout, dtype=dY.dtype)
    dX = np.empty((N * Hin * Win, Cin), dtype=dY.dtype)
    dWt = np.zeros((Cin, kkC), dtype=dY.dtype)
    db = np.zeros(Cout, dtype=dY.dtype)
    for n0, n1, i0, i1 in blocks:
        if i0 == 0:
            if h > 0 and w > 0:
                frame[:n1 - n0, pad:pad + h, pad:pad + w] = dY[n0:n1, :h, :w]
            dY2 = dY[n0:n1].reshape(-1, Cout)
            db += ones[:dY2.shape[0]] @ dY2
        r0, r1 = (n0 * Hin + i0) * Win, ((n1 - 1) * Hin + i1) * Win
        cols = buf[:(r1 - r0) * kkC].reshape(n1 - n0, i1 - i0, Win, k, k, Cout)
        np.copyto(cols, win[:n1 - n0, i0:i1])
        cols2 = cols.reshape(r1 - r0, kkC)
        np.matmul(W_cols.T, cols2.T, out=dXt[:, :r1 - r0])
        dX[r0:r1] = dXt[:, :r1 - r0].T
        dWt += X2[r0:r1].T @ cols2
    dW = np.ascontiguousarray(dWt.reshape(Cin, k, k, Cout).transpose(1, 2, 0, 3))
    return {"dX": dX.reshape(N, Hin, Win, Cin), "W": dW, "b": db}


# --------------------------------------------------------------------------- taps

def _taps_backward(case: Case, cache: dict) -> Grads:
    """One GEMM per tap for dX and one for dW, on the valid input/output slices.

    Per block of images (about TAPS_BLOCK_BYTES of X, dX and dY slices, so the
    strided dX accumulations stay in cache across the k² taps)::

        G = dY[:, o0::s, o1::s]  (copied to rows),  dX[:, i, j] += G · W[p, q]ᵀ,
        dW[p, q] += X[:, i, j]ᵀ · G
    """
    X, W, dY = cache["X"], cache["W"], case.dY
    geo = _geometry(X, W, case.shape)
    N, Hin, Win, Cin, Cout, k = geo.N, geo.Hin, geo.Win, geo.Cin, geo.Cout, geo.k
    per_image = 2 * Hin * Win * (Cin + Cout) * X.itemsize
    nb = max(1, min(N, TAPS_BLOCK_BYTES // per_image))
    taps = [(p, q, sl) for p in range(k) for q in range(k)
            if (sl := _tap_slices(p, q, geo)) is not None]
    WT = W.transpose(0, 1, 3, 2)                                  # (k, k, Cout, Cin) view
    dX, dW = np.zeros_like(X), np.zeros_like(W)
    for n0 in range(0, N, nb):
        Xb, dXb, dYb = X[n0:n0 + nb], dX[n0:n0 + nb], dY[n0:n0 + nb]
        for p, q, ((ri, ci), (ro, co)) in taps:
            G = dYb[:, ro, co]
            G2 = G.reshape(-1, Cout)
            dXb[:, ri, ci] += (G2 @ WT[p, q]).reshape(G.shape[:3] + (Cin,))
            dW[p, q] += Xb[:, ri, ci].reshape(-1, Cin).T @ G2
    dY2 = dY.reshape(-1, Cout)
    return {"dX": dX, "W": dW, "b": np.ones(dY2.shape[0], dtype=dY.dtype) @ dY2}


# --------------------------------------------------------------------------- cost model

def flops(shape) -> int:
    """FLOPs of the minimal backward, counting valid taps only.

    A tap (p, q) of input pixel (i, j) is valid when its output pixel lies inside
    [0, Hout) × [0, Wout); the valid pairs factor per axis, so their number over one
    image is V = Vh · Vw with Vh = #{(i, p): 0 <= i·s - pad + p·d < Hout} (likewise Vw).
    Each valid pair costs one (1×Cin)·(Cin×Cout)-sized multiply-add in dX and one in
    dW, 2·Cin·Cout FLOPs each; db adds every element of dY once::

        flops = 2 · (2·N·Cin·Cout·Vh·Vw) + N·Hout·Wout·Cout

    (V ≈ Hin·Win·k² when padding is small; never any work on inserted zeros).
    """
    full = {dim.name: int(shape[dim.name]) for dim in DIMS}
    Hout, Wout = _out_hw(full)
    geo = (full["k"], full["stride"], full["padding"], full["dilation"])
    Vh = valid_pairs(full["Hin"], Hout, *geo)
    Vw = valid_pairs(full["Win"], Wout, *geo)
    N, Cin, Cout = full["N"], full["Cin"], full["Cout"]
    return 2 * (2 * N * Cin * Cout * Vh * Vw) + N * Hout * Wout * Cout


def memory_estimate(shape, dtype: str) -> int:
    """Bytes of inputs, cache, gradients and the largest method's workspace.

    The largest is ``im2col``: the zero-inserted, padded input, its columns and their
    gradient, each N·Hout·Wout·k²·Cin elements.
    """
    full = {dim.name: int(shape[dim.name]) for dim in DIMS}
    N, Hin, Win, Cin, Cout, k = (full[n] for n in ("N", "Hin", "Win", "Cin", "Cout", "k"))
    Hout, Wout = _out_hw(full)
    s, d = full["stride"], full["dilation"]
    item = np.dtype(dtype).itemsize
    x, y, w = N * Hin * Win * Cin, N * Hout * Wout * Cout, k * k * Cin * Cout
    span = d * (k - 1) + 1
    xdp = N * ((Hin - 1) * s + span + 1) * ((Win - 1) * s + span + 1) * Cin
    cols = N * Hout * Wout * k * k * Cin
    return item * (3 * x + 3 * y + 4 * w + 2 * xdp + 2 * cols)


BACKWARDS = {
    variant_name(NAME, {"method": "im2col"}, AXIS_ORDER): _im2col_backward,
    variant_name(NAME, {"method": "gather"}, AXIS_ORDER): _gather_backward,
    variant_name(NAME, {"method": "taps"}, AXIS_ORDER): _taps_backward,
}

KERNEL = Kernel(
    name=NAME, dims=DIMS, axes=AXES,
    baseline=variant_name(NAME, {"method": "im2col"}, AXIS_ORDER),
    baseline_axes=(),
    check=check, make_case=make_case, forward=forward, reference=reference,
    variants=BACKWARDS, flops=flops, memory_estimate=memory_estimate,
)
KERNELS = [KERNEL]
