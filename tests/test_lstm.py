"""impls.lstm: reference vs finite differences and torch, variants vs reference, traps."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
from conftest import assert_same

from gradsweep.impls import gradcheck, lstm
from gradsweep.impls.base import clip_grads, parse_variant

#: Small shapes (N, T, D, H) for finite differences; T ≥ 3 exercises the carries.
FD_SHAPES = [(2, 3, 3, 4), (1, 5, 2, 3), (3, 4, 1, 2)]
#: Shape for variant checks.
SHAPE = {"N": 3, "T": 6, "D": 4, "H": 5}
#: Relative error accepted between finite differences and the reference.
FD_TOLERANCE = 1e-6
#: Agreement with torch autograd in float64.
TORCH_TOLERANCE = 1e-8
#: Clip settings small enough that every parameter gradient is clipped.
TIGHT_CLIP_VALUE, TIGHT_CLIP_NORM = 1e-3, 1e-2


def _shape(dims) -> dict[str, int]:
    return dict(zip("NTDH", dims))


def _clipped_reference(variant: str, case, cache):
    mode = parse_variant(variant)[1]["clip"]
    want = lstm.reference(case, cache)
    return clip_grads(want, lstm.PARAMS, mode, case.clip_value, case.clip_norm)


@pytest.mark.parametrize("dims", FD_SHAPES)
def test_reference_matches_finite_differences(dims):
    case = lstm.make_case(_shape(dims), "float64", seed=sum(dims))
    assert np.all(case.params["b"] != 0)
    _, cache = lstm.forward(case)
    numeric = gradcheck.finite_differences(lstm.forward, case)
    assert gradcheck.max_rel_err(lstm.reference(case, cache), numeric) < FD_TOLERANCE


def test_kernel_declares_twelve_variants_and_baseline():
    assert len(lstm.BACKWARDS) == 12
    assert lstm.KERNEL.baseline == "lstm/buffers=list,wgrad=step,clip=none"
    assert lstm.KERNEL.baseline_axes == ("buffers", "wgrad")
    assert lstm.KERNELS == [lstm.KERNEL]
    assert lstm.flops(SHAPE) == 16 * 3 * 6 * 5 * (4 + 5)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("variant", sorted(lstm.BACKWARDS))
def test_variant_matches_clipped_reference(variant, dtype):
    case = lstm.make_case(SHAPE, dtype, seed=3)
    _, cache = lstm.forward(case)
    got = lstm.BACKWARDS[variant](case, cache)
    case64 = case.astype("float64")
    want = _clipped_reference(variant, case64, lstm.forward(case64)[1])
    assert set(got) == {"dX", *lstm.PARAMS}
    assert got["dX"].shape == case.X.shape and got["dX"].dtype == case.X.dtype
    for name in lstm.PARAMS:
        assert got[name].shape == case.params[name].shape
        assert got[name].dtype == case.params[name].dtype
    assert gradcheck.max_rel_err(got, want) < gradcheck.TOLERANCE[dtype]


def _snapshot(obj):
    return copy.deepcopy(obj)


@pytest.mark.parametrize("variant", sorted(lstm.BACKWARDS))
def test_backward_never_mutates_and_is_deterministic(variant):
    case = lstm.make_case(SHAPE, "float64", seed=4)
    _, cache = lstm.forward(case)
    inputs, cache_before = _snapshot(case.arrays()), _snapshot(cache)
    first = lstm.BACKWARDS[variant](case, cache)
    second = lstm.BACKWARDS[variant](case, cache)
    assert_same(case.arrays(), inputs)
    assert_same(cache, cache_before)
    assert_same(first, second)


def test_reversed_upstream_changes_every_gradient():
    case = lstm.make_case(SHAPE, "float64", seed=5)
    _, cache = lstm.forward(case)
    backward = lstm.BACKWARDS["lstm/buffers=prealloc,wgrad=batched,clip=none"]
    plain = backward(case, cache)
    flipped = backward(replace(case, dY=case.dY[:, ::-1].copy()), cache)
    for name in plain:
        assert gradcheck.rel_err(flipped[name], plain[name]) > 1e-3


def test_time_shifted_implementation_fails_the_check():
    """A backward that reads dY one step late is caught by the reference check."""
    case = lstm.make_case(SHAPE, "float64", seed=6)
    _, cache = lstm.forward(case)
    backward = lstm.BACKWARDS["lstm/buffers=list,wgrad=step,clip=none"]
    shifted = backward(replace(case, dY=np.roll(case.dY, 1, axis=1)), cache)
    assert gradcheck.max_rel_err(shifted, lstm.reference(case, cache)) > 1e-2


@pytest.mark.parametrize("variant", [v for v in sorted(lstm.BACKWARDS) if "clip=none" in v])
def test_first_input_gets_gradient_from_last_output(variant):
    """dX at t = 0 depends on dY at t = T-1 (the h and c carries through time)."""
    case = lstm.make_case(SHAPE, "float64", seed=7)
    _, cache = lstm.forward(case)
    only_last = np.zeros_like(case.dY)
    only_last[:, -1] = case.dY[:, -1]
    late = replace(case, dY=only_last)
    got = lstm.BACKWARDS[variant](late, cache)
    assert np.max(np.abs(got["dX"][:, 0])) > 1e-6
    assert gradcheck.max_rel_err(got, lstm.reference(late, cache)) < gradcheck.TOLERANCE["float64"]


def test_cell_state_carry_alone_reaches_first_step():
    """With Wh = 0 only the cell state links steps: dX at t = 0 still sees dY at T-1."""
    case = lstm.make_case(_shape((2, 3, 2, 3)), "float64", seed=8)
    case = replace(case, params={**case.params, "Wh": np.zeros_like(case.params["Wh"])})
    only_last = np.zeros_like(case.dY)
    only_last[:, -1] = case.dY[:, -1]
    case = replace(case, dY=only_last)
    _, cache = lstm.forward(case)
    want = lstm.reference(case, cache)
    assert np.max(np.abs(want["dX"][:, 0])) > 1e-6
    numeric = gradcheck.finite_differences(lstm.forward, case)
    assert gradcheck.max_rel_err(want, numeric) < FD_TOLERANCE
    for variant in (v for v in lstm.BACKWARDS if "clip=none" in v):
        got = lstm.BACKWARDS[variant](case, cache)
        assert gradcheck.max_rel_err(got, want) < gradcheck.TOLERANCE["float64"]


def _tight_case(dtype="float64"):
    case = lstm.make_case(SHAPE, dtype, seed=9, clip_value=TIGHT_CLIP_VALUE,
                          clip_norm=TIGHT_CLIP_NORM)
    return case, lstm.forward(case)[1]


@pytest.mark.parametrize("buffers,wgrad", [("list", "step"), ("prealloc", "batched")])
def test_clip_value_bounds_parameter_gradients(buffers, wgrad):
    case, cache = _tight_case()
    plain = lstm.BACKWARDS[f"lstm/buffers={buffers},wgrad={wgrad},clip=none"](case, cache)
    clipped = lstm.BACKWARDS[f"lstm/buffers={buffers},wgrad={wgrad},clip=value"](case, cache)
    for name in lstm.PARAMS:
        assert np.max(np.abs(plain[name])) > TIGHT_CLIP_VALUE
        assert np.max(np.abs(clipped[name])) <= TIGHT_CLIP_VALUE
        assert not np.array_equal(clipped[name], plain[name])
    assert np.array_equal(clipped["dX"], plain["dX"])


@pytest.mark.parametrize("buffers,wgrad", [("list", "batched"), ("prealloc", "step")])
def test_clip_norm_bounds_global_norm(buffers, wgrad):
    case, cache = _tight_case()
    plain = lstm.BACKWARDS[f"lstm/buffers={buffers},wgrad={wgrad},clip=none"](case, cache)
    clipped = lstm.BACKWARDS[f"lstm/buffers={buffers},wgrad={wgrad},clip=norm"](case, cache)

    def norm(g):
        return np.sqrt(sum(np.sum(g[n] ** 2) for n in lstm.PARAMS))

    assert norm(plain) > TIGHT_CLIP_NORM
    assert norm(clipped) <= TIGHT_CLIP_NORM * (1 + 1e-12)
    scale = norm(clipped) / norm(plain)
    for name in lstm.PARAMS:
        np.testing.assert_allclose(clipped[name], plain[name] * scale, rtol=1e-12)
    assert np.array_equal(clipped["dX"], plain["dX"])


def test_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    D, H = 4, 6
    case = lstm.make_case(_shape((3, 5, D, H)), "float64", seed=10)
    Y, cache = lstm.forward(case)
    want = lstm.reference(case, cache)
    module = torch.nn.LSTM(D, H, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.from_numpy(case.params["Wx"].T.copy()))
        module.weight_hh_l0.copy_(torch.from_numpy(case.params["Wh"].T.copy()))
        module.bias_ih_l0.copy_(torch.from_numpy(case.params["b"]))
        module.bias_hh_l0.zero_()
    X = torch.from_numpy(case.X.copy()).requires_grad_(True)
    Y_torch, _ = module(X)
    assert gradcheck.rel_err(Y, Y_torch.detach().numpy()) < TORCH_TOLERANCE
    (Y_torch * torch.from_numpy(case.dY)).sum().backward()
    torch_grads = {"dX": X.grad.numpy(), "Wx": module.weight_ih_l0.grad.numpy().T,
                   "Wh": module.weight_hh_l0.grad.numpy().T, "b": module.bias_ih_l0.grad.numpy()}
    assert gradcheck.max_rel_err(want, torch_grads) < TORCH_TOLERANCE


@pytest.mark.parametrize("dims", [(1, 1, 1, 1), (2, 1, 3, 2), (1, 2, 1, 1)])
def test_minimal_shapes(dims):
    case = lstm.make_case(_shape(dims), "float64", seed=11)
    _, cache = lstm.forward(case)
    want = lstm.reference(case, cache)
    assert gradcheck.max_rel_err(want, gradcheck.finite_differences(lstm.forward, case)) \
        < FD_TOLERANCE
    for variant, backward in lstm.BACKWARDS.items():
        got = backward(case, cache)
        assert gradcheck.max_rel_err(got, _clipped_reference(variant, case, cache)) \
            < gradcheck.TOLERANCE["float64"]
