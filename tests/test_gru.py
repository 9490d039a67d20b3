"""Tests of impls/gru.py: reference vs finite differences and torch, variants vs reference."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gradsweep.impls import gru
from gradsweep.impls.base import baseline_for, clip_grads
from gradsweep.impls.gradcheck import TOLERANCE, finite_differences, max_rel_err
from gradsweep.impls.registry import load

#: Largest accepted error of the reference against finite differences (float64).
FD_TOLERANCE = 1e-6
#: Largest accepted error of the forward and reference against torch (float64).
TORCH_TOLERANCE = 1e-8
#: A deliberately wrong backward must miss the reference by at least this much.
TRAP_MIN_ERROR = 1e-3
#: Shapes for variant checks: a generic one and the degenerate edges (T = 1, H = 1).
VARIANT_SHAPES = [(5, 7, 4, 6), (1, 1, 1, 1), (2, 1, 3, 2), (3, 6, 2, 1)]
BUGS = ("misaligned_h", "misaligned_dY", "drop_first", "drop_last", "reset_before_matmul")


def _shape(dims) -> dict[str, int]:
    return dict(zip("NTDH", dims, strict=True))


def _random_shapes(count: int, seed: int, high: int = 4) -> list[tuple[int, ...]]:
    rng = np.random.default_rng(seed)
    return [tuple(int(v) for v in rng.integers(1, high + 1, size=4)) for _ in range(count)]


def _case(dims, dtype="float64", seed=0):
    case = gru.make_case(_shape(dims), dtype, seed)
    return case, gru.forward(case)[1]


def _grads_equal(a, b) -> bool:
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_kernel_declaration():
    assert len(gru.BACKWARDS) == 12
    assert gru.KERNEL.baseline == "gru/buffers=list,wgrad=step,clip=none"
    kernel = load().kernel("gru")
    assert set(gru.BACKWARDS) <= set(kernel.variants)
    assert baseline_for(kernel, "gru/buffers=prealloc,wgrad=batched,clip=norm") == \
        "gru/buffers=list,wgrad=step,clip=norm"
    shape = _shape((2, 3, 5, 7))
    assert gru.flops(shape) == 12 * 2 * 3 * 7 * (5 + 7)
    assert gru.memory_estimate(shape, "float64") == 2 * gru.memory_estimate(shape, "float32")


def test_case_has_nonzero_biases_and_random_upstream():
    case, _ = _case((3, 4, 2, 5))
    assert np.all(case.params["b_ih"] != 0) and np.all(case.params["b_hh"] != 0)
    assert not np.allclose(case.dY, case.dY.flat[0])
    again = gru.make_case(_shape((3, 4, 2, 5)), "float64", 0)
    assert all(np.array_equal(a, again.arrays()[k]) for k, a in case.arrays().items())


@pytest.mark.parametrize("dims", _random_shapes(3, seed=11), ids=str)
def test_reference_matches_finite_differences(dims):
    case, cache = _case(dims, seed=sum(dims))
    assert max_rel_err(gru.reference(case, cache), finite_differences(gru.forward, case)) \
        < FD_TOLERANCE


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("dims", VARIANT_SHAPES, ids=str)
def test_every_variant_matches_the_clipped_reference(dims, dtype):
    case64, cache64 = _case(dims, seed=3)
    ref = gru.reference(case64, cache64)
    case = case64.astype(dtype)
    _, cache = gru.forward(case)
    for name, backward in gru.BACKWARDS.items():
        clip = name.rpartition("clip=")[2]
        want = clip_grads(ref, gru.PARAMS, clip, case.clip_value, case.clip_norm)
        got = backward(case, cache)
        assert all(g.dtype == np.dtype(dtype) for g in got.values()), name
        assert all(got[k].shape == want[k].shape for k in want), name
        assert max_rel_err(got, want) < TOLERANCE[dtype], name


def test_no_mutation_and_deterministic():
    case, cache = _case((3, 5, 4, 6))
    before = {k: v.copy() for k, v in {**case.arrays(), **cache}.items()}
    for name, backward in gru.BACKWARDS.items():
        first = backward(case, cache)
        second = backward(case, cache)
        assert _grads_equal(first, second), name
        after = {**case.arrays(), **cache}
        assert all(np.array_equal(before[k], after[k]) for k in before), name


def _wrong_grads(case, cache, bug: str | None):
    """A float64 BPTT written apart from the kernel, with one deliberate bug (or none)."""
    X, dY = case.X, case.dY
    Wx, Wh = case.params["Wx"], case.params["Wh"]
    R, Z, Ng, Ghn, Hprev, Y = (cache[k] for k in ("R", "Z", "Ng", "Ghn", "Hprev", "Y"))
    N, T, _ = X.shape
    H = Wh.shape[0]
    Whn = Wh[:, 2 * H:]
    g = {"dX": np.zeros_like(X), **{k: np.zeros_like(v) for k, v in case.params.items()}}
    dh_next = np.zeros((N, H))
    first = 1 if bug == "drop_first" else 0
    last = T - 2 if bug == "drop_last" else T - 1
    for t in range(last, first - 1, -1):
        up = dY[:, t - 1] if bug == "misaligned_dY" and t > 0 else dY[:, t]
        dh = up + dh_next
        r, z, n, hp = R[:, t], Z[:, t], Ng[:, t], Hprev[:, t]
        da_n = dh * (1 - z) * (1 - n ** 2)
        da_z = dh * (hp - n) * z * (1 - z)
        if bug == "reset_before_matmul":  # n = tanh(gx_n + (r h) Whn + b_hn), Cho et al.
            d_rh = da_n @ Whn.T
            da_r = d_rh * hp * r * (1 - r)
            Gh = np.concatenate([da_r, da_z, da_n], axis=1)
            dWh = np.concatenate([hp.T @ Gh[:, :2 * H], (r * hp).T @ da_n], axis=1)
            dh_rec = Gh[:, :2 * H] @ Wh[:, :2 * H].T + d_rh * r
        else:
            da_r = da_n * Ghn[:, t] * r * (1 - r)
            Gh = np.concatenate([da_r, da_z, da_n * r], axis=1)
            h_used = Y[:, t] if bug == "misaligned_h" else hp
            dWh, dh_rec = h_used.T @ Gh, Gh @ Wh.T
        Gx = np.concatenate([da_r, da_z, da_n], axis=1)
        g["Wx"] += X[:, t].T @ Gx
        g["Wh"] += dWh
        g["b_ih"] += Gx.sum(axis=0)
        g["b_hh"] += Gh.sum(axis=0)
        g["dX"][:, t] = Gx @ Wx.T
        dh_next = dh * z + dh_rec
    return g


def test_trap_harness_is_right_without_a_bug():
    case, cache = _case((4, 6, 3, 5), seed=5)
    assert max_rel_err(_wrong_grads(case, cache, None), gru.reference(case, cache)) \
        < TOLERANCE["float64"]


@pytest.mark.parametrize("bug", BUGS)
def test_a_wrong_backward_fails_the_comparison(bug):
    case, cache = _case((4, 6, 3, 5), seed=5)
    assert max_rel_err(_wrong_grads(case, cache, bug), gru.reference(case, cache)) \
        > TRAP_MIN_ERROR


def test_clipping_clips_at_the_default_settings():
    case, cache = _case((16, 32, 32, 64))
    raw = gru.reference(case, cache)
    assert max(np.max(np.abs(raw[k])) for k in gru.PARAMS) > case.clip_value
    assert np.sqrt(sum(np.sum(raw[k] ** 2) for k in gru.PARAMS)) > case.clip_norm
    unclipped = gru.BACKWARDS["gru/buffers=prealloc,wgrad=batched,clip=none"](case, cache)
    for clip in ("value", "norm"):
        got = gru.BACKWARDS[f"gru/buffers=prealloc,wgrad=batched,clip={clip}"](case, cache)
        assert np.array_equal(got["dX"], unclipped["dX"])
        if clip == "value":
            assert max(np.max(np.abs(got[k])) for k in gru.PARAMS) <= case.clip_value
        else:
            norm = np.sqrt(sum(np.sum(got[k] ** 2) for k in gru.PARAMS))
            assert norm == pytest.approx(case.clip_norm, rel=1e-12)
        # a clip that clips nothing must fail the comparison with the clipped reference
        want = clip_grads(raw, gru.PARAMS, clip, case.clip_value, case.clip_norm)
        assert max_rel_err(raw, want) > TRAP_MIN_ERROR


def test_small_clip_settings_reach_every_variant():
    case, cache = _case((3, 4, 2, 3))
    case = replace(case, clip_value=1e-3, clip_norm=1e-3)
    raw = gru.reference(case, cache)
    for name, backward in gru.BACKWARDS.items():
        clip = name.rpartition("clip=")[2]
        want = clip_grads(raw, gru.PARAMS, clip, case.clip_value, case.clip_norm)
        assert max_rel_err(backward(case, cache), want) < TOLERANCE["float64"], name


def _torch_gru(torch, case):
    """Y and the gradients of L = sum(dY * Y) from torch.nn.GRU, in our layouts."""
    N, T, D, H = (case.shape[k] for k in "NTDH")
    module = torch.nn.GRU(D, H, batch_first=True).double()
    p = case.params
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.from_numpy(p["Wx"].T.copy()))
        module.weight_hh_l0.copy_(torch.from_numpy(p["Wh"].T.copy()))
        module.bias_ih_l0.copy_(torch.from_numpy(p["b_ih"]))
        module.bias_hh_l0.copy_(torch.from_numpy(p["b_hh"]))
    X = torch.from_numpy(case.X.copy()).requires_grad_(True)
    Y, _ = module(X)
    (Y * torch.from_numpy(case.dY)).sum().backward()
    grads = {"dX": X.grad.numpy(), "Wx": module.weight_ih_l0.grad.numpy().T,
             "Wh": module.weight_hh_l0.grad.numpy().T,
             "b_ih": module.bias_ih_l0.grad.numpy(), "b_hh": module.bias_hh_l0.grad.numpy()}
    return Y.detach().numpy(), grads


@pytest.mark.parametrize("dims", [*_random_shapes(3, seed=7, high=6), (4, 9, 5, 8)], ids=str)
def test_forward_and_reference_match_torch(dims):
    torch = pytest.importorskip("torch")
    case, cache = _case(dims, seed=2)
    Y_torch, want = _torch_gru(torch, case)
    Y, _ = gru.forward(case)
    assert max_rel_err({"Y": Y}, {"Y": Y_torch}) < TORCH_TOLERANCE
    assert max_rel_err(gru.reference(case, cache), want) < TORCH_TOLERANCE
