"""Algorithm: one frozen bundle of the choices that make GRPO, HICRA, Dr. GRPO, ... (built by Hydra `_target_`).

GRPO and HICRA differ only in `token_advantage_fn` (identity vs hicra_token_advantages with alpha bound) and
`needs_planning_mask`; everything else is shared. Each function slot has one call signature, a Protocol below: a new
estimator, transform or objective is a function with that signature and a YAML file naming it, not a branch here.
Shapes: B = completions = prompts x G, T = response length.
"""

import dataclasses
import functools
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from hicra.algorithms.advantages import informative_groups
from hicra.algorithms.losses import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    Total,
    aggregate,
    clipped_surrogate,
    kl_penalty,
    kl_shaped_rewards,
)
from hicra.algorithms.overlong import overlong_penalty
from hicra.algorithms.sampler_correction import SAMPLER_CORRECTIONS, sampler_correction_weights
from hicra.algorithms.transforms import drop_truncated
from hicra.errors import ConfigError


class AdvantageFn(Protocol):
    """rewards (B,) -> advantages (B,), e.g. partial(group_advantages, group_size=8, scale="group")."""

    def __call__(self, rewards: Tensor) -> Tensor: ...


class TokenAdvantageFn(Protocol):
    """(advantages (B,), planning_mask (B,T)) -> token_advantages (B,T), detached: identity_token_advantages (GRPO)
    or partial(hicra_token_advantages, alpha=0.2) (HICRA)."""

    def __call__(self, advantages: Tensor, planning_mask: Tensor) -> Tensor: ...


class PolicyLossFn(Protocol):
    """The per-token policy objective, e.g. partial(clipped_surrogate, clip_low=0.2, clip_high=0.28).

    (logprobs, old_logprobs, token_advantages, response_mask), all (B,T) -> (per-token loss (B,T), 0 on padding;
    detached scalar metrics, logged as policy/<name>). `Algorithm.loss` aggregates the per-token loss.
    """

    def __call__(self, logprobs: Tensor, old_logprobs: Tensor, token_advantages: Tensor,
                 response_mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]: ...


