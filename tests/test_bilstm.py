"""impls.bilstm: every merge mode vs finite differences and torch; variants vs reference."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
from conftest import assert_same

from gradsweep.impls import bilstm, gradcheck
from gradsweep.impls.base import clip_grads, parse_variant

#: Small shapes (N, T, D, H) for finite differences; T ≥ 3 exercises the carries.
FD_SHAPES = [(2, 3, 2, 3), (1, 4, 3, 2)]
#: Shape for variant checks.
SHAPE = {"N": 2, "T": 5, "D": 3, "H": 4}
FD_TOLERANCE = 1e-6
TORCH_TOLERANCE = 1e-8
TIGHT_CLIP_VALUE, TIGHT_CLIP_NORM = 1e-3, 1e-2


def _shape(dims) -> dict[str, int]:
    return dict(zip("NTDH", dims))


def _variant(buffers="prealloc", wgrad="batched", clip="none", merge="concat") -> str:
    return f"bilstm/buffers={buffers},wgrad={wgrad},clip={clip},merge={merge}"


def _fd_case(case, merge):
    """The case whose loss sum(dY·Y) is merge's loss (dY narrowed for H-wide merges)."""
    return replace(case, dY=bilstm.upstream(case, merge).copy())


@pytest.mark.parametrize("merge", bilstm.MERGES)
@pytest.mark.parametrize("dims", FD_SHAPES)
def test_reference_matches_finite_differences(dims, merge):
    case = bilstm.make_case(_shape(dims), "float64", seed=sum(dims))
    backward = bilstm.BACKWARDS[_variant(merge=merge)]
    _, cache = backward.forward(case)
    numeric = gradcheck.finite_differences(backward.forward, _fd_case(case, merge))
    assert gradcheck.max_rel_err(backward.reference(case, cache), numeric) < FD_TOLERANCE


def test_kernel_declares_48_variants_with_merge_attributes():
    assert len(bilstm.BACKWARDS) == 48
    assert bilstm.KERNEL.baseline == _variant("list", "step", "none", "concat")
    case = bilstm.make_case(SHAPE, "float64", seed=1)
    Y, cache = bilstm.forward(case)
    assert Y.shape == (2, 5, 8) and case.dY.shape == Y.shape
    for name, backward in bilstm.BACKWARDS.items():
        merge = parse_variant(name)[1]["merge"]
        assert backward.merge == merge
        Y_merge, _ = backward.forward(case)
        assert Y_merge.shape == bilstm.upstream(case, merge).shape
    assert bilstm.flops(SHAPE) == 32 * 2 * 5 * 4 * (3 + 4)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("variant", sorted(bilstm.BACKWARDS))
def test_variant_matches_clipped_reference(variant, dtype):
    case = bilstm.make_case(SHAPE, dtype, seed=3)
    backward = bilstm.BACKWARDS[variant]
    _, cache = bilstm.forward(case)
    got = backward(case, cache)
    case64 = case.astype("float64")
    want = backward.reference(case64, backward.forward(case64)[1])
    mode = parse_variant(variant)[1]["clip"]
    want = clip_grads(want, bilstm.PARAMS, mode, case.clip_value, case.clip_norm)
    assert set(got) == {"dX", *bilstm.PARAMS}
    assert got["dX"].shape == case.X.shape and got["dX"].dtype == case.X.dtype
    assert gradcheck.max_rel_err(got, want) < gradcheck.TOLERANCE[dtype]


@pytest.mark.parametrize("variant", sorted(bilstm.BACKWARDS))
def test_backward_never_mutates_and_is_deterministic(variant):
    case = bilstm.make_case(SHAPE, "float64", seed=4)
    _, cache = bilstm.forward(case)
    inputs, cache_before = copy.deepcopy(case.arrays()), copy.deepcopy(cache)
    first = bilstm.BACKWARDS[variant](case, cache)
    second = bilstm.BACKWARDS[variant](case, cache)
    assert_same(case.arrays(), inputs)
    assert_same(cache, cache_before)
    assert_same(first, second)


def test_backward_direction_runs_over_reversed_time():
    """The bwd direction's output at t = 0 has seen the whole sequence, its t = T-1 only x_{T-1}."""
    case = bilstm.make_case(SHAPE, "float64", seed=5)
    Y, _ = bilstm.forward(case)
    X_late = case.X.copy()
    X_late[:, 0] += 1.0
    Y_late, _ = bilstm.forward(replace(case, X=X_late))
    H = SHAPE["H"]
    changed = np.abs(Y_late - Y) > 1e-12
    assert changed[:, :, :H].all()                      # fwd: every step after t = 0
    assert changed[:, 0, H:].all() and not changed[:, 1:, H:].any()   # bwd: only t = 0


@pytest.mark.parametrize("merge", bilstm.MERGES)
def test_reversed_upstream_changes_every_gradient(merge):
    case = bilstm.make_case(SHAPE, "float64", seed=6)
    _, cache = bilstm.forward(case)
    backward = bilstm.BACKWARDS[_variant(merge=merge)]
    plain = backward(case, cache)
    flipped = backward(replace(case, dY=case.dY[:, ::-1].copy()), cache)
    shifted = backward(replace(case, dY=np.roll(case.dY, 1, axis=1)), cache)
    for name in plain:
        assert gradcheck.rel_err(flipped[name], plain[name]) > 1e-3
    assert gradcheck.max_rel_err(shifted, backward.reference(case, cache)) > 1e-2


