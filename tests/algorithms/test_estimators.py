"""rloo_advantages / reinforce_pp_advantages: hand-computed values, zero-signal groups, invariants, padding."""

import math

import pytest
import torch

from hicra.algorithms import (
    ADVANTAGE_SCALES,
    REINFORCE_PP_BASELINES,
    group_advantages,
    hicra_token_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
)
from hicra.algorithms.losses import aggregate

# Two groups of G=4: group 0 has one success, group 1 is all-correct (no signal).
REWARDS = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])


def test_rloo_hand_values():
    # group 0: completion 0's baseline is mean(0,0,0) = 0 -> 1; the others' is mean(1,0,0) = 1/3 -> -1/3
    expected = torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.0, 0.0])
    assert torch.allclose(rloo_advantages(REWARDS, 4), expected, atol=1e-7)


def test_rloo_is_g_over_g_minus_1_times_the_centred_reward():
    rewards = torch.rand(6 * 5, generator=torch.Generator().manual_seed(0))
    expected = 5 / 4 * group_advantages(rewards, 5, scale="none")
    assert torch.allclose(rloo_advantages(rewards, 5), expected, atol=1e-6)


def test_rloo_matches_a_loop_over_the_others():
    rewards = torch.tensor([0.3, 0.9, 0.1, 0.5, 0.2, 0.0])
    loop = [rewards[i] - torch.cat([rewards[g * 3:i], rewards[i + 1:g * 3 + 3]]).mean()
            for g in range(2) for i in range(g * 3, g * 3 + 3)]
    assert torch.allclose(rloo_advantages(rewards, 3), torch.stack(loop), atol=1e-7)


def test_reinforce_pp_baseline_hand_values():
    # A~ = R - group mean = [0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0]; batch mean 0;
    # unbiased var = (0.75^2 + 3 * 0.25^2) / 7 = 0.75 / 7 -> std = 0.327327
    std = math.sqrt(0.75 / 7)
    expected = torch.tensor([0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std, 0.0, 0.0, 0.0, 0.0])
    adv = reinforce_pp_advantages(REWARDS, 4)
    assert torch.allclose(adv, expected, atol=1e-5)
    assert adv[0].item() == pytest.approx(2.291288, abs=1e-5)


def test_reinforce_pp_raw_reward_hand_values():
    # batch mean 5/8, unbiased var = (5 * 0.375^2 + 3 * 0.625^2) / 7 = 1.875 / 7: every completion is whitened,
    # the all-correct group included (it scored above the batch)
    std = math.sqrt(1.875 / 7)
    expected = torch.tensor([0.375 / std] + [-0.625 / std] * 3 + [0.375 / std] * 4)
    assert torch.allclose(reinforce_pp_advantages(REWARDS, 4, baseline="none"), expected, atol=1e-5)


def test_reinforce_pp_is_whitened_over_the_batch():
    rewards = torch.rand(8 * 4, generator=torch.Generator().manual_seed(1))
    for baseline in REINFORCE_PP_BASELINES:
        adv = reinforce_pp_advantages(rewards, 4, baseline=baseline, eps=0.0)
        assert adv.mean().item() == pytest.approx(0.0, abs=1e-6) and adv.std().item() == pytest.approx(1.0, abs=1e-5)


def test_reinforce_pp_special_cases_are_dr_grpo_and_grpo():
    rewards = torch.rand(4 * 4, generator=torch.Generator().manual_seed(2))
    for scale in ("none", "group"):
        assert torch.allclose(reinforce_pp_advantages(rewards, 4, scale=scale), group_advantages(rewards, 4, scale=scale),
                              atol=1e-6)


ESTIMATORS = [(rloo_advantages, {"scale": s}) for s in ADVANTAGE_SCALES] + \
             [(reinforce_pp_advantages, {"scale": s}) for s in ADVANTAGE_SCALES]


@pytest.mark.parametrize("fn,kwargs", ESTIMATORS)
@pytest.mark.parametrize("eps", [1e-6, 0.0])
def test_equal_reward_groups_give_exactly_zero_and_no_nan(fn, kwargs, eps):
    # 0.1 is not representable: a float mean of equal 0.1s need not reproduce 0.1 bit-exactly
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.7, 0.0, 0.7, 0.7, 0.0, 1.0, 0.0, 1.0])
    adv = fn(rewards, 4, eps=eps, **kwargs)
    assert not torch.isnan(adv).any() and (adv[:4] == 0.0).all() and (adv[4:] != 0.0).all()
    flat = fn(torch.full((8,), 0.1), 4, eps=eps, **kwargs)  # every group (the whole batch) constant
    assert (flat == 0.0).all()


def test_a_constant_batch_gives_zero_for_the_raw_reward_variant_too():
    for eps in (1e-6, 0.0):
        adv = reinforce_pp_advantages(torch.full((8,), 0.1), 4, baseline="none", eps=eps)
        assert not torch.isnan(adv).any() and (adv == 0.0).all()


@pytest.mark.parametrize("fn", [rloo_advantages, reinforce_pp_advantages])
def test_padding_contributes_nothing(fn):
    """The estimators see one reward per response: a response's padding can change neither its advantage nor, once
    HICRA's transform has spread it over tokens, the loss (response_mask excludes the padded tokens)."""
    adv = fn(REWARDS, 4)
    planning = torch.zeros(8, 3, dtype=torch.bool)
    planning[:, 0] = True
    mask = torch.tensor([[1, 1, 0]] * 8, dtype=torch.bool)
    padded_planning = torch.cat([planning, torch.ones(8, 4, dtype=torch.bool)], dim=1)  # padding marked planning
    padded_mask = torch.cat([mask, torch.zeros(8, 4, dtype=torch.bool)], dim=1)
    per_token = -hicra_token_advantages(adv, planning, alpha=0.2)
    padded = -hicra_token_advantages(adv, padded_planning, alpha=0.2)
    loss, padded_loss = aggregate(per_token, mask, "token_mean"), aggregate(padded, padded_mask, "token_mean")
    assert torch.allclose(loss, padded_loss, rtol=0, atol=1e-7)  # equal up to the order of the float sum


def test_detached_and_validated():
    rewards = REWARDS.clone().requires_grad_(True)
    assert not rloo_advantages(rewards, 4).requires_grad and not reinforce_pp_advantages(rewards, 4).requires_grad
    with pytest.raises(ValueError, match="baseline"):
        reinforce_pp_advantages(REWARDS, 4, baseline="batch")
    with pytest.raises(ValueError, match="scale"):
        rloo_advantages(REWARDS, 4, scale="token")
    with pytest.raises(ValueError, match="group_size"):
        rloo_advantages(REWARDS, 1)