@dataclass(frozen=True)
class Algorithm:
    """Advantage estimator + token transform + policy objective, and how their loss terms are aggregated.

    loss = aggregate(policy_loss_fn) + kl_coef * aggregate(kl_penalty) - entropy_coef * aggregate(entropy),
    every term aggregated over the same tokens with the same mode / norm_length / total.
    Settings a function is bound to (group_size, alpha, clip_low, clip_high) are fields here too, and the config binds
    them with `${..name}`: the field is the one value users set, validated here and logged with the run.
    """

    advantage_fn: AdvantageFn
    token_advantage_fn: TokenAdvantageFn
    policy_loss_fn: PolicyLossFn | None = None  # None: clipped_surrogate bound to clip_low / clip_high
    group_size: int = 8
    clip_low: float = 0.2
    clip_high: float = 0.28
    aggregation: str = "token_mean"
    norm_length: int | None = None
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    kl_reward_coef: float = 0.0  # KL as a reward penalty before advantages (verl's use_kl_in_reward); 0 = off
    kl_reward_estimator: str = "k1"
    entropy_coef: float = 0.0
    num_iterations: int = 1
    needs_planning_mask: bool = False
    exclude_truncated: bool = False  # DAPO overlong filtering: truncated responses get no gradient
    overlong_buffer: int = 0  # DAPO overlong reward shaping: L_cache tokens before max_new_tokens; 0 = off
    overlong_penalty: float = 1.0  # its factor: the penalty reaches -overlong_penalty at the token budget
    sampler_correction: str = "none"  # none | token_truncate | sequence_mask (truncated IS, sampler_correction.py)
    sampler_correction_cap: float = 3.0  # C: token weights truncated to C, or sequences with ratio > C masked
    # DAPO dynamic sampling: groups whose rewards are all equal are dropped and more prompts sampled, up to this many
    # rounds per step, until the step has its prompts' worth of informative groups; 0 = off (every group trained)
    dynamic_sampling_rounds: int = 0
    alpha: float | None = None  # strength of the token transform, bound into token_advantage_fn by the config

    def __post_init__(self) -> None:
        checks = [
            (self.group_size >= 2, "group_size", self.group_size, "an int >= 2"),
            (0.0 < self.clip_low < 1.0, "clip_low", self.clip_low, "in (0, 1)"),
            (0.0 < self.clip_high < 1.0, "clip_high", self.clip_high, "in (0, 1)"),
            (self.aggregation in AGGREGATIONS, "aggregation", self.aggregation, f"one of {AGGREGATIONS}"),
            (self.norm_length is None or self.norm_length > 0, "norm_length", self.norm_length, "None or > 0"),
            (self.kl_coef >= 0.0, "kl_coef", self.kl_coef, ">= 0"),
            (self.kl_estimator in KL_ESTIMATORS, "kl_estimator", self.kl_estimator, f"one of {KL_ESTIMATORS}"),
            (self.kl_reward_coef >= 0.0, "kl_reward_coef", self.kl_reward_coef, ">= 0"),
            (self.kl_reward_estimator in KL_ESTIMATORS, "kl_reward_estimator", self.kl_reward_estimator,
             f"one of {KL_ESTIMATORS}"),
            (self.entropy_coef >= 0.0, "entropy_coef", self.entropy_coef, ">= 0"),
            (self.num_iterations >= 1, "num_iterations", self.num_iterations, "an int >= 1"),
            (self.alpha is None or 0.0 <= self.alpha < 1.0, "alpha", self.alpha, "a number in [0, 1)"),
            (self.overlong_buffer >= 0, "overlong_buffer", self.overlong_buffer, "an int >= 0 (0 = off)"),
            (self.overlong_penalty >= 0.0, "overlong_penalty", self.overlong_penalty, ">= 0"),
            (self.sampler_correction in SAMPLER_CORRECTIONS, "sampler_correction", self.sampler_correction,
             f"one of {SAMPLER_CORRECTIONS}"),
            (self.sampler_correction_cap >= 1.0, "sampler_correction_cap", self.sampler_correction_cap, ">= 1"),
            (isinstance(self.dynamic_sampling_rounds, int) and self.dynamic_sampling_rounds >= 0,
             "dynamic_sampling_rounds", self.dynamic_sampling_rounds, "an int >= 0 (0 = off)"),
        ]
        for ok, name, value, allowed in checks:
            if not ok:
                raise ValueError(f"algorithm.{name}={value!r} is invalid; allowed: {allowed}")
        if self.policy_loss_fn is None:  # frozen: set once, here, like a default that depends on other fields
            object.__setattr__(self, "policy_loss_fn",
                               functools.partial(clipped_surrogate, clip_low=self.clip_low, clip_high=self.clip_high))
        self._check_functions()

    def _check_functions(self) -> None:
        """Fail at construction, not at the first training step, on a mis-bound function."""
        fields = {f.name for f in dataclasses.fields(self)}
        for slot in ("advantage_fn", "token_advantage_fn", "policy_loss_fn"):
            fn = getattr(self, slot)
            bound = fn.keywords if isinstance(fn, functools.partial) else {}
            for key in sorted(bound.keys() & fields):  # e.g. group_size: must be the value the field holds
                if getattr(self, key) is not None and bound[key] != getattr(self, key):
                    raise ValueError(f"{slot} is bound to {key}={bound[key]} but Algorithm.{key}={getattr(self, key)}")
        # Probe calls on tiny tensors: surface bad bound arguments (scale, eps, alpha, clip) as their own ValueErrors.
        self.advantage_fn(torch.zeros(self.group_size))
        self.token_advantage_fn(torch.zeros(1), torch.zeros(1, 1, dtype=torch.bool))
        per_token, _ = self.policy_loss_fn(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1),
                                           torch.ones(1, 1, dtype=torch.bool))
        if per_token.shape != (1, 1):
            raise ValueError(f"policy_loss_fn must return a per-token loss (B,T); got shape {tuple(per_token.shape)} "
                             f"for (1,1) inputs (see PolicyLossFn in hicra/algorithms/spec.py)")

    @property
    def needs_reference(self) -> bool:
        """True when the loss or the reward has a KL term, so the trainer must keep a frozen reference model."""
        return self.kl_coef > 0 or self.kl_reward_coef > 0

    @property
    def needs_kl_in_reward(self) -> bool:
        """True when rewards are KL-penalised before advantages: the sampling policy's log-probs are needed first."""
        return self.kl_reward_coef > 0

    def rewards_with_kl(self, rewards: Tensor, logprobs: Tensor | None, ref_logprobs: Tensor | None,
                        response_mask: Tensor) -> Tensor:
        """rewards (B,) minus kl_reward_coef x the summed per-token KL (B,T) of the sampling policy to the reference;
        `rewards` itself when kl_reward_coef is 0 (then the log-probs may be None)."""
        if not self.needs_kl_in_reward:
            return rewards
        if logprobs is None or ref_logprobs is None:
            raise ValueError(f"kl_reward_coef={self.kl_reward_coef} > 0 needs logprobs and ref_logprobs, got None")
        return kl_shaped_rewards(rewards, logprobs, ref_logprobs, response_mask, self.kl_reward_coef,
                                 self.kl_reward_estimator)

    @property
    def needs_entropy_grad(self) -> bool:
        """True when the loss has an entropy bonus, so entropy must be computed with grad (from logits)."""
        return self.entropy_coef > 0

    def advantages(self, rewards: Tensor) -> Tensor:
        """rewards (B,) -> advantages (B,)."""
        return self.advantage_fn(rewards)

    def informative_groups(self, rewards: Tensor) -> Tensor:
        """rewards (B,) -> (B/G,) bool: the groups whose rewards are not all equal (what dynamic sampling keeps)."""
        return informative_groups(rewards, self.group_size)

    def token_advantages(self, advantages: Tensor, planning_mask: Tensor) -> Tensor:
        """advantages (B,), planning_mask (B,T) -> token_advantages (B,T), detached."""
        return self.token_advantage_fn(advantages, planning_mask)

    def overlong_penalties(self, response_mask: Tensor, max_length: int) -> Tensor:
        """DAPO's soft overlong penalty (B,) <= 0 for responses of response_mask (B,T) under a budget of
        `max_length` tokens; all zeros when overlong_buffer is 0 (hicra/algorithms/overlong.py)."""
        return overlong_penalty(response_mask.sum(dim=1), max_length=max_length, buffer=self.overlong_buffer,
                                factor=self.overlong_penalty)

    def check_token_budget(self, max_new_tokens: int) -> None:
        """The overlong buffer lies within the token budget: said in one line before any step."""
        if self.overlong_buffer > max_new_tokens:
            raise ConfigError(f"algorithm.overlong_buffer={self.overlong_buffer} is invalid; allowed: 0 (off) to "
                              f"rollout.max_new_tokens={max_new_tokens}")

    def loss_mask(self, response_mask: Tensor, truncated: Tensor) -> Tensor:
        """Tokens the loss is taken over: response_mask (B,T), truncated (B,) -> (B,T) bool."""
        return drop_truncated(response_mask, truncated) if self.exclude_truncated else response_mask.bool()

    def loss(
        self,
        logprobs: Tensor,
        old_logprobs: Tensor,
        token_advantages: Tensor,
        response_mask: Tensor,
        ref_logprobs: Tensor | None = None,
        entropy: Tensor | None = None,
        total: Total = None,
        sampler_logprobs: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss (scalar) and detached metrics; all tensor inputs (B,T).

        loss/total = loss/policy + kl_coef * loss/kl - entropy_coef * loss/entropy_bonus, where loss/kl and
        loss/entropy_bonus are the aggregated (unweighted) KL and entropy, 0 when their coefficient is 0.
        ref_logprobs is required iff needs_reference; entropy (with grad) iff needs_entropy_grad.
        sampler_logprobs (the sampler's own log-probs, when it reports them) weight the per-token policy loss by
        truncated importance sampling (sampler_correction; none leaves it untouched) and are logged as mismatch/*.
        """
        agg = functools.partial(
            aggregate, mask=response_mask, mode=self.aggregation, norm_length=self.norm_length, total=total
        )
        per_token, stats = self.policy_loss_fn(logprobs, old_logprobs, token_advantages, response_mask)  # (B,T)
        mismatch = {}
        if sampler_logprobs is not None:
            weights, mismatch = sampler_correction_weights(old_logprobs, sampler_logprobs, response_mask,
                                                           mode=self.sampler_correction,
                                                           cap=self.sampler_correction_cap)  # (B,T) constant
            if self.sampler_correction != "none":
                per_token = per_token * weights
        policy = agg(per_token)
        zero = torch.zeros((), dtype=policy.dtype, device=policy.device)
        kl, entropy_bonus = zero, zero
        if self.needs_reference:
            if ref_logprobs is None:
                raise ValueError(f"kl_coef={self.kl_coef} > 0 needs ref_logprobs, got None")
            kl = agg(kl_penalty(logprobs, ref_logprobs, self.kl_estimator))
        if self.needs_entropy_grad:
            if entropy is None:
                raise ValueError(f"entropy_coef={self.entropy_coef} > 0 needs entropy, got None")
            entropy_bonus = agg(entropy)
        total_loss = policy + self.kl_coef * kl - self.entropy_coef * entropy_bonus
        metrics = {"loss/policy": policy, "loss/kl": kl, "loss/entropy_bonus": entropy_bonus, "loss/total": total_loss}
        metrics = {k: v.detach() for k, v in metrics.items()}
        metrics.update({f"policy/{k}": v for k, v in stats.items()})
        metrics.update({k: v.detach() for k, v in mismatch.items()})
        return total_loss, metrics
