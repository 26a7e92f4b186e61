"""Sequence advantages from scalar rewards: group-relative (GRPO), leave-one-out (RLOO), batch-whitened (REINFORCE++).

Shapes: B = completions = prompts x G, G = group_size. `rewards` (B,) are ordered group by group:
rewards[0:G] are the G completions of prompt 0, rewards[G:2G] those of prompt 1, and so on.
"""

import torch
from torch import Tensor

from hicra.options import ADVANTAGE_SCALES, REINFORCE_PP_BASELINES


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


def informative_groups(rewards: Tensor, group_size: int) -> Tensor:
    """rewards (B,) -> (B/G,) bool: True where the group's rewards are not all equal (DAPO's dynamic sampling keeps
    these). Exact comparison, not std > threshold: continuous rewards that differ by one ulp still differ, and the
    float std of equal values need not be 0."""
    return ~_constant_groups(_grouped(rewards, group_size)).squeeze(1)


def _scaled(centered: Tensor, grouped: Tensor, scale: str, eps: float, constant_is_zero: bool = True) -> Tensor:
    """Divide baselined rewards `centered` (P, G) by the spread `scale` names -> advantages (B,).

    "group": std of the group's rewards; "batch": whiten over all B (subtract their mean, divide by their std);
    "none": as they are. A zero spread gives 0, never x/eps or NaN; with constant_is_zero a group whose rewards are
    all equal gives exactly 0 (a float mean of equal values need not reproduce them bit-exactly).
    """
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"scale must be one of {ADVANTAGE_SCALES}, got {scale!r}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    zero = _constant_groups(grouped) if constant_is_zero else torch.zeros_like(grouped, dtype=torch.bool)
    # A zero spread is told by exact equality of the rewards, not by std == 0: the float mean of equal 0.1s need not
    # reproduce them, and the residue's tiny std would divide a residue into a full-size advantage.
    if scale == "group":
        centered = centered / (grouped.std(dim=1, keepdim=True) + eps)  # (P, 1) broadcast
        zero = zero | _constant_groups(grouped)
    elif scale == "batch":
        centered = (centered - centered.mean()) / (centered.std() + eps)  # over all B baselined rewards
        zero = zero | (grouped == grouped.view(-1)[0]).all()  # one reward for the whole batch
    # where, not multiply: with eps=0 a zero spread is 0/0 = NaN, and NaN * 0 would still be NaN
    return torch.where(zero, torch.zeros_like(centered), centered).reshape(-1)  # (B,)


def rloo_advantages(rewards: Tensor, group_size: int, scale: str = "none", eps: float = 1e-6) -> Tensor:
    """RLOO (Ahmadian et al. 2024, "Back to Basics"; TRL's RLOOTrainer): a leave-one-out baseline,
    A_i = R_i - mean_{j != i} R_j over the completion's own group = G/(G-1) * (R_i - mean_group(R)).

    rewards (B,) -> advantages (B,), detached. The baseline leaves the completion itself out, so it does not depend
    on the sample it judges (an unbiased REINFORCE baseline); the result is GRPO's unscaled advantage times
    G/(G-1). scale: "none" = RLOO as published (TRL's normalize_advantages=False); "batch" whitens the batch's RLOO
    advantages (TRL's normalize_advantages=True); "group" divides by the group's reward std.
    A group whose rewards are all equal gets exactly 0.0.
    """
    grouped = _grouped(rewards, group_size)  # (P, G)
    loo_mean = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)  # (P, G) mean of the other G-1
    return _scaled(grouped - loo_mean, grouped, scale, eps)


def reinforce_pp_advantages(rewards: Tensor, group_size: int, baseline: str = "group", scale: str = "batch",
                            eps: float = 1e-6) -> Tensor:
    """REINFORCE++ (Hu et al. 2025, arXiv:2501.03262; OpenRLHF's `reinforce_baseline` and `reinforce` estimators):
    global (whole-batch) advantage normalisation instead of GRPO's per-group one.

    baseline "group" (REINFORCE++-baseline, the paper's variant for reasoning with several samples per prompt):
        A~_i = R_i - mean_group(R);  A_i = (A~_i - mean_batch(A~)) / (std_batch(A~) + eps)
        (mean_batch(A~) is 0 up to rounding: every group's A~ sums to 0). A group whose rewards are all equal
        gets exactly 0.0.
    baseline "none" (REINFORCE++ with the raw reward): A_i = (R_i - mean_batch(R)) / (std_batch(R) + eps); an
        all-equal group is not zeroed here: it still differs from the rest of the batch.
    scale "batch" is REINFORCE++; "none" skips the whitening (baseline=group is then Dr. GRPO's advantage) and
    "group" divides by the group's std (baseline=group is then GRPO's). std is unbiased (N-1); a zero spread gives 0.
    rewards (B,) -> advantages (B,), detached. The batch is this rank's rollout batch, as for
    group_advantages(scale="batch"). OpenRLHF whitens per token (its KL is folded into per-token rewards); with one
    outcome reward per response and no KL in the reward hicra whitens per response, so a long response weighs no
    more in the statistics than a short one.
    """
    if baseline not in REINFORCE_PP_BASELINES:
        raise ValueError(f"baseline must be one of {REINFORCE_PP_BASELINES}, got {baseline!r}")
    grouped = _grouped(rewards, group_size)  # (P, G)
    centered = grouped - grouped.mean(dim=1, keepdim=True) if baseline == "group" else grouped
    return _scaled(centered, grouped, scale, eps, constant_is_zero=baseline == "group")
