"""The kernel contract shared by every built-in and plugin kernel.

A *kernel* is a forward computation with a float64 reference backward and a set
of backward *variants*. A variant is a point on the kernel's named axes; its
canonical name lists every axis in the kernel's axis order, e.g.
``lstm/buffers=prealloc,wgrad=batched,clip=none``. Peers (``lstm/peer=torch``)
are another family of backward functions of the same forward.

A backward function has the signature ``backward(case, cache) -> Grads``:
it takes the forward's cache and the case (whose ``dY`` is the upstream
gradient) and returns ``dX`` plus one gradient per parameter, keyed by the
parameter names. It never mutates its inputs or the cache.

A backward may carry an attribute ``prepare(case, cache) -> cache``: the worker
calls it once, outside the clock, and passes its result to the backward instead
of the forward's cache. Peers use it to run their own forward (e.g. torch's,
building the autograd graph) so that only the backward is timed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from gradsweep.impls.lazy import lazy_import

if TYPE_CHECKING:
    import hashlib

    import numpy as np
else:  # imported when a kernel first computes (gradsweep.impls.lazy)
    hashlib = lazy_import("hashlib")
    np = lazy_import("numpy")

#: Gradients of one backward call: ``"dX"`` plus one entry per parameter name.
Grads = dict[str, "np.ndarray"]
#: A shape: every dim of the kernel by name, e.g. ``{"N": 16, "T": 32, ...}``.
Shape = Mapping[str, int]
Backward = Callable[["Case", Any], Grads]

#: Numeric dtypes a cell may use.
DTYPES = ("float32", "float64")
#: Defaults for the clipping settings (DESIGN.md, Variants).
DEFAULT_CLIP_VALUE = 1.0
DEFAULT_CLIP_NORM = 5.0
#: Name of the peer axis (``KERNEL/peer=torch``).
PEER_AXIS = "peer"


@dataclass(frozen=True)
class Dim:
    """One dimension of a kernel's shape: its name, minimum and default."""

    name: str
    minimum: int
    default: int


