"""The GRPO variants of conf/algorithm/ against references written from their papers' formulas, one sequence at a
time: GSPO (sequence-level ratio), Dr. GRPO (no std scaling, constant length normaliser), KL as a reward penalty."""

from __future__ import annotations

import pytest
import torch

from hicra.algorithms import aggregate, group_advantages, kl_shaped_rewards, sequence_clipped_surrogate
from hicra.config.instantiate import build

LENGTHS = [6, 2, 5, 1]  # valid tokens per response; the rest is padding


def batch(seed: int = 0, noise: float = 3e-4):
    """logprobs (B,T) with grad, off-policy old_logprobs, response mask; padded positions hold NaN garbage."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.arange(6)[None] < torch.tensor(LENGTHS)[:, None]  # (4,6)
    base = -torch.rand(4, 6, generator=gen) * 3
    old = base + noise * torch.randn(4, 6, generator=gen)
    logprobs = torch.where(mask, base, torch.full_like(base, float("nan"))).requires_grad_()
    return logprobs, old, mask


def test_gspo_matches_the_sequence_level_formula():
    logprobs, old, mask = batch()
    adv = torch.tensor([1.0, -0.5, 0.8, -1.2])
    per_token, _ = sequence_clipped_surrogate(logprobs, old, adv[:, None].expand(4, 6), mask,
                                              clip_low=3e-4, clip_high=4e-4)
    loss = aggregate(per_token, mask, "seq_mean_token_mean")
    (grad,) = torch.autograd.grad(loss, logprobs)

    ref_logprobs = logprobs.detach().nan_to_num(0.0).requires_grad_()
    terms = []
    for i, n in enumerate(LENGTHS):  # GSPO, eq. (5)-(7): one ratio per sequence, length-normalised
        s = torch.exp((ref_logprobs[i, :n] - old[i, :n]).mean())
        terms.append(torch.min(s * adv[i], s.clamp(1 - 3e-4, 1 + 4e-4) * adv[i]))
    reference = -torch.stack(terms).mean()
    (ref_grad,) = torch.autograd.grad(reference, ref_logprobs)

    clipped = [abs(float((logprobs.detach()[i, :n] - old[i, :n]).mean())) > 3e-4 for i, n in enumerate(LENGTHS)]
    assert any(clipped) and not all(clipped)  # both branches of the min are exercised
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad, ref_grad)  # padding: no NaN, zero gradient
    assert torch.all(grad[~mask] == 0)


def test_gspo_token_form_carries_token_advantages():
    logprobs, _, mask = batch(noise=0.0)
    old = logprobs.detach().nan_to_num(0.0)  # on-policy: every ratio is 1, nothing clipped
    token_adv = torch.randn(4, 6)
    per_token, _ = sequence_clipped_surrogate(logprobs, old, token_adv, mask)
    (grad,) = torch.autograd.grad(aggregate(per_token, mask, "token_mean"), logprobs)
    expected = torch.where(mask, -token_adv / mask.sum(), torch.zeros_like(token_adv))  # d(-s A)/d logp = -A at s=1
    torch.testing.assert_close(grad, expected)


def test_dr_grpo_matches_its_formula(compose_cfg):
    algorithm = build(compose_cfg("algorithm=dr_grpo", "algorithm.group_size=2").algorithm)
    assert algorithm.aggregation == "seq_mean_token_sum_norm"
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])  # second group: zero variance, zero advantage, no NaN
    logprobs, old, mask = batch(noise=0.3)
    token_adv = algorithm.token_advantages(algorithm.advantages(rewards), torch.zeros(4, 6, dtype=torch.bool))
    loss, _ = algorithm.loss(logprobs, old, token_adv, mask)
    (grad,) = torch.autograd.grad(loss, logprobs)

    ref_logprobs = logprobs.detach().nan_to_num(0.0).requires_grad_()
    adv = torch.tensor([0.5, -0.5, 0.0, 0.0])  # R - mean(R of the group), no std division
    terms = []
    for i, n in enumerate(LENGTHS):  # Dr. GRPO, eq. (3): sum over tokens / a constant, mean over responses
        ratio = torch.exp(ref_logprobs[i, :n] - old[i, :n])
        terms.append(torch.min(ratio * adv[i], ratio.clamp(1 - 0.2, 1 + 0.28) * adv[i]).sum() / 6)
    reference = -torch.stack(terms).mean()
    (ref_grad,) = torch.autograd.grad(reference, ref_logprobs)
    torch.testing.assert_close(algorithm.advantages(rewards), adv)
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad, ref_grad)


def test_kl_in_reward_matches_its_formula(compose_cfg):
    algorithm = build(compose_cfg("algorithm=grpo_kl_reward", "algorithm.group_size=2").algorithm)
    assert algorithm.needs_reference and algorithm.needs_kl_in_reward and algorithm.kl_coef == 0
    logprobs, ref, mask = batch(noise=0.5)
    logprobs = logprobs.detach()
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    shaped = algorithm.rewards_with_kl(rewards, logprobs, ref, mask)
    expected = torch.stack([rewards[i] - 0.001 * (logprobs[i, :n] - ref[i, :n]).sum()  # k1 = log pi - log pi_ref
                            for i, n in enumerate(LENGTHS)])
    torch.testing.assert_close(shaped, expected)
    torch.testing.assert_close(algorithm.advantages(shaped), group_advantages(expected, group_size=2))
    assert not torch.isnan(shaped).any()  # padding garbage does not leak in


def test_kl_in_reward_off_is_the_identity(compose_cfg):
    algorithm = build(compose_cfg("algorithm=grpo").algorithm)
    rewards = torch.tensor([1.0, 0.0])
    assert not algorithm.needs_reference and algorithm.rewards_with_kl(rewards, None, None, None) is rewards
    assert kl_shaped_rewards(rewards, torch.zeros(2, 3), torch.ones(2, 3), torch.ones(2, 3), 0.0) is rewards
    with pytest.raises(ValueError, match="kl_reward_coef"):
        build(compose_cfg("algorithm=grpo_kl_reward").algorithm).rewards_with_kl(rewards, None, None, None)
