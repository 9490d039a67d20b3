"""Torch autograd peers: ``KERNEL/peer=torch`` for every kernel present.

Each peer is torch autograd's backward of the torch module with the kernel's
meaning (DESIGN.md, Kernels), with our parameters copied in:

=========  =====================================================================
rnn        ``nn.RNN(tanh)``; weight_ih_l0 = Wxᵀ, weight_hh_l0 = Whᵀ, bias_ih_l0 = b,
           bias_hh_l0 = 0
lstm       ``nn.LSTM``; the same mapping (gates i, f, g, o), bias_hh_l0 = 0
gru        ``nn.GRU``; weight_ih_l0 = Wxᵀ, weight_hh_l0 = Whᵀ, bias_ih_l0 = b_ih,
           bias_hh_l0 = b_hh
bilstm     ``nn.LSTM(bidirectional=True)``: fwd_* to ``*_l0``, bwd_* to
           ``*_l0_reverse``; its output is the **concat** merge (N, T, 2H), so the
           peer matches ``merge=concat`` only
deconv2d   ``nn.ConvTranspose2d``: X (N,Hin,Win,Cin) to NCHW, W (k,k,Cin,Cout) to
           weight (Cin,Cout,k,k), b to bias; stride, padding, dilation and
           output_padding from the shape
=========  =====================================================================

The module imports without torch. The backward's ``prepare(case, cache)``
(called by the worker outside the clock) imports torch, sets its thread count to
``case.threads``, builds the module in ``case.dtype``, runs the forward with
``requires_grad`` leaves and returns a :class:`Graph`; without torch it raises
:class:`~gradsweep.impls.base.SkipCell`. The timed backward clears the leaves' grads, calls
``Y.backward(dY, retain_graph=True)`` and returns numpy views of the grads in
our layouts, keyed like the kernel's own gradients.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gradsweep.impls.base import PEER_AXIS, Case, Grads, SkipCell, Variant
from gradsweep.impls.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
else:  # imported when a kernel first computes (gradsweep.impls.lazy)
    np = lazy_import("numpy")

PEER = "torch"
#: Kernels that have a torch peer, in listing order.
KERNEL_NAMES = ("rnn", "lstm", "gru", "bilstm", "deconv2d")
#: (our parameter suffix, torch parameter prefix, transposed?) for RNN-family modules.
RNN_PARAMS = (("Wx", "weight_ih", True), ("Wh", "weight_hh", True))
#: Torch parameter suffixes of the two directions of a bidirectional layer.
DIRECTIONS = (("fwd_", "_l0"), ("bwd_", "_l0_reverse"))
#: NHWC <-> NCHW axis orders and our deconv weight (k,k,Cin,Cout) <-> torch's (Cin,Cout,k,k).
TO_NCHW, TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)
W_TO_TORCH = W_FROM_TORCH = (2, 3, 0, 1)


def _torch():
    """The torch module, or SkipCell when it is not installed."""
    try:
        import torch
    except ImportError as exc:
        raise SkipCell("torch is not installed") from exc
    return torch


@dataclass(frozen=True)
class Graph:
    """A torch forward ready for repeated backwards.

    Attributes
    ----------
    Y : torch.Tensor
        The forward's output, with its autograd graph.
    dY : torch.Tensor
        The upstream gradient, Y's shape and layout.
    leaves : tuple[torch.Tensor, ...]
        Every tensor that receives a gradient (cleared before each backward).
    outputs : dict[str, tuple[torch.Tensor, Callable]]
        Our gradient name -> (leaf, function from its grad as numpy to our layout).
    """

    Y: Any
    dY: Any
    leaves: tuple
    outputs: dict[str, tuple[Any, Callable[[np.ndarray], np.ndarray]]]


def _same(a: np.ndarray) -> np.ndarray:
    return a


def _transpose(a: np.ndarray) -> np.ndarray:
    return a.T


def _tensor(torch, array: np.ndarray, dtype: str):
    """A contiguous torch tensor copy of ``array`` in ``dtype``."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=dtype))


def _copy_params(torch, module, case: Case, mapping: dict[str, tuple[str, bool]],
                 zero: tuple[str, ...]) -> dict[str, tuple[Any, Callable]]:
    """Copy our parameters into ``module``; zero the torch-only ones."""
    outputs = {}
    with torch.no_grad():
        for ours, (theirs, transposed) in mapping.items():
            value = case.params[ours].T if transposed else case.params[ours]
            getattr(module, theirs).copy_(_tensor(torch, value, case.dtype))
            outputs[ours] = (getattr(module, theirs), _transpose if transposed else _same)
        for theirs in zero:
            getattr(module, theirs).zero_()
    return outputs


