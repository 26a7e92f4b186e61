"""Truncated importance sampling for a sampler that is not the trained model (vLLM, another precision).

The rollout is drawn from pi_sampler, but the policy-gradient ratio is taken against the trainer's own log-probs of
the sampling policy (old_logprobs). Where the two differ, the tokens were not drawn from the distribution the
objective assumes; weighting each token's loss by pi_old / pi_sampler, capped at C, corrects that (Yao et al. 2025,
"Your efficient RL framework secretly brings you off-policy RL training"). Definitions follow TRL 1.16's GRPOTrainer
(`vllm_importance_sampling_correction`, `vllm_importance_sampling_mode`, `vllm_importance_sampling_cap`, default
mode sequence_mask with cap 3):

    d[i,t]         = (old_logprobs - sampler_logprobs)[i,t] on response tokens, 0 on padding and where the sampler
                     reported no log-prob (NaN: an EOS vLLM stopped on without scoring it counts as agreeing)
    token_truncate:  w[i,t] = min(exp(d[i,t]), C)
    sequence_mask:   w[i,t] = 1 if exp(sum_t d[i,t]) <= C else 0     (the whole response dropped)

per_token_loss * w is what `Algorithm.loss` aggregates; w is a constant (no gradient). When the sampler's log-probs
equal the trainer's, d = 0 and w = 1 exactly, so the loss and its gradients are bit-identical to no correction.
"""

import torch
from torch import Tensor

from hicra.algorithms.functional import masked_mean
from hicra.options import SAMPLER_CORRECTIONS


def sampler_correction_weights(old_logprobs: Tensor, sampler_logprobs: Tensor, response_mask: Tensor, *, mode: str,
                               cap: float = 3.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Importance weights (B,T) (0 on padding, 1 everywhere for mode "none") and detached metrics:
    mismatch/logprob_abs_diff (mean |d| over response tokens) and mismatch/clipped_frac (the share of response tokens
    whose weight the cap changed: truncated to C, or inside a masked sequence).

    old_logprobs: the trainer's log-probs of the sampling policy; sampler_logprobs: the sampler's; all (B,T).
    """
    if mode not in SAMPLER_CORRECTIONS:
        raise ValueError(f"sampler_correction={mode!r} is invalid; allowed: one of {SAMPLER_CORRECTIONS}")
    if not cap >= 1.0:
        raise ValueError(f"sampler_correction_cap={cap} is invalid; allowed: a number >= 1")
    mask = response_mask.bool()  # (B,T)
    known = mask & sampler_logprobs.isfinite()  # (B,T) response tokens the sampler reported a log-prob for
    # padding zeroed before exp: garbage log-probs there must not become inf/NaN weights
    diff = torch.where(known, old_logprobs.detach() - sampler_logprobs.detach(), torch.zeros_like(old_logprobs))
    if mode == "token_truncate":
        ratio = diff.exp()  # (B,T)
        clipped = ratio > cap
        weights = ratio.clamp(max=cap)
    elif mode == "sequence_mask":
        ratio = diff.sum(dim=1, keepdim=True).exp()  # (B,1) pi_old(y) / pi_sampler(y)
        clipped = (ratio > cap).expand_as(mask)  # (B,T)
        weights = (~clipped).to(old_logprobs.dtype)
    else:
        clipped = torch.zeros_like(mask)
        weights = torch.ones_like(old_logprobs)
    weights = torch.where(mask, weights, torch.zeros_like(weights))
    metrics = {"mismatch/logprob_abs_diff": masked_mean(diff.abs(), known),
               "mismatch/clipped_frac": masked_mean((clipped & mask).float(), mask)}
    return weights, metrics
