"""The authors'-code rule (per TRL pull request 4997's port of the authors' VeRL code; unverified, not the paper).

Two lenses, gated differently:
* Strategic-Gram tokens are planning tokens in EVERY reply (as in the paper);
* the top-rho entropy tokens (rho = 0.3 there) are added only in replies that are CORRECT and LONGER than their
  group's mean length (groups are consecutive rows of `group_size`).

The transform is the paper's (`hicra_token_advantages`, A + alpha*|A|), so marked tokens of a failed reply are damped
too. "Correct" is the task's verdict (`correctness >= 1`), not A > 0: the port tests A > 0, which with shaped rewards
(format bonus, overlong penalty) can call a wrong but well-formatted reply correct.
"""

from __future__ import annotations

import torch

from hicra.planning.base import check_inputs
from hicra.planning.high_entropy import HighEntropyDetector
from hicra.planning.strategic_grams import StrategicGramDetector


class AuthorsRuleDetector:
    """`grams` OR (`top-rho entropy` AND correct AND longer than the group mean); needs entropies and correctness."""

    needs_entropy = True
    marks_planning = True

    def __init__(self, tokenizer=None, grams_path: str | None = None, rho: float = 0.3,
                 grams: list[str] | None = None, group_size: int = 8):
        if not (isinstance(group_size, int) and not isinstance(group_size, bool) and group_size >= 1):
            raise ValueError(f"planner.group_size={group_size!r} is invalid; allowed: an integer >= 1")
        self.grams = StrategicGramDetector(tokenizer, grams=grams, grams_path=grams_path)
        self.entropy = HighEntropyDetector(rho=rho)
        self.group_size = group_size

    def mask(
        self,
        response_ids: torch.Tensor,  # (B, T) long
        response_mask: torch.Tensor,  # (B, T) bool
        entropies: torch.Tensor | None = None,  # (B, T) float, required
        correctness: torch.Tensor | None = None,  # (B,) float: the task's score, >= 1 = correct; required
    ) -> torch.Tensor:  # (B, T) bool
        valid = check_inputs(response_ids, response_mask)
        batch = response_ids.shape[0]
        if correctness is None:
            raise ValueError("AuthorsRuleDetector needs the replies' correctness (B,); got correctness=None")
        if correctness.shape != (batch,):
            raise ValueError(f"correctness shape {tuple(correctness.shape)} != ({batch},): one score per reply")
        if batch % self.group_size:
            raise ValueError(f"{batch} responses do not split into groups of {self.group_size}")
        high = self.entropy.mask(response_ids, valid, entropies)  # (B,T); raises first when entropies are missing
        lengths = valid.sum(dim=1).float().view(-1, self.group_size)  # (P,G)
        longer = (lengths > lengths.mean(dim=1, keepdim=True)).view(-1)  # (B,) strictly longer than the group mean
        correct = correctness.detach().to(longer.device) >= 1.0  # (B,)
        extra = high & (correct & longer)[:, None]  # (B,T) entropy tokens only where the reply earned them
        return self.grams.mask(response_ids, valid) | extra.to(response_ids.device)

    def __repr__(self) -> str:
        return (f"AuthorsRuleDetector({self.grams!r} | {self.entropy!r} in correct replies longer than the "
                f"group mean)")
