"""Pure tensor maths of GRPO / HICRA: advantages, token transforms, losses, log-prob and entropy helpers.

Tensor vocabulary (used in every docstring and shape comment of this package):
    G                  group size: completions sampled per prompt
    B                  completions in a batch = prompts x G, ordered group by group
    T                  response length (padded); V = vocabulary size
    rewards            (B,)   float, one scalar per completion
    advantages         (B,)   float, sequence-level, e.g. group-relative R - mean(R)
    token_advantages   (B,T)  float, per-token credit after the token transform (HICRA or identity); constant
    response_mask      (B,T)  bool or {0,1}: True on generated tokens, False on padding
    planning_mask      (B,T)  bool or {0,1}: True on planning tokens (inside a strategic gram); constant
    logprobs           (B,T)  float, log pi_theta(token) of the policy being trained (carries grad)
    old_logprobs       (B,T)  float, log pi_old(token) of the policy that sampled the rollout (constant)
    ref_logprobs       (B,T)  float, log pi_ref(token) of the frozen reference model (constant)

Modules here import only torch and the standard library: no Lightning, Hydra, MLflow or transformers. What is
measured rather than optimised (hierarchy diagnostics, pass@k, seed statistics) lives in `hicra.metrics`, which may
use the helpers here but is never imported by them.
"""

from hicra.algorithms.advantages import (
    ADVANTAGE_SCALES,
    REINFORCE_PP_BASELINES,
    frac_zero_std_groups,
    group_advantages,
    informative_groups,
    reinforce_pp_advantages,
    rloo_advantages,
)
from hicra.algorithms.functional import (
    entropy_from_logits,
    logprobs_and_entropy,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
)
from hicra.algorithms.losses import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    aggregate,
    aggregate_denominator,
    clipped_surrogate,
    kl_penalty,
    kl_shaped_rewards,
    policy_loss,
    sequence_clipped_surrogate,
)
from hicra.algorithms.overlong import overlong_penalty
from hicra.algorithms.sampler_correction import SAMPLER_CORRECTIONS, sampler_correction_weights
from hicra.algorithms.spec import Algorithm
from hicra.algorithms.transforms import (
    hicra_token_advantages,
    identity_token_advantages,
)

__all__ = [
    "ADVANTAGE_SCALES",
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "REINFORCE_PP_BASELINES",
    "SAMPLER_CORRECTIONS",
    "Algorithm",
    "aggregate",
    "aggregate_denominator",
    "clipped_surrogate",
    "entropy_from_logits",
    "frac_zero_std_groups",
    "group_advantages",
    "hicra_token_advantages",
    "identity_token_advantages",
    "informative_groups",
    "kl_penalty",
    "kl_shaped_rewards",
    "logprobs_and_entropy",
    "logprobs_from_logits",
    "masked_mean",
    "masked_sum",
    "overlong_penalty",
    "policy_loss",
    "reinforce_pp_advantages",
    "rloo_advantages",
    "sampler_correction_weights",
    "sequence_clipped_surrogate",
]
