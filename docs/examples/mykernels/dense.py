"""An example gradsweep plugin: a kernel of its own and a variant for a built-in one.

Kernel ``dense``: one tanh layer, Y = tanh(X W + b), X (N, D), W (D, H),
b (H,), Y and dY (N, H). With dZ = dY * (1 - Y**2) its backward is

    dX = dZ Wᵀ (N, D),  dW = Xᵀ dZ (D, H),  db = Σ_n dZ (H,)

Variant ``rnn/buffers=stacked,wgrad=batched,clip=none``: BPTT for the built-in
``rnn`` kernel that keeps every step's dZ in one time-major (T, N, H) array.

Use it with ``plugins = ["mykernels.dense"]`` in a spec (``docs/examples`` on
PYTHONPATH) or ``gradsweep verify dense --plugin mykernels.dense``.
"""

import numpy as np

from gradsweep.impls.base import (
    Axis,
    Case,
    Dim,
    Kernel,
    Variant,
    bias_like,
    rng_for,
    variant_name,
)

NAME = "dense"
DIMS = (Dim("N", 1, 64), Dim("D", 1, 128), Dim("H", 1, 128))
AXES = (Axis("product", ("einsum", "matmul")),)
ORDER = tuple(a.name for a in AXES)


def check(shape):
    """Every shape with each dim at or above its minimum is valid."""
    return None


def make_case(shape, dtype, seed, clip_value=1.0, clip_norm=5.0):
    """Random X (N, D), W (D, H), nonzero b (H,) and dY (N, H), drawn in float64."""
    N, D, H = shape["N"], shape["D"], shape["H"]
    rng = rng_for(seed, NAME, N, D, H)
    params = {"W": rng.standard_normal((D, H)) / np.sqrt(D), "b": bias_like(rng, H, "float64")}
    X = rng.standard_normal((N, D))
    dY = rng.standard_normal((N, H))
    case = Case(NAME, dict(shape), "float64", seed, params, X, dY, clip_value, clip_norm)
    return case.astype(dtype)


def forward(case):
    """Y (N, H) and the cache every backward reads."""
    W = case.params["W"]
    Y = np.tanh(case.X @ W + case.params["b"])
    return Y, {"X": case.X, "Y": Y, "W": W}


def reference(case, cache):
    """The plain backward; gradsweep calls it on the float64 case and cache."""
    dZ = case.dY * (1.0 - cache["Y"] ** 2)
    return {"dX": dZ @ cache["W"].T, "W": cache["X"].T @ dZ, "b": dZ.sum(axis=0)}


def backward_einsum(case, cache):
    """Every product as an einsum."""
    X, Y, W = cache["X"], cache["Y"], cache["W"]
    dZ = case.dY * (1 - Y * Y)
    return {"dX": np.einsum("nh,dh->nd", dZ, W), "W": np.einsum("nd,nh->dh", X, dZ),
            "b": np.einsum("nh->h", dZ)}


def backward_matmul(case, cache):
    """Every product as a matmul (BLAS GEMM)."""
    X, Y, W = cache["X"], cache["Y"], cache["W"]
    dZ = case.dY * (1 - Y * Y)
    return {"dX": dZ @ W.T, "W": X.T @ dZ, "b": dZ.sum(axis=0)}


def flops(shape):
    """The two GEMMs of the minimal backward: 2·N·D·H each."""
    return 4 * shape["N"] * shape["D"] * shape["H"]


def memory_estimate(shape, dtype):
    """Bytes of the inputs, the cache and the gradients."""
    N, D, H = shape["N"], shape["D"], shape["H"]
    return np.dtype(dtype).itemsize * (3 * N * D + 4 * N * H + 2 * D * H + 2 * H)


def name(product):
    """Canonical name of a point on the axes, e.g. ``dense/product=matmul``."""
    return variant_name(NAME, {"product": product}, ORDER)


KERNELS = [Kernel(
    name=NAME, dims=DIMS, axes=AXES, baseline=name("einsum"), check=check,
    make_case=make_case, forward=forward, reference=reference,
    variants={name("einsum"): backward_einsum, name("matmul"): backward_matmul},
    flops=flops, memory_estimate=memory_estimate,
)]


def rnn_stacked(case, cache):
    """RNN BPTT with dZ of every step in one (T, N, H) array; weight gradients after the loop.

    Reads the built-in rnn kernel's cache: X (N, T, D), Y (N, T, H), Wx (D, H), Wh (H, H).
    """
    X, Y, Wx, Wh = cache["X"], cache["Y"], cache["Wx"], cache["Wh"]
    N, T, _ = X.shape
    H = Wh.shape[0]
    dZ = np.empty((T, N, H), dtype=X.dtype)
    dh = np.zeros((N, H), dtype=X.dtype)
    for t in reversed(range(T)):
        dZ[t] = (case.dY[:, t] + dh) * (1 - Y[:, t] ** 2)
        dh = dZ[t] @ Wh.T
    dZ = dZ.transpose(1, 0, 2)  # (N, T, H) view
    H_prev = np.concatenate([np.zeros((N, 1, H), dtype=X.dtype), Y[:, :-1]], axis=1)
    return {"dX": dZ @ Wx.T, "Wx": np.einsum("ntd,nth->dh", X, dZ),
            "Wh": np.einsum("ntk,nth->kh", H_prev, dZ), "b": dZ.sum(axis=(0, 1))}


VARIANTS = [Variant("rnn", {"buffers": "stacked", "wgrad": "batched", "clip": "none"},
                    rnn_stacked)]
