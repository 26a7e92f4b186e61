"""oneDNN-packed linear layers for CPU sampling: the same outputs as nn.Linear, the module's own forward back
afterwards, weights packed afresh each time, and nothing packed that does not qualify."""

from __future__ import annotations

import pytest
import torch

from hicra.rollout.packed_linear import available, packed_linears

pytestmark = pytest.mark.skipif(not available(), reason="this torch build has no oneDNN packed linear ops")


def _stack(dtype=torch.float32):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.SiLU(), torch.nn.Linear(40, 16, bias=False)).to(dtype)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("rows", [1, 7, 32])
def test_packed_outputs_match_nn_linear_for_any_row_count(dtype, tol, rows):
    model = _stack(dtype)
    x = torch.randn(rows, 3, 24).to(dtype)  # (rows, positions, in): 3-D like a decoding step's hidden states
    with torch.no_grad():
        expected = model(x)
        with packed_linears(model, rows=32) as n:
            got = model(x)
    assert n == 2
    assert got.shape == expected.shape and got.dtype == dtype
    assert torch.allclose(got.float(), expected.float(), atol=tol, rtol=tol)


def test_forward_is_restored_and_new_weights_are_packed_afresh():
    model = _stack()
    x = torch.randn(5, 24)
    with torch.no_grad():
        with packed_linears(model, rows=5):
            before = model(x)
        assert all("forward" not in vars(m) for m in model)  # the class's forward again
        model[0].weight.add_(1.0)  # an optimizer step between two generations
        with packed_linears(model, rows=5):
            after = model(x)
        plain = model(x)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, plain, atol=1e-5)


def test_autocast_and_other_input_dtypes_keep_nn_linear_rules():
    model = _stack()
    x = torch.randn(4, 24)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = model(x)
            with packed_linears(model, rows=4):
                got = model(x)
        with packed_linears(model, rows=4), pytest.raises(RuntimeError, match="dtype"):
            model(x.bfloat16())  # nn.Linear's own error for a bf16 input on fp32 weights
    assert got.dtype == expected.dtype == torch.bfloat16 and torch.equal(got, expected)


def test_forward_is_restored_when_the_block_raises():
    model = _stack()
    with pytest.raises(RuntimeError, match="boom"), packed_linears(model, rows=4):
        raise RuntimeError("boom")
    assert all("forward" not in vars(m) for m in model)


def test_only_plain_cpu_linears_are_packed():
    class Scaled(torch.nn.Linear):  # a subclass may change forward: left alone
        def forward(self, x):
            return 2 * super().forward(x)

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), Scaled(8, 8), torch.nn.Linear(8, 8).double())
    with packed_linears(model, rows=2) as n:
        assert n == 1 and "forward" in vars(model[0]) and "forward" not in vars(model[1])
    with packed_linears(model, rows=2, enabled=False) as n:
        assert n == 0
