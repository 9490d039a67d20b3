"""Tests of impls/peer_torch.py: one torch peer per kernel present, each matching its reference."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gradsweep.impls import peer_torch
from gradsweep.impls.base import SkipCell, is_peer
from gradsweep.impls.gradcheck import max_rel_err
from gradsweep.impls.registry import load

#: Largest accepted error of a peer against its kernel's reference (float64).
PEER_TOLERANCE = 1e-8
#: Small shapes per kernel (missing dims take their defaults).
SHAPES = {
    "rnn": {"N": 3, "T": 5, "D": 4, "H": 6},
    "lstm": {"N": 3, "T": 5, "D": 4, "H": 6},
    "gru": {"N": 3, "T": 5, "D": 4, "H": 6},
    "bilstm": {"N": 3, "T": 5, "D": 4, "H": 6},
    "deconv2d": {"N": 2, "Hin": 4, "Win": 5, "Cin": 3, "Cout": 4, "k": 3, "stride": 2,
                 "padding": 1, "dilation": 2, "output_padding": 1},
}
REPO = Path(__file__).resolve().parents[1]
PRESENT = [k for k in peer_torch.KERNEL_NAMES if importlib.util.find_spec(f"impls.{k}")]


def _case(kernel_name: str, dtype: str = "float64", threads: int = 1):
    kernel = load().kernel(kernel_name)
    shape = kernel.full_shape(SHAPES[kernel_name])
    assert kernel.check(shape) is None
    case = kernel.make_case(shape, dtype, 0)
    return kernel, replace(case, threads=threads)


def test_a_peer_for_every_present_kernel():
    assert "rnn" in PRESENT
    assert [v.kernel for v in peer_torch.VARIANTS] == PRESENT
    registry = load()
    for name in PRESENT:
        peers = [v for v in registry.kernel(name).variants if is_peer(v)]
        assert peers == [f"{name}/peer=torch"]
        assert callable(registry.backward(peers[0]).prepare)


@pytest.mark.parametrize("kernel_name", PRESENT)
def test_peer_matches_the_reference(kernel_name):
    torch = pytest.importorskip("torch")
    kernel, case = _case(kernel_name, threads=2)
    Y, cache = kernel.forward(case)
    backward = kernel.variants[f"{kernel_name}/peer=torch"]
    graph = backward.prepare(case, cache)
    assert torch.get_num_threads() == 2
    Y_torch = graph.Y.detach().numpy()
    if kernel_name == "deconv2d":
        Y_torch = Y_torch.transpose(peer_torch.TO_NHWC)
    assert max_rel_err({"Y": Y_torch}, {"Y": Y}) < PEER_TOLERANCE
    first = backward(case, graph)
    want = kernel.reference(case, cache)
    assert set(first) == set(want)
    assert all(first[k].shape == want[k].shape for k in want)
    assert max_rel_err(first, want) < PEER_TOLERANCE
    second = backward(case, graph)
    assert all(np.array_equal(first[k], second[k]) for k in want)
    torch.set_num_threads(1)


@pytest.mark.parametrize("kernel_name", PRESENT)
def test_peer_runs_in_the_case_dtype(kernel_name):
    pytest.importorskip("torch")
    kernel, case = _case(kernel_name, dtype="float32")
    backward = kernel.variants[f"{kernel_name}/peer=torch"]
    grads = backward(case, backward.prepare(case, kernel.forward(case)[1]))
    assert all(g.dtype == np.float32 for g in grads.values())
    assert max_rel_err(grads, kernel.reference(case, kernel.forward(case)[1])) < 1e-4


def test_without_torch_prepare_skips(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    _, case = _case("rnn")
    with pytest.raises(SkipCell, match="torch is not installed"):
        peer_torch.make_peer("rnn").prepare(case, None)
    with pytest.raises(SkipCell, match="torch is not installed"):
        load().backward("rnn/peer=torch")(case, {})


def test_module_and_registry_import_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from gradsweep.impls import registry\n"
            "print(sorted(v for k in registry.load().kernels.values() for v in k.variants"
            " if 'peer=' in v))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert out.strip() == str(sorted(f"{k}/peer=torch" for k in PRESENT))


def test_backward_without_prepare_says_so():
    pytest.importorskip("torch")
    kernel, case = _case("gru")
    with pytest.raises(TypeError, match="prepare"):
        kernel.variants["gru/peer=torch"](case, kernel.forward(case)[1])
