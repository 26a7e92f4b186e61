"""group_advantages / frac_zero_std_groups: hand-computed values, zero-signal groups, loop equivalence."""

import math

import pytest
import torch

from hicra.algorithms import ADVANTAGE_SCALES, frac_zero_std_groups, group_advantages

# Two groups of G=4: group 0 has one success, group 1 is all-correct (no signal).
REWARDS = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])


def test_hand_values_scale_none():
    # mean(group 0) = 0.25
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25, 0.0, 0.0, 0.0, 0.0])
    assert torch.allclose(group_advantages(REWARDS, 4, scale="none"), expected, atol=0, rtol=0)


def test_hand_values_scale_group():
    # unbiased std of [1,0,0,0]: var = (0.75^2 + 3 * 0.25^2) / 3 = 0.25 -> std = 0.5
    expected = torch.tensor([1.5, -0.5, -0.5, -0.5, 0.0, 0.0, 0.0, 0.0])
    assert torch.allclose(group_advantages(REWARDS, 4, scale="group"), expected, atol=1e-5)


def test_hand_values_scale_batch():
    # batch mean 5/8; unbiased var = (5 * 0.375^2 + 3 * 0.625^2) / 7 = 1.875 / 7
    std = math.sqrt(1.875 / 7)  # 0.517549...
    expected = torch.tensor([0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std, 0.0, 0.0, 0.0, 0.0])
    assert torch.allclose(group_advantages(REWARDS, 4, scale="batch"), expected, atol=1e-5)
    assert group_advantages(REWARDS, 4, scale="batch")[0].item() == pytest.approx(1.449138, abs=1e-5)


@pytest.mark.parametrize("scale", ADVANTAGE_SCALES)
def test_equal_reward_group_is_exactly_zero(scale):
    # 0.1 is not representable: a float mean of equal 0.1s need not reproduce 0.1 bit-exactly
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.3, 0.7, 0.7, 0.7, 0.7, 0.0, 1.0, 0.0, 1.0])
    adv = group_advantages(rewards, 4, scale=scale)
    assert not torch.isnan(adv).any()
    assert (adv[4:8] == 0.0).all()


@pytest.mark.parametrize("scale", ADVANTAGE_SCALES)
@pytest.mark.parametrize("eps", [1e-6, 0.0])
def test_constant_batch_is_zero_no_nan(scale, eps):
    adv = group_advantages(torch.full((12,), 0.3), 4, scale=scale, eps=eps)
    assert torch.equal(adv, torch.zeros(12))


@pytest.mark.parametrize("scale", ADVANTAGE_SCALES)
def test_zero_mean_within_groups(scale):
    rewards = torch.rand(6 * 8, generator=torch.Generator().manual_seed(0))
    adv = group_advantages(rewards, 8, scale=scale).view(6, 8)
    assert torch.allclose(adv.sum(dim=1), torch.zeros(6), atol=1e-5)


@pytest.mark.parametrize("scale", ADVANTAGE_SCALES)
def test_vectorised_equals_naive_loop(scale):
    gen = torch.Generator().manual_seed(1)
    rewards = torch.randint(0, 2, (5 * 6,), generator=gen).float()
    rewards[6:12] = 1.0  # make sure one constant group is present
    eps = 1e-6
    expected = []
    for start in range(0, rewards.numel(), 6):
        group = [float(r) for r in rewards[start : start + 6]]
        mean = sum(group) / 6
        if scale == "group":
            denom = math.sqrt(sum((r - mean) ** 2 for r in group) / 5) + eps
        elif scale == "batch":
            bmean = rewards.mean().item()
            denom = math.sqrt(sum((r - bmean) ** 2 for r in rewards.tolist()) / (rewards.numel() - 1)) + eps
        else:
            denom = 1.0
        expected += [0.0 if max(group) == min(group) else (r - mean) / denom for r in group]
    assert torch.allclose(group_advantages(rewards, 6, scale=scale, eps=eps), torch.tensor(expected), atol=1e-5)


def test_int_and_bool_rewards_accepted():
    adv = group_advantages(torch.tensor([True, False, False, False]), 4, scale="none")
    assert torch.equal(adv, torch.tensor([0.75, -0.25, -0.25, -0.25]))


def test_output_detached():
    rewards = REWARDS.clone().requires_grad_(True)
    assert not group_advantages(rewards, 4).requires_grad


def test_errors():
    with pytest.raises(ValueError, match=r"10.*4"):
        group_advantages(torch.zeros(10), 4)
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.zeros(4), 1)
    with pytest.raises(ValueError, match="'group'.*'batch'.*'none'"):
        group_advantages(torch.zeros(4), 2, scale="std")
    with pytest.raises(ValueError, match="eps"):
        group_advantages(torch.zeros(4), 2, eps=-1.0)


def test_frac_zero_std_groups():
    assert frac_zero_std_groups(REWARDS, 4).item() == 0.5
    assert frac_zero_std_groups(torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 1.0]), 2).item() == pytest.approx(2 / 3)
    assert frac_zero_std_groups(REWARDS, 4).dtype == torch.float32
