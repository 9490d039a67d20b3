"""Test-only plugin: real slowdowns injected into a copy of rnn ``prealloc,batched``.

``rnn/buffers=inject-KIND,wgrad=batched,clip=none`` computes what
``buffers=prealloc,wgrad=batched`` computes, with the same arithmetic, plus
``UNITS`` of one kind of real extra work (none by default, so every variant
is the plain one):

- ``pass``: extra full passes over ``dZ_all``, an array the backward already
  writes and reads (``dZ_all *= 1.0`` in place; a fraction is a partial pass);
- ``copy``: extra copies of the cache's arrays ``X`` and ``Y`` (discarded);
- ``transpose``: the GEMM for ``dWx`` (1 unit), and also the one for ``dX``
  (2 units), on a transposed contiguous copy instead of the transposed view;
- ``busy``: a busy-wait of ``UNITS`` times the CPU time the call took so far.

``UNITS`` maps :func:`key` (kind, shape, dtype) to the amount;
``tests/benchmarks/gate_power.py`` calibrates amounts to target slowdowns and
writes them into the candidate's copy of this file.
"""

import time

import numpy as np

from gradsweep.impls.base import Variant

KINDS = ("none", "pass", "copy", "transpose", "busy")
#: Injected amount per ``key(kind, ...)``; missing keys inject nothing.
UNITS: dict[str, float] = {}


def key(kind: str, N: int, T: int, D: int, H: int, dtype: str) -> str:
    """``"pass:32,32,64,128:float64"``: which cell an amount is for."""
    return f"{kind}:{N},{T},{D},{H}:{dtype}"


def _partial(units: float, work) -> None:
    """``work(1.0)`` once per whole unit, then ``work(fraction)`` for the rest."""
    whole, rest = divmod(units, 1.0)
    for _ in range(int(whole)):
        work(1.0)
    if rest > 0:
        work(rest)


def _pass(a: np.ndarray, share: float) -> None:
    flat = a.reshape(-1)
    part = flat[: max(1, int(share * flat.size))]
    np.multiply(part, 1.0, out=part)


def _copy(arrays: tuple[np.ndarray, ...], share: float) -> None:
    for a in arrays:
        flat = a.reshape(-1)
        flat[: max(1, int(share * flat.size))].copy()


def _through_time(case, cache) -> tuple[np.ndarray, int]:
    """dZ for every step (N, T, H): rnn's batched BPTT loop."""
    Y, Wh, dY = cache["Y"], cache["Wh"], case.dY
    N, T, H = Y.shape
    dZ_all = np.empty((N, T, H), dtype=Y.dtype)
    dh_next = np.zeros((N, H), dtype=Y.dtype)
    for t in reversed(range(T)):
        dZ = (dY[:, t] + dh_next) * (1 - Y[:, t] ** 2)
        dZ_all[:, t] = dZ
        dh_next = dZ @ Wh.T
    return dZ_all


def make_backward(kind: str):
    """rnn prealloc/batched with ``UNITS`` of ``kind`` injected."""
    def backward(case, cache):
        start = time.thread_time_ns()
        X, Y, Wx, Wh = cache["X"], cache["Y"], cache["Wx"], cache["Wh"]
        N, T, D = X.shape
        H = Wh.shape[0]
        units = UNITS.get(key(kind, N, T, D, H, X.dtype.name), 0.0)
        dZ_all = _through_time(case, cache)
        if kind == "pass" and units:
            _partial(units, lambda share: _pass(dZ_all, share))
        if kind == "copy" and units:
            _partial(units, lambda share: _copy((X, Y), share))
        dZ2 = dZ_all.reshape(N * T, H)
        X2t = X.reshape(N * T, D).T
        Wxt = Wx.T
        if kind == "transpose" and units >= 1:
            X2t = np.ascontiguousarray(X2t)
        if kind == "transpose" and units >= 2:
            Wxt = np.ascontiguousarray(Wxt)
        dWx = X2t @ dZ2
        dWh = Y[:, :-1].reshape(N * (T - 1), H).T @ dZ_all[:, 1:].reshape(N * (T - 1), H)
        dX = (dZ2 @ Wxt).reshape(N, T, D)
        grads = {"dX": dX, "Wx": dWx, "Wh": dWh, "b": dZ2.sum(axis=0)}
        if kind == "busy" and units:
            until = time.thread_time_ns() + units * (time.thread_time_ns() - start)
            while time.thread_time_ns() < until:
                pass
        return grads

    backward.__name__ = f"rnn_inject_{kind}"
    return backward


VARIANTS = [Variant("rnn", {"buffers": f"inject-{kind}", "wgrad": "batched", "clip": "none"},
                    make_backward(kind)) for kind in KINDS]
