"""Tests of impls/deconv2d.py: reference vs finite differences and torch, methods vs reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gradsweep.impls import deconv2d
from gradsweep.impls.base import baseline_for, is_peer
from gradsweep.impls.gradcheck import TOLERANCE, finite_differences, max_rel_err
from gradsweep.impls.registry import load

#: Largest accepted error of the reference against finite differences (float64).
FD_TOLERANCE = 1e-6
#: Largest accepted error of the forward and reference against torch (float64).
TORCH_TOLERANCE = 1e-8
STRIDES = (1, 2, 3)
DILATIONS = (1, 2)
KERNEL_SIZES = (1, 2, 3)


def _settings() -> list[dict[str, int]]:
    """(k, stride, padding, dilation, output_padding) combinations torch accepts.

    Every stride, dilation and allowed output_padding; padding 0, k - 1 and beyond.
    """
    out = []
    for k, s, d in itertools.product(KERNEL_SIZES, STRIDES, DILATIONS):
        for pad in sorted({0, k - 1, k}):
            for op in range(max(s, d)):
                out.append({"k": k, "stride": s, "padding": pad, "dilation": d,
                            "output_padding": op})
    return out


def _shape(setting: dict[str, int], seed: int) -> dict[str, int]:
    """A tiny random shape around ``setting``, grown until its output is not empty."""
    rng = np.random.default_rng(seed)
    shape = {"N": int(rng.integers(1, 3)), "Hin": int(rng.integers(2, 5)),
             "Win": int(rng.integers(2, 5)), "Cin": int(rng.integers(1, 4)),
             "Cout": int(rng.integers(1, 4)), **setting}
    while deconv2d.check(shape) is not None:
        shape["Hin"] += 1
        shape["Win"] += 1
    return shape


SHAPES = [_shape(s, i) for i, s in enumerate(_settings())]
IDS = [",".join(f"{k}={v}" for k, v in s.items()) for s in SHAPES]


def _grads_equal(a, b) -> bool:
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_settings_cover_the_spec():
    assert {s["stride"] for s in SHAPES} == set(STRIDES)
    assert {s["dilation"] for s in SHAPES} == set(DILATIONS)
    assert any(s["padding"] > s["k"] - 1 for s in SHAPES)
    assert any(s["output_padding"] > 0 for s in SHAPES)
    assert len(SHAPES) == len({tuple(s.items()) for s in SHAPES})


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_reference_matches_finite_differences(shape):
    case = deconv2d.make_case(shape, "float64", seed=3)
    _, cache = deconv2d.forward(case)
    ref = deconv2d.reference(case, cache)
    fd = finite_differences(deconv2d.forward, case)
    assert max_rel_err(ref, fd) < FD_TOLERANCE


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_every_method_matches_reference(shape, dtype):
    case64 = deconv2d.make_case(shape, "float64", seed=5)
    ref = deconv2d.reference(case64, deconv2d.forward(case64)[1])
    case = case64.astype(dtype)
    _, cache = deconv2d.forward(case)
    for name, backward in deconv2d.BACKWARDS.items():
        grads = backward(case, cache)
        assert set(grads) == {"dX", "W", "b"}, name
        for key, g in grads.items():
            assert g.dtype == np.dtype(dtype), (name, key)
            assert g.shape == ref[key].shape, (name, key)
        assert max_rel_err(grads, ref) < TOLERANCE[dtype], name


@pytest.mark.parametrize("block_bytes", [1, 4000])
def test_gather_blocks_of_rows_and_images(monkeypatch, block_bytes):
    monkeypatch.setattr(deconv2d, "GATHER_BLOCK_BYTES", block_bytes)
    shape = deconv2d.KERNEL.full_shape({"N": 3, "Hin": 7, "Win": 5, "Cin": 3, "Cout": 2,
                                        "output_padding": 1, "padding": 0})
    case = deconv2d.make_case(shape, "float64", seed=4)
    _, cache = deconv2d.forward(case)
    grads = deconv2d.BACKWARDS["deconv2d/method=gather"](case, cache)
    assert max_rel_err(grads, deconv2d.reference(case, cache)) < TOLERANCE["float64"]


def test_taps_blocks_of_images(monkeypatch):
    monkeypatch.setattr(deconv2d, "TAPS_BLOCK_BYTES", 1)
    shape = deconv2d.KERNEL.full_shape({"N": 3, "Hin": 4, "Win": 5, "Cin": 3, "Cout": 2})
    case = deconv2d.make_case(shape, "float64", seed=6)
    _, cache = deconv2d.forward(case)
    grads = deconv2d.BACKWARDS["deconv2d/method=taps"](case, cache)
    assert max_rel_err(grads, deconv2d.reference(case, cache)) < TOLERANCE["float64"]


def test_gather_block_plan_covers_every_row():
    for n, h, row_bytes, block in [(3, 7, 10, 1), (3, 7, 10, 25), (3, 7, 10, 150), (2, 4, 1, 99)]:
        covered = [(b, i) for n0, n1, i0, i1 in deconv2d._gather_blocks(n, h, row_bytes, block)
                   for b in range(n0, n1) for i in range(i0, i1)]
        assert covered == [(b, i) for b in range(n) for i in range(h)]


def test_forward_output_size_and_bias():
    shape = deconv2d.KERNEL.full_shape({"N": 2, "Hin": 5, "Win": 3, "output_padding": 1})
    case = deconv2d.make_case(shape, "float64", seed=0)
    Y, _ = deconv2d.forward(case)
    # Hout = (5-1)·2 - 2 + 2 + 1 + 1 = 10, Wout = (3-1)·2 - 2 + 2 + 1 + 1 = 6
    assert Y.shape == (2, 10, 6, 16)
    zero = deconv2d.make_case(shape, "float64", seed=0)
    zero.X[...] = 0
    np.testing.assert_array_equal(deconv2d.forward(zero)[0][1, 4, 2], zero.params["b"])
    assert np.all(case.params["b"] != 0)


@pytest.mark.parametrize("s,d,op", [(1, 1, 1), (2, 1, 2), (2, 2, 2), (1, 3, 3), (3, 1, 5)])
def test_check_refuses_large_output_padding(s, d, op):
    shape = deconv2d.KERNEL.full_shape({"stride": s, "dilation": d, "output_padding": op})
    reason = deconv2d.check(shape)
    assert reason is not None and "output_padding" in reason and "\n" not in reason


@pytest.mark.parametrize("partial", [
    {"Hin": 1, "k": 1, "padding": 1},
    {"Hin": 2, "Win": 9, "k": 1, "stride": 1, "padding": 1},
    {"Win": 1, "k": 1, "padding": 3, "output_padding": 1},
])
def test_check_refuses_empty_output(partial):
    reason = deconv2d.check(deconv2d.KERNEL.full_shape(partial))
    assert reason is not None and "output size" in reason and "\n" not in reason


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_check_accepts_valid_shapes(shape):
    assert deconv2d.check(shape) is None


def test_check_accepts_defaults_and_benchmark_shapes():
    kernel = deconv2d.KERNEL
    for partial in ({}, {"N": 16, "Hin": 32, "Win": 32, "Cin": 32, "Cout": 32},
                    {"Hin": 28, "Win": 28, "Cin": 64, "Cout": 32, "k": 5, "padding": 2},
                    {"stride": 1, "dilation": 3, "output_padding": 2}):
        assert deconv2d.check(kernel.full_shape(partial)) is None


@pytest.mark.parametrize("shape", SHAPES[::7], ids=IDS[::7])
def test_no_mutation_and_deterministic(shape):
    case = deconv2d.make_case(shape, "float64", seed=9)
    _, cache = deconv2d.forward(case)
    before = {k: v.copy() for k, v in {**case.arrays(), **cache}.items()}
    for name, backward in {**deconv2d.BACKWARDS, "reference": deconv2d.reference}.items():
        first, second = backward(case, cache), backward(case, cache)
        assert _grads_equal(first, second), name
        for key, value in {**case.arrays(), **cache}.items():
            np.testing.assert_array_equal(value, before[key], err_msg=f"{name} mutated {key}")


def test_kernel_contract():
    kernel = load().kernel("deconv2d")
    assert [d.name for d in kernel.dims] == ["N", "Hin", "Win", "Cin", "Cout", "k", "stride",
                                             "padding", "dilation", "output_padding"]
    minima = {d.name: d.minimum for d in kernel.dims}
    assert minima.pop("padding") == 0 and minima.pop("output_padding") == 0
    assert set(minima.values()) == {1}
    assert kernel.full_shape({}) == {"N": 8, "Hin": 16, "Win": 16, "Cin": 16, "Cout": 16,
                                     "k": 3, "stride": 2, "padding": 1, "dilation": 1,
                                     "output_padding": 0}
    methods = sorted(v for v in kernel.variants if not is_peer(v))
    assert methods == ["deconv2d/method=gather", "deconv2d/method=im2col",
                                       "deconv2d/method=taps"]
    assert kernel.baseline == "deconv2d/method=im2col" and kernel.baseline_axes == ()
    assert baseline_for(kernel, "deconv2d/method=taps") == "deconv2d/method=im2col"
    assert kernel.memory_estimate(kernel.full_shape({}), "float64") > 0


def _brute_valid_taps(shape) -> int:
    Hout, Wout = deconv2d._out_hw(shape)
    s, pad, d, k = shape["stride"], shape["padding"], shape["dilation"], shape["k"]
    rows = sum(0 <= i * s - pad + p * d < Hout for i in range(shape["Hin"]) for p in range(k))
    cols = sum(0 <= j * s - pad + q * d < Wout for j in range(shape["Win"]) for q in range(k))
    return rows * cols


@pytest.mark.parametrize("shape", SHAPES[::5], ids=IDS[::5])
def test_flops_count_valid_taps(shape):
    Hout, Wout = deconv2d._out_hw(shape)
    N, Cin, Cout = shape["N"], shape["Cin"], shape["Cout"]
    want = 4 * N * Cin * Cout * _brute_valid_taps(shape) + N * Hout * Wout * Cout
    assert deconv2d.flops(shape) == want


def test_flops_of_unpadded_stride_one_is_full():
    shape = deconv2d.KERNEL.full_shape({"stride": 1, "padding": 0})
    N, H, C, k = 8, 16, 16, 3
    assert deconv2d.flops(shape) == 4 * N * H * H * k * k * C * C + N * 18 * 18 * C


def _torch_grads(torch, case):
    """Forward and gradients of torch's conv_transpose2d on the case (float64)."""
    sh, dense = case.shape, np.ascontiguousarray   # torch wants contiguous grads
    x = torch.tensor(dense(case.X.transpose(0, 3, 1, 2)), requires_grad=True)
    w = torch.tensor(dense(case.params["W"].transpose(2, 3, 0, 1)), requires_grad=True)
    b = torch.tensor(case.params["b"], requires_grad=True)
    y = torch.nn.functional.conv_transpose2d(
        x, w, b, stride=sh["stride"], padding=sh["padding"],
        output_padding=sh["output_padding"], dilation=sh["dilation"])
    y.backward(torch.tensor(dense(case.dY.transpose(0, 3, 1, 2))))
    grads = {"dX": x.grad.numpy().transpose(0, 2, 3, 1),
             "W": w.grad.numpy().transpose(2, 3, 0, 1), "b": b.grad.numpy()}
    return y.detach().numpy().transpose(0, 2, 3, 1), grads


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_forward_and_reference_match_torch(shape):
    torch = pytest.importorskip("torch")
    case = deconv2d.make_case(shape, "float64", seed=11)
    Y, cache = deconv2d.forward(case)
    Y_torch, want = _torch_grads(torch, case)
    assert Y.shape == Y_torch.shape
    assert max_rel_err({"Y": Y}, {"Y": Y_torch}) < TORCH_TOLERANCE
    assert max_rel_err(deconv2d.reference(case, cache), want) < TORCH_TOLERANCE


def test_larger_shape_matches_torch():
    torch = pytest.importorskip("torch")
    shape = deconv2d.KERNEL.full_shape({"N": 2, "Hin": 9, "Win": 7, "Cin": 5, "Cout": 6,
                                        "k": 5, "padding": 2, "output_padding": 1})
    case = deconv2d.make_case(shape, "float64", seed=2)
    _, cache = deconv2d.forward(case)
    _, want = _torch_grads(torch, case)
    for name, backward in deconv2d.BACKWARDS.items():
        assert max_rel_err(backward(case, cache), want) < TOLERANCE["float64"], name
