"""The numbers one training step logs (train/*, hierarchy/*, perf/*, and the updates' loss/* policy/* optim/*) from what
the step computed; faults/* come from hicra/training/faults.py. Plain functions: values in, a flat {name: float} out."""

from __future__ import annotations

import torch
from torch import Tensor

from hicra.algorithms import frac_zero_std_groups, masked_mean
from hicra.rollout.hf import RolloutBatch
from hicra.training.timing import Stopwatch

# perf/<phase>_s for every Stopwatch phase of a step (hicra/training/module.py names them)
PHASES = ("step_time", "generation", "scoring", "old_logprobs", "planner", "update", "forward", "backward",
          "optimizer", "diagnostics")


def rollout_metrics(rollout: RolloutBatch, rewards: Tensor, correctness: Tensor, in_form: Tensor, planning_mask: Tensor,
                    token_advantages: Tensor, group_size: int) -> dict[str, float]:
    """What was sampled and how the algorithm credited it: rewards, correctness (B,) float, in_form (B,) bool (the
    answer in the asked form, a closed \\boxed{}), planning_mask and token_advantages (B,T)."""
    mask = rollout.response_mask
    planning = planning_mask & mask
    execution = ~planning_mask & mask
    return {
        "train/reward_mean": float(rewards.mean()),
        "train/reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        "train/accuracy": float((correctness >= 1.0).float().mean()),  # correctness only, never the format term
        "train/correctness_mean": float(correctness.mean()),  # equals accuracy for a `Task` (scores 1 or 0)
        "train/response_length": float(mask.sum(dim=1).float().mean()),
        "train/truncated_frac": float(rollout.truncated.float().mean()),
        "train/empty_frac": float(((mask.sum(dim=1) <= 1) & ~rollout.truncated).float().mean()),  # EOS only
        "train/frac_zero_std_groups": float(frac_zero_std_groups(rewards, group_size)),
        "hierarchy/planning_token_frac": float(planning.sum() / mask.sum().clamp(min=1)),
        "hierarchy/adv_planning_mean": float(masked_mean(token_advantages, planning)),
        "hierarchy/adv_execution_mean": float(masked_mean(token_advantages, execution)),
        "train/boxed_frac": float(in_form.float().mean()),
    }


def add_micro_batch(sums: dict[str, float], metrics: dict[str, Tensor], weight: float) -> None:
    """Add one micro-batch's loss/policy metrics into the batch's `sums`: loss/* already sum to the batch value (each
    micro-batch's loss is normalised by the whole batch), the others are token means, weighted by `weight`, the
    micro-batch's share of the batch's loss tokens."""
    for k, v in metrics.items():
        sums[k] = sums.get(k, 0.0) + float(v) * (1.0 if k.startswith("loss/") else weight)


def update_metrics(updates: list[dict[str, float]]) -> dict[str, float]:
    """Each update's loss/* policy/* optim/* values, averaged over the updates of one rollout batch."""
    return {k: sum(u[k] for u in updates) / len(updates) for k in updates[0]}


def perf_metrics(watch: Stopwatch, num_tokens: int) -> dict[str, float]:
    """perf/*: seconds per phase (forward/backward/optimizer summed over micro-batches and updates), throughput of
    the step, and the peak GPU memory since the step began."""
    metrics = {f"perf/{name}_s": watch.seconds[name] for name in PHASES if name in watch.seconds}
    metrics["perf/tokens_per_s"] = num_tokens / watch.seconds["step_time"]
    if torch.cuda.is_available():
        metrics["perf/peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return metrics


def overlong_metrics(overlong: Tensor, truncated: Tensor, exclude_truncated: bool) -> dict[str, float]:
    """The two answers to replies at the token budget: the soft penalty (overlong (B,) <= 0) and the filter."""
    dropped = truncated if exclude_truncated else torch.zeros_like(truncated)  # (B,) bool
    return {"train/overlong_penalty_mean": float(overlong.mean()),
            "train/overlong_frac": float((overlong < 0).float().mean()),  # replies inside the buffer or cut
            "train/excluded_truncated_frac": float(dropped.float().mean())}  # replies the filter gave no loss


def loss_inputs(token_advantages: Tensor, old_logprobs: Tensor | None, ref_logprobs: Tensor | None,
                sampler_logprobs: Tensor | None = None) -> dict[str, Tensor]:
    """The loss's per-token constants (B,T): token advantages, and old / reference / the sampler's own log-probs
    where there are any."""
    present = {"old_logprobs": old_logprobs, "ref_logprobs": ref_logprobs, "sampler_logprobs": sampler_logprobs}
    return {"token_advantages": token_advantages} | {k: v for k, v in present.items() if v is not None}
