"""The rnn kernel: reference vs finite differences, variants vs reference, traps, torch."""

import numpy as np
import pytest

from gradsweep.impls import rnn
from gradsweep.impls.base import clip_grads, parse_variant, reference_for
from gradsweep.impls.gradcheck import TOLERANCE, finite_differences, max_rel_err

SHAPES = [{"N": 2, "T": 3, "D": 4, "H": 5}, {"N": 3, "T": 5, "D": 2, "H": 3},
          {"N": 1, "T": 1, "D": 3, "H": 2}]


@pytest.mark.parametrize("shape", SHAPES)
def test_reference_matches_finite_differences(shape):
    case = rnn.make_case(shape, "float64", seed=7)
    assert np.all(case.params["b"] != 0)
    _, cache = rnn.forward(case)
    assert max_rel_err(rnn.reference(case, cache), finite_differences(rnn.forward, case)) < 1e-6


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("variant", sorted(v for v in rnn.BACKWARDS))
def test_every_variant_matches_its_reference(variant, dtype):
    case = rnn.make_case({"N": 3, "T": 6, "D": 4, "H": 5}, dtype, seed=1)
    _, cache = rnn.forward(case)
    case64 = case.astype("float64")
    _, cache64 = rnn.forward(case64)
    want = reference_for(rnn.KERNEL, variant)(case64, cache64)
    assert max_rel_err(rnn.BACKWARDS[variant](case, cache), want) < TOLERANCE[dtype]


def test_backward_mutates_nothing_and_repeats():
    case = rnn.make_case({"N": 3, "T": 4, "D": 4, "H": 5}, "float64", seed=2)
    _, cache = rnn.forward(case)
    before = {k: v.copy() for k, v in {**case.arrays(), **cache}.items()}
    for fn in rnn.BACKWARDS.values():
        first, second = fn(case, cache), fn(case, cache)
        for k in first:
            np.testing.assert_array_equal(first[k], second[k])
    for k, v in {**case.arrays(), **cache}.items():
        np.testing.assert_array_equal(v, before[k])


def test_time_misalignment_is_caught():
    """Shifting the upstream gradient by one step must change every gradient."""
    case = rnn.make_case({"N": 2, "T": 5, "D": 3, "H": 4}, "float64", seed=3)
    _, cache = rnn.forward(case)
    ref = rnn.reference(case, cache)
    from dataclasses import replace
    shifted = replace(case, dY=np.roll(case.dY, 1, axis=1))
    assert max_rel_err(rnn.reference(shifted, cache), ref) > 1e-3


def test_last_step_gradient_reaches_the_first_input():
    case = rnn.make_case({"N": 2, "T": 6, "D": 3, "H": 4}, "float64", seed=4)
    from dataclasses import replace
    only_last = np.zeros_like(case.dY)
    only_last[:, -1] = case.dY[:, -1]
    case = replace(case, dY=only_last)
    _, cache = rnn.forward(case)
    for fn in rnn.BACKWARDS.values():
        assert np.abs(fn(case, cache)["dX"][:, 0]).max() > 0


@pytest.mark.parametrize("mode", ["value", "norm"])
def test_clipping_clips(mode):
    case = rnn.make_case({"N": 8, "T": 8, "D": 6, "H": 6}, "float64", seed=5,
                         clip_value=0.05, clip_norm=0.1)
    _, cache = rnn.forward(case)
    plain = rnn.reference(case, cache)
    got = rnn.make_backward("prealloc", "batched", mode)(case, cache)
    np.testing.assert_array_equal(got["dX"], rnn.make_backward("prealloc", "batched", "none")(
        case, cache)["dX"])  # dX is never clipped
    params = ("Wx", "Wh", "b")
    if mode == "value":
        assert max(np.abs(got[p]).max() for p in params) <= 0.05
    else:
        assert np.sqrt(sum((got[p] ** 2).sum() for p in params)) <= 0.1 + 1e-12
    assert max_rel_err(got, plain) > 1e-3  # a "clip" that clips nothing fails here
    assert max_rel_err(got, clip_grads(plain, params, mode, 0.05, 0.1)) < 1e-12
    assert parse_variant(rnn.KERNEL.baseline)[1]["clip"] == "none"


def test_matches_torch():
    torch = pytest.importorskip("torch")
    case = rnn.make_case({"N": 3, "T": 5, "D": 4, "H": 6}, "float64", seed=6)
    Y, cache = rnn.forward(case)
    m = torch.nn.RNN(4, 6, batch_first=True, nonlinearity="tanh").double()
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.from_numpy(case.params["Wx"].T))
        m.weight_hh_l0.copy_(torch.from_numpy(case.params["Wh"].T))
        m.bias_ih_l0.copy_(torch.from_numpy(case.params["b"]))
        m.bias_hh_l0.zero_()
    X = torch.from_numpy(case.X).requires_grad_()
    out, _ = m(X)
    out.backward(torch.from_numpy(case.dY))
    np.testing.assert_allclose(out.detach().numpy(), Y, rtol=0, atol=1e-12)
    ref = rnn.reference(case, cache)
    assert max_rel_err(ref, {"dX": X.grad.numpy(), "Wx": m.weight_ih_l0.grad.numpy().T,
                             "Wh": m.weight_hh_l0.grad.numpy().T,
                             "b": m.bias_ih_l0.grad.numpy()}) < 1e-8
