"""grpo_kl_reward under group-std scaling: a group with equal task rewards gets unit-size advantages from the KL alone.

Hand numbers (G = 2, kl_reward_coef 0.001, k1): replies with task rewards 1, 1 and KL sums 2, 0 have shaped rewards
0.998, 1.0; centred -0.001, +0.001; unbiased std 0.002/sqrt(2); advantages -+0.001 / (0.002/sqrt(2) + 1e-6) = -+0.7066,
the size of a right/wrong pair's (+-0.7071). This is what conf/algorithm/grpo_kl_reward.yaml warns about.
"""

import math

import torch

from hicra.config.instantiate import build

LOGPROBS = torch.zeros(2, 2)  # (B=2,T=2) the sampling policy
REF = torch.tensor([[-1.0, -1.0], [0.0, 0.0]])  # k1 = log pi - log pi_ref: KL sums 2 and 0
MASK = torch.ones(2, 2, dtype=torch.bool)


def advantages_for(compose_cfg, task_rewards, *overrides):
    algorithm = build(compose_cfg("algorithm=grpo_kl_reward", "algorithm.group_size=2", *overrides).algorithm)
    return algorithm.advantages(algorithm.rewards_with_kl(task_rewards, LOGPROBS, REF, MASK))


def test_group_std_turns_kl_noise_into_unit_size_advantages(compose_cfg):
    tied = advantages_for(compose_cfg, torch.tensor([1.0, 1.0]))  # both right: no task signal at all
    size = 0.001 / (0.002 / math.sqrt(2) + 1e-6)
    torch.testing.assert_close(tied, torch.tensor([-size, size]), rtol=1e-3, atol=0)
    split = advantages_for(compose_cfg, torch.tensor([1.0, 0.0]))  # right / wrong: real signal
    torch.testing.assert_close(tied.abs(), split.abs(), rtol=2e-3, atol=0)  # the same size


def test_without_std_scaling_the_penalty_keeps_its_own_size(compose_cfg):
    tied = advantages_for(compose_cfg, torch.tensor([1.0, 1.0]), "algorithm.advantage_fn.scale=none")
    torch.testing.assert_close(tied, torch.tensor([-0.001, 0.001]), rtol=1e-3, atol=0)