@dataclass(frozen=True)
class Axis:
    """One variant axis with its values in order (the first is the default)."""

    name: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Case:
    """One concrete problem: parameters, input and upstream gradient.

    Attributes
    ----------
    kernel : str
        The kernel's name.
    shape : Mapping[str, int]
        Every dim of the kernel.
    dtype : str
        ``"float32"`` or ``"float64"``; every array below has this dtype.
    seed : int
        The seed the arrays were drawn with.
    params : dict[str, np.ndarray]
        Parameters by name (``Wx``, ``Wh``, ``b``, ...).
    X : np.ndarray
        The input, e.g. (N, T, D) for sequences.
    dY : np.ndarray
        The upstream gradient, the shape of the forward's output.
    clip_value, clip_norm : float
        Clipping settings used by the ``clip=value`` / ``clip=norm`` variants.
    threads : int
        BLAS threads of the cell (the worker sets it; peers that run their own
        thread pool, like torch, follow it).
    """

    kernel: str
    shape: Mapping[str, int]
    dtype: str
    seed: int
    params: dict[str, np.ndarray]
    X: np.ndarray
    dY: np.ndarray
    clip_value: float = DEFAULT_CLIP_VALUE
    clip_norm: float = DEFAULT_CLIP_NORM
    threads: int = 1

    def astype(self, dtype: str) -> Case:
        """The same case with every array cast to ``dtype`` (new arrays)."""
        return replace(
            self,
            dtype=dtype,
            params={k: v.astype(dtype) for k, v in self.params.items()},
            X=self.X.astype(dtype),
            dY=self.dY.astype(dtype),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """Every input array by name (``X``, ``dY`` and the parameters)."""
        return {"X": self.X, "dY": self.dY, **self.params}


@dataclass(frozen=True)
class Kernel:
    """Everything the service needs to know about one kernel.

    Attributes
    ----------
    name : str
        The kernel's name, the prefix of its variants' canonical names.
    dims : tuple[Dim, ...]
        The shape's dims in canonical order.
    axes : tuple[Axis, ...]
        The variant axes in canonical order.
    baseline : str
        Canonical name of the variant speed-ups are measured against (for a
        kernel with other axes, the baseline's values on the axes that define
        the "seed style"; see :func:`baseline_for`).
    check : Callable[[Shape], str | None]
        None, or a one-line reason the shape is invalid.
    make_case : Callable[[Shape, str, int, float, float], Case]
        ``make_case(shape, dtype, seed, clip_value, clip_norm)``.
    forward : Callable[[Case], tuple[np.ndarray, Any]]
        Returns ``(Y, cache)``.
    reference : Callable[[Case, Any], Grads]
        The plain float64 reference backward.
    variants : Mapping[str, Backward]
        Canonical variant name -> backward function (peers included).
    flops : Callable[[Shape], int]
        FLOPs of the minimal backward.
    memory_estimate : Callable[[Shape, str], int]
        Bytes a cell of this shape and dtype needs (for dry runs and budgets).
    baseline_axes : tuple[str, ...]
        Axes whose values define the baseline; a variant's baseline keeps its
        own values on every other axis (e.g. BPTT keeps ``clip`` and
        ``merge``). Empty: the baseline is exactly ``baseline``.
    """

    name: str
    dims: tuple[Dim, ...]
    axes: tuple[Axis, ...]
    baseline: str
    check: Callable[[Shape], str | None]
    make_case: Callable[..., Case]
    forward: Callable[[Case], tuple[np.ndarray, Any]]
    reference: Callable[[Case, Any], Grads]
    variants: Mapping[str, Backward]
    flops: Callable[[Shape], int]
    memory_estimate: Callable[[Shape, str], int]
    baseline_axes: tuple[str, ...] = field(default=())

    def dim(self, name: str) -> Dim:
        """The dim called ``name`` (KeyError if there is none)."""
        for d in self.dims:
            if d.name == name:
                return d
        raise KeyError(name)

    def axis(self, name: str) -> Axis:
        """The axis called ``name`` (KeyError if there is none)."""
        for a in self.axes:
            if a.name == name:
                return a
        raise KeyError(name)

    def full_shape(self, partial: Shape) -> dict[str, int]:
        """``partial`` with every missing dim at its default, in dim order."""
        return {d.name: int(partial.get(d.name, d.default)) for d in self.dims}


def variant_name(kernel: str, axes: Mapping[str, str], order: tuple[str, ...]) -> str:
    """Canonical variant name: ``kernel/a=v,b=w`` with axes in ``order``.

    Examples
    --------
    >>> variant_name("lstm", {"wgrad": "step", "buffers": "list"}, ("buffers", "wgrad"))
    'lstm/buffers=list,wgrad=step'
    """
    return kernel + "/" + ",".join(f"{a}={axes[a]}" for a in order)


def parse_variant(name: str) -> tuple[str, dict[str, str]]:
    """Split a canonical name into its kernel and ``{axis: value}``.

    Raises
    ------
    ValueError
        When ``name`` is not of the form ``kernel/axis=value,...``.
    """
    kernel, sep, rest = name.partition("/")
    if not sep or not kernel or not rest:
        raise ValueError(f"variant {name!r}: expected KERNEL/axis=value,...")
    axes: dict[str, str] = {}
    for part in rest.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key or not value:
            raise ValueError(f"variant {name!r}: {part!r} is not axis=value")
        axes[key] = value
    return kernel, axes


def is_peer(variant: str) -> bool:
    """Whether a canonical variant name belongs to the peer family."""
    return PEER_AXIS in parse_variant(variant)[1]


def baseline_for(kernel: Kernel, variant: str) -> str | None:
    """The baseline a variant's speed-up is measured against, or None.

    The baseline takes the kernel's baseline values on ``kernel.baseline_axes``
    and the variant's own values on every other axis, so a clipped or merged
    variant is compared with the seed-style variant of the same clip or merge.
    Peers compare with the plain baseline.
    """
    _, base_axes = parse_variant(kernel.baseline)
    _, axes = parse_variant(variant)
    if PEER_AXIS in axes or not kernel.baseline_axes:
        return kernel.baseline
    merged = {**axes, **{a: base_axes[a] for a in kernel.baseline_axes}}
    name = variant_name(kernel.name, merged, tuple(a.name for a in kernel.axes))
    return name if name in kernel.variants else None


def rng_for(seed: int, *key: object) -> np.random.Generator:
    """A generator seeded from ``seed`` and a key (kernel name, shape, ...).

    Stable across processes: the key is hashed with sha256, not ``hash()``.
    """
    digest = hashlib.sha256(repr((seed, *map(str, key))).encode()).digest()
    return np.random.default_rng(list(digest[:16]))


def bias_like(rng: np.random.Generator, n: int, dtype: str) -> np.ndarray:
    """A nonzero bias vector of length ``n`` (uniform in ±[0.1, 0.5])."""
    magnitude = rng.uniform(0.1, 0.5, size=n)
    sign = rng.choice([-1.0, 1.0], size=n)
    return (magnitude * sign).astype(dtype)


def clip_grads(grads: Grads, names: tuple[str, ...], mode: str,
               clip_value: float, clip_norm: float) -> Grads:
    """Clip the parameter gradients ``names`` in place of copies; dX untouched.

    Parameters
    ----------
    grads : Grads
        Gradients by name; not mutated.
    names : tuple[str, ...]
        Parameter gradient names to clip (never ``dX``).
    mode : {"none", "value", "norm"}
        ``value``: elementwise to [-clip_value, clip_value].
        ``norm``: all of ``names`` rescaled together so that their global L2
        norm is at most ``clip_norm`` (Pascanu et al. 2013, eq. 7).

    Returns
    -------
    Grads
        A new dict; clipped entries are new arrays.
    """
    out = dict(grads)
    if mode == "none":
        return out
    if mode == "value":
        for n in names:
            out[n] = np.clip(grads[n], -clip_value, clip_value)
        return out
    if mode == "norm":
        total = float(np.sqrt(sum(float(np.sum(np.square(grads[n], dtype=np.float64)))
                                  for n in names)))
        scale = clip_norm / total if total > clip_norm else 1.0
        for n in names:
            out[n] = grads[n] * grads[n].dtype.type(scale)
        return out
    raise ValueError(f"clip mode {mode!r}: expected none, value or norm")


@dataclass(frozen=True)
class Variant:
    """An extra backward contributed to an existing kernel by a module.

    ``axes`` names a point on the kernel's axes (a value not yet declared is
    added to that axis), or ``{"peer": NAME}`` for a peer.
    """

    kernel: str
    axes: Mapping[str, str]
    backward: Backward


class SkipCell(Exception):
    """Raised by a backward that cannot run here (e.g. torch not installed).

    The worker records the cell as ``skipped`` with this message.
    """


#: Name of the clipping axis; its value selects :func:`clip_grads`' mode.
CLIP_AXIS = "clip"


def forward_for(kernel: Kernel, backward: Backward) -> Callable[[Case], tuple[np.ndarray, Any]]:
    """The forward a variant's backward belongs to.

    A backward may carry its own ``forward`` attribute (e.g. a bilstm merge mode
    whose output differs from the kernel's default forward); else the kernel's.
    """
    return getattr(backward, "forward", kernel.forward)


def reference_for(kernel: Kernel, variant: str) -> Callable[[Case, Any], Grads]:
    """The float64 reference a variant is checked against.

    The backward's own ``reference`` attribute if it has one, else the
    kernel's; for a variant with a ``clip`` axis, the reference's parameter
    gradients are clipped the same way (clipping is idempotent, so a reference
    that already clips is unchanged).
    """
    backward = kernel.variants[variant]
    plain = getattr(backward, "reference", kernel.reference)
    mode = parse_variant(variant)[1].get(CLIP_AXIS, "none")
    if mode == "none":
        return plain

    def clipped(case: Case, cache: Any) -> Grads:
        grads = plain(case, cache)
        names = tuple(k for k in grads if k != "dX")
        return clip_grads(grads, names, mode, case.clip_value, case.clip_norm)

    return clipped