def _rnn_mapping(prefix: str, suffix: str, bias: tuple[str, ...]) -> dict:
    """Our names -> torch names of one direction's weights and biases."""
    mapping = {prefix + ours: (theirs + suffix, t) for ours, theirs, t in RNN_PARAMS}
    mapping.update({prefix + ours: (theirs + suffix, False)
                    for ours, theirs in zip(bias, ("bias_ih", "bias_hh"), strict=False)})
    return mapping


def _sequence_module(torch, case: Case):
    """The torch module of a sequence kernel and (our name -> torch name, zeroed)."""
    nn, H = torch.nn, case.shape["H"]
    D = case.shape["D"]
    kind = case.kernel
    if kind == "rnn":
        module = nn.RNN(D, H, nonlinearity="tanh", batch_first=True)
    elif kind == "gru":
        module = nn.GRU(D, H, batch_first=True)
    else:
        module = nn.LSTM(D, H, batch_first=True, bidirectional=kind == "bilstm")
    if kind == "gru":
        return module, _rnn_mapping("", "_l0", ("b_ih", "b_hh")), ()
    if kind == "bilstm":
        mapping = {}
        for prefix, suffix in DIRECTIONS:
            mapping.update(_rnn_mapping(prefix, suffix, ("b",)))
        return module, mapping, tuple("bias_hh" + s for _, s in DIRECTIONS)
    return module, _rnn_mapping("", "_l0", ("b",)), ("bias_hh_l0",)


def _build_sequence(torch, case: Case) -> Graph:
    """Forward of rnn, lstm, gru or bilstm (batch-major, h0 = c0 = 0)."""
    module, mapping, zero = _sequence_module(torch, case)
    module = module.to(getattr(torch, case.dtype))
    outputs = _copy_params(torch, module, case, mapping, zero)
    X = _tensor(torch, case.X, case.dtype).requires_grad_(True)
    Y, _ = module(X)
    outputs["dX"] = (X, _same)
    leaves = (X, *module.parameters())
    return Graph(Y, _tensor(torch, case.dY, case.dtype), leaves, outputs)


def _nhwc(a: np.ndarray) -> np.ndarray:
    return a.transpose(TO_NHWC)


def _w_ours(a: np.ndarray) -> np.ndarray:
    return a.transpose(W_FROM_TORCH)


def _build_deconv2d(torch, case: Case) -> Graph:
    """Forward of ``nn.ConvTranspose2d`` on NCHW copies of our NHWC arrays."""
    s = case.shape
    module = torch.nn.ConvTranspose2d(
        s["Cin"], s["Cout"], s["k"], stride=s["stride"], padding=s["padding"],
        output_padding=s["output_padding"], dilation=s["dilation"], bias=True,
    ).to(getattr(torch, case.dtype))
    with torch.no_grad():
        module.weight.copy_(_tensor(torch, case.params["W"].transpose(W_TO_TORCH), case.dtype))
        module.bias.copy_(_tensor(torch, case.params["b"], case.dtype))
    X = _tensor(torch, case.X.transpose(TO_NCHW), case.dtype).requires_grad_(True)
    Y = module(X)
    dY = _tensor(torch, case.dY.transpose(TO_NCHW), case.dtype)
    outputs = {"dX": (X, _nhwc), "W": (module.weight, _w_ours), "b": (module.bias, _same)}
    return Graph(Y, dY, (X, *module.parameters()), outputs)


def prepare(case: Case, cache: Any = None) -> Graph:
    """Build and run the torch forward of ``case`` (outside the clock).

    Raises
    ------
    SkipCell
        When torch is not installed.
    """
    torch = _torch()
    torch.set_num_threads(case.threads)
    build = _build_deconv2d if case.kernel == "deconv2d" else _build_sequence
    return build(torch, case)


def _backward(case: Case, graph: Graph) -> Grads:
    """Torch autograd's backward of the prepared forward; grads in our layouts."""
    if not isinstance(graph, Graph):
        _torch()
        raise TypeError("the torch peer needs the Graph returned by its prepare(case, cache)")
    for leaf in graph.leaves:
        leaf.grad = None
    graph.Y.backward(graph.dY, retain_graph=True)
    return {name: to_ours(leaf.grad.numpy()) for name, (leaf, to_ours) in graph.outputs.items()}


def make_peer(kernel: str):
    """The peer backward of ``kernel`` (its own function object) with ``prepare``."""

    def backward(case: Case, graph: Graph) -> Grads:
        return _backward(case, graph)

    backward.__name__ = f"{kernel}_peer_{PEER}"
    backward.__doc__ = _backward.__doc__
    backward.prepare = prepare
    return backward


def available_kernels() -> tuple[str, ...]:
    """The kernels of KERNEL_NAMES whose module exists in the ``impls`` package."""
    return tuple(k for k in KERNEL_NAMES
                 if importlib.util.find_spec(f"gradsweep.impls.{k}") is not None)


VARIANTS = [Variant(k, {PEER_AXIS: PEER}, make_peer(k)) for k in available_kernels()]
