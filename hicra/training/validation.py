"""Held-out greedy evaluation during training: each rank scores its share of the prompts, the metrics pool them."""

from __future__ import annotations

import torch

from hicra.training.distributed import gather_objects


class ValidationTally:
    """Rewards and response lengths of one validation epoch, pooled over ranks into val/* at its end."""

    def __init__(self):
        self.scores: list[float] = []
        self.lengths: list[float] = []

    def add(self, scores: list[float], lengths: list[float]) -> None:
        self.scores += scores
        self.lengths += lengths

    def pooled_metrics(self, trainer) -> tuple[dict[str, float], int] | None:
        """(val/*, number of prompts) over every rank's prompts, None when there were none; starts the next tally."""
        shares = gather_objects((self.scores, self.lengths), trainer)  # in rank order
        scores = [x for share, _ in shares for x in share]
        lengths = [x for _, share in shares for x in share]
        self.scores, self.lengths = [], []
        if not scores:
            return None
        tensor = torch.tensor(scores)
        return {"val/accuracy": float((tensor >= 1.0).float().mean()), "val/reward_mean": float(tensor.mean()),
                "val/response_length": sum(lengths) / len(lengths)}, len(scores)
