"""masked reductions and chunked logprobs / entropy against the naive full log_softmax."""

import pytest
import torch

from hicra.algorithms import entropy_from_logits, logprobs_and_entropy, logprobs_from_logits, masked_mean, masked_sum

X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
M = torch.tensor([[True, False, True], [False, False, False]])


def test_masked_sum_and_mean_hand():
    assert masked_sum(X, M).item() == 4.0
    assert torch.equal(masked_sum(X, M, dim=1), torch.tensor([4.0, 0.0]))
    assert masked_mean(X, M).item() == 2.0
    assert torch.equal(masked_mean(X, M, dim=1), torch.tensor([2.0, 0.0]))  # empty row -> 0, not NaN
    assert torch.equal(masked_mean(X, M, dim=0), torch.tensor([1.0, 0.0, 3.0]))


def test_masked_mean_empty_mask_is_zero():
    empty = torch.zeros(2, 3, dtype=torch.bool)
    assert masked_mean(X, empty).item() == 0.0
    assert masked_mean(torch.full((2, 3), float("nan")), empty).item() == 0.0


def test_masked_reductions_accept_int_masks_and_ignore_nan_padding():
    x = X.clone()
    x[~M] = float("nan")
    assert masked_mean(x, M.long()).item() == 2.0
    assert masked_sum(x, M.int()).item() == 4.0


def _logits(b=3, t=5, v=11, seed=0):
    return (3 * torch.randn(b, t, v, generator=torch.Generator().manual_seed(seed))).requires_grad_(True)


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 15, 100])  # B*T = 15 rows
def test_logprobs_match_naive(chunk_size):
    logits = _logits()
    targets = torch.randint(0, 11, (3, 5), generator=torch.Generator().manual_seed(1))
    weights = torch.randn(3, 5, generator=torch.Generator().manual_seed(2))

    naive = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    (naive_grad,) = torch.autograd.grad((naive * weights).sum(), logits)
    chunked = logprobs_from_logits(logits, targets, chunk_size=chunk_size)
    (chunked_grad,) = torch.autograd.grad((chunked * weights).sum(), logits)

    assert chunked.shape == (3, 5)
    assert torch.allclose(chunked, naive, atol=1e-5)
    assert torch.allclose(chunked_grad, naive_grad, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 15, 100])
def test_entropy_matches_naive(chunk_size):
    logits = _logits(seed=3)
    weights = torch.randn(3, 5, generator=torch.Generator().manual_seed(4))

    logp = torch.log_softmax(logits, dim=-1)
    naive = -(logp.exp() * logp).sum(-1)
    (naive_grad,) = torch.autograd.grad((naive * weights).sum(), logits)
    chunked = entropy_from_logits(logits, chunk_size=chunk_size)
    (chunked_grad,) = torch.autograd.grad((chunked * weights).sum(), logits)

    assert chunked.shape == (3, 5)
    assert torch.allclose(chunked, naive, atol=1e-5)
    assert torch.allclose(chunked_grad, naive_grad, atol=1e-5)


def test_entropy_hand_values():
    uniform = torch.zeros(1, 1, 4)
    assert entropy_from_logits(uniform).item() == pytest.approx(torch.log(torch.tensor(4.0)).item())
    banned = torch.tensor([[[0.0, 0.0, float("-inf")]]])  # two equally likely tokens, one impossible
    assert entropy_from_logits(banned).item() == pytest.approx(0.6931472)


def test_bf16_logits_computed_in_fp32():
    logits = _logits().detach().to(torch.bfloat16)
    targets = torch.zeros(3, 5, dtype=torch.long)
    out = logprobs_from_logits(logits, targets, chunk_size=4)
    assert out.dtype == torch.float32
    ref = torch.log_softmax(logits.float(), -1)[..., 0]
    assert torch.allclose(out, ref, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="chunk_size"):
        entropy_from_logits(_logits(), chunk_size=0)
    with pytest.raises(ValueError, match="targets"):
        logprobs_from_logits(_logits(), torch.zeros(3, 4, dtype=torch.long))


def _naive(logits, targets, temperature):
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * torch.where(torch.isinf(logp), 0.0, logp)).sum(-1)
    return picked, entropy


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk_size", [1, 4, 32])
def test_logprobs_and_entropy_values_and_joint_gradient_match_naive(temperature, chunk_size):
    logits = _logits(seed=5)
    targets = torch.randint(0, 11, (3, 5), generator=torch.Generator().manual_seed(6))
    g, h = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(7))

    naive_lp, naive_h = _naive(logits, targets, temperature)
    (naive_grad,) = torch.autograd.grad((naive_lp * g + naive_h * h).sum(), logits)
    lp, ent = logprobs_and_entropy(logits, targets, temperature, chunk_size=chunk_size)
    (grad,) = torch.autograd.grad((lp * g + ent * h).sum(), logits)

    assert torch.allclose(lp, naive_lp, atol=1e-5) and torch.allclose(ent, naive_h, atol=1e-5)
    assert torch.allclose(grad, naive_grad, atol=1e-5)


def test_entropy_without_grad_is_detached_and_leaves_the_logprob_gradient_unchanged():
    logits = _logits(seed=8)
    targets = torch.randint(0, 11, (3, 5), generator=torch.Generator().manual_seed(9))
    lp, ent = logprobs_and_entropy(logits, targets, 0.7, entropy_grad=False)
    assert not ent.requires_grad and lp.requires_grad
    (grad,) = torch.autograd.grad(lp.sum(), logits)
    (expected,) = torch.autograd.grad(_naive(logits, targets, 0.7)[0].sum(), logits)
    assert torch.allclose(grad, expected, atol=1e-6)
    assert logprobs_and_entropy(logits, targets, with_entropy=False)[1] is None


def test_banned_tokens_get_zero_gradient_and_no_nan_under_large_incoming_gradients():
    logits = torch.tensor([[[0.0, 1.0, float("-inf"), 2.0]]], requires_grad=True)  # token 2 impossible
    lp, ent = logprobs_and_entropy(logits, torch.tensor([[1]]))
    (grad,) = torch.autograd.grad(lp.sum() * 1e30 + ent.sum() * 1e30, logits)
    assert torch.isfinite(grad).all() and grad[0, 0, 2] == 0
    assert torch.isfinite(ent).all()


def test_bf16_logits_get_a_bf16_gradient():
    logits = _logits().detach().to(torch.bfloat16).requires_grad_(True)
    lp, _ = logprobs_and_entropy(logits, torch.zeros(3, 5, dtype=torch.long), with_entropy=False)
    (grad,) = torch.autograd.grad(lp.sum(), logits)
    assert lp.dtype == torch.float32 and grad.dtype == torch.bfloat16
    expected = torch.autograd.grad(torch.log_softmax(logits.float(), -1)[..., 0].sum(), logits)[0]
    assert torch.allclose(grad.float(), expected.float(), atol=1e-2)
