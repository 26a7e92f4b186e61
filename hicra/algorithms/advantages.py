"""Group-relative (GRPO) sequence advantages from scalar rewards.

Shapes: B = completions = prompts x G, G = group_size. `rewards` (B,) are ordered group by group:
rewards[0:G] are the G completions of prompt 0, rewards[G:2G] those of prompt 1, and so on.
"""

import torch
from torch import Tensor

ADVANTAGE_SCALES = ("group", "batch", "none")


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    """Validate and reshape rewards (B,) -> (B/G, G) float, detached (rewards are constants for the loss)."""
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (a group of one has no baseline), got {group_size}")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (B,), got shape {tuple(rewards.shape)}")
    if rewards.numel() % group_size != 0:
        raise ValueError(
            f"number of rewards ({rewards.numel()}) must be divisible by group_size ({group_size}); "
            "rewards are expected ordered group by group"
        )
    rewards = rewards.detach()
    if not rewards.is_floating_point():
        rewards = rewards.float()  # bool / int rewards from a verifier
    return rewards.view(-1, group_size)  # (P, G)


def _constant_groups(grouped: Tensor) -> Tensor:
    """(P, G) -> (P, 1) bool: True where every reward of the group equals the first one."""
    return (grouped == grouped[:, :1]).all(dim=1, keepdim=True)


def group_advantages(rewards: Tensor, group_size: int, scale: str = "group", eps: float = 1e-6) -> Tensor:
    """A_i = (R_i - mean_group(R)) / (s + eps), per completion.

    rewards (B,) -> advantages (B,), detached.
    scale: "group" -> s = std of the completion's own group (GRPO as in verl / TRL defaults);
           "batch" -> s = std of all B rewards (TRL scale_rewards="batch"; less question-difficulty bias);
           "none"  -> no division, s + eps = 1 (the formula printed in the HICRA paper, and Dr. GRPO).
    std is the unbiased (Bessel, N-1) estimate, torch.std's default, matching TRL and verl.
    A group whose rewards are all equal carries no learning signal: its advantages are set to exactly 0.0
    (the float mean of equal values need not reproduce them bit-exactly, and 0/eps must not leak a residue).
    """
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"scale must be one of {ADVANTAGE_SCALES}, got {scale!r}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    grouped = _grouped(rewards, group_size)  # (P, G)
    centered = grouped - grouped.mean(dim=1, keepdim=True)  # (P, G)
    if scale == "group":
        centered = centered / (grouped.std(dim=1, keepdim=True) + eps)  # (P, 1) broadcast
    elif scale == "batch":
        centered = centered / (grouped.std() + eps)  # scalar over all B rewards
    # where, not multiply: with eps=0 a constant group is 0/0 = NaN, and NaN * 0 would still be NaN
    advantages = torch.where(_constant_groups(grouped), torch.zeros_like(centered), centered)  # (P, G)
    return advantages.view(-1)  # (B,)


def frac_zero_std_groups(rewards: Tensor, group_size: int) -> Tensor:
    """Fraction of groups whose rewards are all equal (they contribute zero advantage): float scalar tensor."""
    return _constant_groups(_grouped(rewards, group_size)).float().mean()