@pytest.mark.parametrize("merge", bilstm.MERGES)
def test_first_and_last_inputs_see_the_far_end(merge):
    """dX at t = 0 depends on dY at T-1 (fwd carries) and dX at T-1 on dY at 0 (bwd)."""
    case = bilstm.make_case(SHAPE, "float64", seed=7)
    _, cache = bilstm.forward(case)
    backward = bilstm.BACKWARDS[_variant("list", "step", merge=merge)]
    for src, dst in ((-1, 0), (0, -1)):
        dY = np.zeros_like(case.dY)
        dY[:, src] = case.dY[:, src]
        got = backward(replace(case, dY=dY), cache)
        assert np.max(np.abs(got["dX"][:, dst])) > 1e-6


def _tight_case():
    case = bilstm.make_case(SHAPE, "float64", seed=9, clip_value=TIGHT_CLIP_VALUE,
                            clip_norm=TIGHT_CLIP_NORM)
    return case, bilstm.forward(case)[1]


@pytest.mark.parametrize("merge", bilstm.MERGES)
def test_clipping_bounds_parameter_gradients(merge):
    case, cache = _tight_case()
    plain = bilstm.BACKWARDS[_variant("list", "step", "none", merge)](case, cache)
    by_value = bilstm.BACKWARDS[_variant("list", "step", "value", merge)](case, cache)
    by_norm = bilstm.BACKWARDS[_variant("prealloc", "batched", "norm", merge)](case, cache)

    def norm(g):
        return np.sqrt(sum(np.sum(g[n] ** 2) for n in bilstm.PARAMS))

    for name in bilstm.PARAMS:
        assert np.max(np.abs(plain[name])) > TIGHT_CLIP_VALUE
        assert np.max(np.abs(by_value[name])) <= TIGHT_CLIP_VALUE
        assert not np.array_equal(by_value[name], plain[name])
    assert norm(plain) > TIGHT_CLIP_NORM
    assert norm(by_norm) <= TIGHT_CLIP_NORM * (1 + 1e-12)
    np.testing.assert_allclose(by_norm["dX"], plain["dX"], rtol=1e-12)
    assert np.array_equal(by_value["dX"], plain["dX"])


def _torch_bilstm(torch, case):
    D, H = case.X.shape[2], case.params["fwd_Wh"].shape[0]
    module = torch.nn.LSTM(D, H, batch_first=True, bidirectional=True, dtype=torch.float64)
    with torch.no_grad():
        for d, suffix in (("fwd", ""), ("bwd", "_reverse")):
            p = case.params
            getattr(module, f"weight_ih_l0{suffix}").copy_(torch.from_numpy(p[f"{d}_Wx"].T.copy()))
            getattr(module, f"weight_hh_l0{suffix}").copy_(torch.from_numpy(p[f"{d}_Wh"].T.copy()))
            getattr(module, f"bias_ih_l0{suffix}").copy_(torch.from_numpy(p[f"{d}_b"]))
            getattr(module, f"bias_hh_l0{suffix}").zero_()
    return module


def _torch_merge(Y, H, merge):
    Yf, Yb = Y[..., :H], Y[..., H:]
    return {"concat": Y, "sum": Yf + Yb, "average": (Yf + Yb) / 2, "multiply": Yf * Yb}[merge]


@pytest.mark.parametrize("merge", bilstm.MERGES)
def test_matches_torch_autograd(merge):
    torch = pytest.importorskip("torch")
    case = bilstm.make_case(_shape((3, 5, 4, 6)), "float64", seed=10)
    backward = bilstm.BACKWARDS[_variant(merge=merge)]
    Y, cache = backward.forward(case)
    want = backward.reference(case, cache)
    module = _torch_bilstm(torch, case)
    X = torch.from_numpy(case.X.copy()).requires_grad_(True)
    Y_torch = _torch_merge(module(X)[0], 6, merge)
    assert gradcheck.rel_err(Y, Y_torch.detach().numpy()) < TORCH_TOLERANCE
    (Y_torch * torch.from_numpy(bilstm.upstream(case, merge).copy())).sum().backward()
    got = {"dX": X.grad.numpy()}
    for d, suffix in (("fwd", ""), ("bwd", "_reverse")):
        got[f"{d}_Wx"] = getattr(module, f"weight_ih_l0{suffix}").grad.numpy().T
        got[f"{d}_Wh"] = getattr(module, f"weight_hh_l0{suffix}").grad.numpy().T
        got[f"{d}_b"] = getattr(module, f"bias_ih_l0{suffix}").grad.numpy()
    assert gradcheck.max_rel_err(want, got) < TORCH_TOLERANCE


@pytest.mark.parametrize("dims", [(1, 1, 1, 1), (2, 2, 1, 2)])
def test_minimal_shapes(dims):
    case = bilstm.make_case(_shape(dims), "float64", seed=11)
    _, cache = bilstm.forward(case)
    for variant, backward in bilstm.BACKWARDS.items():
        want = backward.reference(case, cache)
        mode = parse_variant(variant)[1]["clip"]
        want = clip_grads(want, bilstm.PARAMS, mode, case.clip_value, case.clip_norm)
        assert gradcheck.max_rel_err(backward(case, cache), want) < gradcheck.TOLERANCE["float64"]
