"""Per-sample records -> the `eval/*` numbers of one evaluation run."""

from __future__ import annotations

import torch

from hicra.metrics.pass_at_k import mean_pass_at_k


def summarize(records: list[dict], num_problems: int, num_samples: int, ks: tuple[int, ...], greedy: bool,
              num_skipped: int = 0) -> dict[str, float]:
    """pass@k for every k, the headline `eval/score` (= pass@1) and what the answers looked like.

    Correct = task score >= 1.0, as training's accuracy (a `Task` scores 1.0 or 0.0; a custom scorer may not).
    """
    correct = torch.tensor([r["correct"] for r in records], dtype=torch.bool).view(num_problems, num_samples)  # (P,n)
    metrics = {f"eval/pass_at_{k}": mean_pass_at_k(correct, k) for k in ks}
    metrics["eval/score"] = metrics["eval/pass_at_1"]
    if greedy:
        metrics["eval/greedy_accuracy"] = metrics["eval/pass_at_1"]
    count = len(records)
    metrics |= {
        "eval/num_problems": float(num_problems),
        "eval/num_samples": float(count),
        "eval/samples_per_problem": float(num_samples),
        "eval/num_skipped_problems": float(num_skipped),
        "eval/reward_mean": sum(r["score"] for r in records) / count,
        "eval/response_length": sum(r["num_tokens"] for r in records) / count,
        "eval/truncated_frac": sum(r["truncated"] for r in records) / count,
        "eval/boxed_frac": sum(r["boxed"] for r in records) / count,
    }
    return metrics
