"""Per-token policy-gradient objectives and their aggregation to a scalar loss.

Shapes: B = completions = prompts x G, T = response length. logprobs / old_logprobs / ref_logprobs,
token_advantages and response_mask are all (B,T); padding positions (response_mask False) contribute
nothing to any value, gradient or denominator.

The per-token objective and the aggregation are kept apart (verl's agg_loss idea): Dr. GRPO-style length
normalisation is an aggregation choice, not a different loss.
"""


import torch
from torch import Tensor

from hicra.algorithms.functional import masked_mean, masked_sum
from hicra.options import AGGREGATIONS, KL_ESTIMATORS

LOG_RATIO_CLAMP = 20.0  # exp(20) ~ 5e8: keeps ratios finite when two policies disagree wildly (verl uses the same)

Total = int | float | Tensor | None


def aggregate_denominator(mask: Tensor, mode: str = "token_mean") -> Tensor:
    """What `aggregate` divides by: valid tokens (token_mean) or sequences with >= 1 valid token (other modes).

    Pass `aggregate_denominator(full_batch_mask, mode)` as `total=` to every micro-batch of one rollout batch
    so that the micro-batch losses (and gradients) sum exactly to the full-batch ones.
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"aggregation mode must be one of {AGGREGATIONS}, got {mode!r}")
    mask = mask.bool()  # (B,T)
    return mask.sum() if mode == "token_mean" else mask.any(dim=1).sum()


def aggregate(
    values: Tensor, mask: Tensor, mode: str = "token_mean", norm_length: int | None = None, total: Total = None
) -> Tensor:
    """Reduce per-token values (B,T) to a scalar over the valid tokens of `mask` (B,T).

    token_mean:              sum_{i,t} m*v / sum_{i,t} m                       (DAPO; every token weighs the same)
    seq_mean_token_mean:     sum_i [sum_t m*v / sum_t m] / #sequences          (original GRPO; 1/|o_i| length bias)
    seq_mean_token_sum_norm: sum_i [sum_t m*v / norm_length] / #sequences      (Dr. GRPO; constant normaliser,
                             norm_length defaults to T = values.shape[1] -- pass it explicitly, e.g. the max
                             response length, when micro-batches are padded to different T)
    #sequences counts sequences with at least one valid token; an empty sequence contributes 0 and no NaN.
    total: overrides the denominator (token count for token_mean, sequence count otherwise), see
    `aggregate_denominator`. Denominators are clamped to >= 1 so an all-padding batch gives 0.
    """
    denominator = aggregate_denominator(mask, mode) if total is None else total
    denominator = torch.as_tensor(denominator, dtype=values.dtype, device=values.device).clamp(min=1)
    if mode == "token_mean":
        return masked_sum(values, mask) / denominator
    if mode == "seq_mean_token_mean":
        per_seq = masked_mean(values, mask, dim=1)  # (B,); empty rows give 0
    else:
        norm_length = values.shape[1] if norm_length is None else norm_length
        if norm_length <= 0:
            raise ValueError(f"norm_length must be > 0, got {norm_length}")
        per_seq = masked_sum(values, mask, dim=1) / norm_length  # (B,)
    return per_seq.sum() / denominator


def _policy_metrics(
    ratio: Tensor, log_ratio: Tensor, adv: Tensor, mask: Tensor, clip_low: float, clip_high: float
) -> dict[str, Tensor]:
    """Detached diagnostics over valid tokens (token-level means over this batch, whatever the aggregation)."""
    ratio, log_ratio = ratio.detach(), log_ratio.detach()
    clipped_low = (ratio < 1.0 - clip_low) & (adv < 0)  # min() picks the clamped branch: no gradient
    clipped_high = (ratio > 1.0 + clip_high) & (adv > 0)
    return {
        "clip_frac_low": masked_mean(clipped_low.float(), mask),
        "clip_frac_high": masked_mean(clipped_high.float(), mask),
        # k3 estimator of KL(old || new) = E_old[(r - 1) - log r] >= 0 (Schulman's approximating-KL note)
        "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask),
        "ratio_mean": masked_mean(ratio, mask),
        "ratio_max": torch.where(mask, ratio, torch.zeros_like(ratio)).max(),  # ratio > 0, so 0 = "no valid token"
    }


def _masked_inputs(logprobs: Tensor, old_logprobs: Tensor, token_advantages: Tensor, response_mask: Tensor,
                   clip_low: float, clip_high: float) -> tuple[Tensor, Tensor, Tensor]:
    """(mask, log-ratio, advantages), all (B,T), 0 on padding; checks the clip range. Padded positions are zeroed
    *before* the maths: where() alone would pass 0 * (NaN/inf local derivative) = NaN back into garbage logprobs."""
    if not (0.0 < clip_low < 1.0 and 0.0 < clip_high < 1.0):
        raise ValueError(f"clip_low and clip_high must be in (0, 1), got {clip_low} and {clip_high}")
    mask = response_mask.bool()  # (B,T)
    log_ratio = torch.where(mask, logprobs - old_logprobs.detach(), torch.zeros_like(logprobs))  # (B,T)
    adv = torch.where(mask, token_advantages.detach(), torch.zeros_like(token_advantages))  # (B,T)
    return mask, log_ratio, adv


def clipped_surrogate(
    logprobs: Tensor,
    old_logprobs: Tensor,
    token_advantages: Tensor,
    response_mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate with DAPO's decoupled clip-higher, per token (a PolicyLossFn, hicra/algorithms/spec.py).

        r[i,t]    = exp(logprobs - old_logprobs)                       (log-ratio clamped to +-20)
        loss[i,t] = -min(r * A, clamp(r, 1 - clip_low, 1 + clip_high) * A)

    All inputs (B,T); old_logprobs and token_advantages are treated as constants. Returns (per-token loss (B,T), 0 on
    padding, metrics clip_frac_low, clip_frac_high, approx_kl, ratio_mean, ratio_max as detached scalars).
    """
    mask, log_ratio, adv = _masked_inputs(logprobs, old_logprobs, token_advantages, response_mask, clip_low, clip_high)
    log_ratio = log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)  # (B,T)
    surrogate = torch.min(ratio * adv, ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * adv)  # (B,T)
    return -surrogate, _policy_metrics(ratio, log_ratio, adv, mask, clip_low, clip_high)


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    token_advantages: Tensor,
    response_mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    aggregation: str = "token_mean",
    norm_length: int | None = None,
    total: Total = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """`clipped_surrogate` reduced with `aggregate`: (scalar loss, the same metrics). All inputs (B,T)."""
    per_token, metrics = clipped_surrogate(
        logprobs, old_logprobs, token_advantages, response_mask, clip_low=clip_low, clip_high=clip_high
    )
    return aggregate(per_token, response_mask.bool(), aggregation, norm_length, total), metrics


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token estimators of KL(pi || ref) from samples of pi, (B,T) -> (B,T). Not masked: aggregate does that.

    With d = clamp(logprobs - ref_logprobs, -20, 20):
      k1 = d                           (unbiased, can be negative, high variance)
      k2 = d^2 / 2                     (biased, >= 0; its gradient is the correct KL gradient)
      k3 = exp(-d) + d - 1 >= 0        (unbiased, low variance; GRPO paper / verl "low_var_kl")
    All three are exactly 0 where logprobs == ref_logprobs.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")
    ref_logprobs = ref_logprobs.detach()
    d = (logprobs - ref_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (B,T)
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d.square()
    # expm1 keeps precision for small |d|; clamp removes the last-ulp negatives of the cancellation
    return (torch.expm1(-d) + d).clamp(min=0.0)


def sequence_clipped_surrogate(
    logprobs: Tensor,
    old_logprobs: Tensor,
    token_advantages: Tensor,
    response_mask: Tensor,
    *,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
) -> tuple[Tensor, dict[str, Tensor]]:
    """GSPO (Zheng et al. 2025), in its GSPO-token form, so that token-level advantages (HICRA's) still apply:

        s[i]      = exp(mean_t (logprobs - old_logprobs))                   (sequence-level, length-normalised ratio)
        s[i,t]    = sg(s[i]) * exp(logprobs - sg(logprobs))                 (value s[i], gradient s[i] * d logprobs)
        loss[i,t] = -min(s[i,t] * A, clamp(s[i,t], 1 - clip_low, 1 + clip_high) * A)

    With a sequence-constant A and `seq_mean_token_mean` aggregation this is GSPO's objective exactly. Clip ranges are
    GSPO's (3e-4, 4e-4): a whole sequence's ratio is clipped, so the ranges are far narrower than per-token PPO's.
    All inputs (B,T); returns (per-token loss (B,T), 0 on padding; the clipped_surrogate metrics over sequences).
    """
    mask, log_ratio, adv = _masked_inputs(logprobs, old_logprobs, token_advantages, response_mask, clip_low, clip_high)
    seq_log_ratio = masked_mean(log_ratio, mask, dim=1).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (B,)
    safe_logprobs = torch.where(mask, logprobs, torch.zeros_like(logprobs))  # (B,T) no NaN from padding garbage
    ratio = torch.exp(seq_log_ratio.detach()[:, None] + safe_logprobs - safe_logprobs.detach())  # (B,T) value s[i]
    surrogate = torch.min(ratio * adv, ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * adv)  # (B,T)
    seq_ratio = seq_log_ratio.detach().exp()[:, None].expand_as(log_ratio)  # (B,T) for the metrics
    return -surrogate, _policy_metrics(seq_ratio, seq_log_ratio.detach()[:, None].expand_as(log_ratio), adv, mask,
                                       clip_low, clip_high)


def kl_shaped_rewards(rewards: Tensor, logprobs: Tensor, ref_logprobs: Tensor, response_mask: Tensor,
                      coef: float, estimator: str = "k1") -> Tensor:
    """KL as a reward penalty (verl's use_kl_in_reward, the InstructGPT form), before advantages are computed:

        reward'[i] = reward[i] - coef * sum_t m[i,t] * kl_t(logprobs, ref_logprobs)

    rewards (B,); logprobs (the sampling policy's) / ref_logprobs / response_mask (B,T); all constants. coef = 0
    returns `rewards` unchanged. Unlike the KL loss term, the penalty shapes the advantage, so it is group-normalised
    with the reward."""
    if coef == 0:
        return rewards
    kl = kl_penalty(logprobs.detach(), ref_logprobs, estimator)  # (B,T)
    return rewards - coef * masked_sum(kl, response_mask.bool(), dim=1)
