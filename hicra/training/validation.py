"""Held-out greedy evaluation during training: each rank scores its share of the prompts, the metrics pool them."""

from __future__ import annotations

import torch

from hicra.metrics.stats import wilson_interval
from hicra.rollout.hf import RolloutBatch
from hicra.tasks.scoring import ScoredBatch
from hicra.training.distributed import gather_objects

_FIELDS = ("scores", "lengths", "in_form", "truncated")


class ValidationTally:
    """Per-reply correctness, length, answer form and truncation of one validation epoch, pooled over ranks into
    val/* at its end. val/accuracy counts correctness only: a truncated reply has no closed answer and scores 0;
    val/accuracy_low/high is its 95% Wilson interval over the held-out questions."""

    def __init__(self):
        self.rows: dict[str, list[float]] = {name: [] for name in _FIELDS}

    def add(self, scored: ScoredBatch, rollout: RolloutBatch, counted: list[bool] | None = None) -> None:
        """One validation batch; `counted` (one flag per row, default all) drops the rows that only pad a rank's
        share to the others' length (hicra/training/data.py: even_shard)."""
        keep = [True] * len(scored.scores) if counted is None else list(counted)
        rows = {"scores": scored.scores, "in_form": [float(x) for x in scored.in_form],
                "lengths": rollout.response_mask.sum(dim=1).float().tolist(),
                "truncated": rollout.truncated.float().tolist()}
        for name, values in rows.items():
            self.rows[name] += [value for value, kept in zip(values, keep) if kept]

    def pooled_metrics(self, trainer) -> tuple[dict[str, float], int] | None:
        """(val/*, number of prompts) over every rank's prompts, None when there were none; starts the next tally."""
        shares = gather_objects(self.rows, trainer)  # in rank order
        pooled = {name: torch.tensor([x for share in shares for x in share[name]]) for name in _FIELDS}
        self.rows = {name: [] for name in _FIELDS}
        scores = pooled["scores"]
        if not len(scores):
            return None
        correct = int((scores >= 1.0).sum())
        low, high = wilson_interval(correct, len(scores))  # 95%: how far 32 questions pin the accuracy down
        # No val/reward_mean: a task's score is all or nothing (Task.score), so it was val/accuracy again.
        return {"val/accuracy": correct / len(scores), "val/accuracy_low": low, "val/accuracy_high": high,
                "val/response_length": float(pooled["lengths"].mean()),
                "val/boxed_frac": float(pooled["in_form"].mean()),
                "val/truncated_frac": float(pooled["truncated"].mean())}, len(scores)
