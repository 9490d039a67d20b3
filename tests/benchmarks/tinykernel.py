"""A gradsweep plugin of microsecond cells, for the scale benchmark (scale.py).

Kernel ``tiny``: Y = X * w with X (N,) and one parameter w (1,); its backward is
dX = dY * w (N,), dw = Σ dY * X (1,). Every variant (axis ``v``, values
``v00`` .. ``v99``) computes exactly that: the cells differ only by name, so a
sweep's cost is the harness's own. Use with ``plugins = ["tinykernel"]`` and this
directory on PYTHONPATH.
"""

import numpy as np

from gradsweep.impls.base import Axis, Case, Dim, Kernel, rng_for, variant_name

NAME = "tiny"
#: Variants available: a group of a sweep has as many members as the spec picks.
VARIANTS_AVAILABLE = 100
VALUES = tuple(f"v{i:02d}" for i in range(VARIANTS_AVAILABLE))
DIMS = (Dim("N", 1, 4),)
AXES = (Axis("v", VALUES),)


def check(shape):
    """Every shape with N at or above 1 is valid."""
    return None


def make_case(shape, dtype, seed, clip_value=1.0, clip_norm=5.0):
    """Random X (N,), w (1,) and dY (N,), drawn in float64."""
    n = shape["N"]
    rng = rng_for(seed, NAME, n)
    case = Case(NAME, dict(shape), "float64", seed, {"w": rng.standard_normal(1)},
                rng.standard_normal(n), rng.standard_normal(n), clip_value, clip_norm)
    return case.astype(dtype)


def forward(case):
    """Y (N,) and the cache: X and w."""
    w = case.params["w"]
    return case.X * w, {"X": case.X, "w": w}


def backward(case, cache):
    """dX (N,) and dw (1,): two elementwise products and a sum (microseconds)."""
    return {"dX": case.dY * cache["w"], "w": np.atleast_1d(case.dY @ cache["X"])}


def flops(shape):
    """Two products and a sum over N."""
    return 3 * shape["N"]


def memory_estimate(shape, dtype):
    """Bytes of X, Y, dY, dX and the parameter and its gradient."""
    return np.dtype(dtype).itemsize * (4 * shape["N"] + 2)


def name(v):
    """Canonical variant name, e.g. ``tiny/v=v07``."""
    return variant_name(NAME, {"v": v}, ("v",))


KERNELS = [Kernel(
    name=NAME, dims=DIMS, axes=AXES, baseline=name(VALUES[0]), check=check,
    make_case=make_case, forward=forward, reference=backward,
    variants={name(v): backward for v in VALUES}, flops=flops,
    memory_estimate=memory_estimate,
)]
