"""Union detector: a token is a planning token if it is in a Strategic Gram occurrence OR among the top-rho entropy
tokens of its response (the two lenses of the paper's S4 overlap analysis, combined into one mask)."""

from __future__ import annotations

import torch

from hicra.planning.base import check_inputs
from hicra.planning.high_entropy import HighEntropyDetector
from hicra.planning.strategic_grams import StrategicGramDetector


class UnionDetector:
    """`StrategicGramDetector(grams / grams_path)` OR `HighEntropyDetector(rho)`; needs the per-token entropies."""

    needs_entropy = True
    marks_planning = True

    def __init__(self, tokenizer=None, grams_path: str | None = None, rho: float = 0.2,
                 grams: list[str] | None = None):
        self.grams = StrategicGramDetector(tokenizer, grams=grams, grams_path=grams_path)
        self.entropy = HighEntropyDetector(rho=rho)

    def mask(
        self,
        response_ids: torch.Tensor,  # (B, T) long
        response_mask: torch.Tensor,  # (B, T) bool
        entropies: torch.Tensor | None = None,  # (B, T) float, required
    ) -> torch.Tensor:  # (B, T) bool
        valid = check_inputs(response_ids, response_mask)
        high = self.entropy.mask(response_ids, valid, entropies)  # raises first when entropies are missing
        return self.grams.mask(response_ids, valid) | high

    def __repr__(self) -> str:
        return f"UnionDetector({self.grams!r} | {self.entropy!r})"


class LongResponseUnionDetector(UnionDetector):
    """NOT the paper's planning tokens: the mask of the rule a public port (TRL pull request 4997) attributes to the
    authors' released code. Strategic-Gram tokens OR the top-rho entropy tokens (rho = 0.3), kept only in responses
    longer than their group's mean length (groups are consecutive rows of `group_size`)."""

    def __init__(self, tokenizer=None, grams_path: str | None = None, rho: float = 0.3,
                 grams: list[str] | None = None, group_size: int = 8):
        super().__init__(tokenizer, grams_path=grams_path, rho=rho, grams=grams)
        if not (isinstance(group_size, int) and group_size >= 1):
            raise ValueError(f"planner.group_size={group_size!r} is invalid; allowed: an integer >= 1")
        self.group_size = group_size

    def mask(self, response_ids: torch.Tensor, response_mask: torch.Tensor,
             entropies: torch.Tensor | None = None) -> torch.Tensor:  # (B, T) bool
        marks = super().mask(response_ids, response_mask, entropies)  # (B,T)
        lengths = response_mask.bool().sum(dim=1).float()  # (B,)
        if lengths.shape[0] % self.group_size:
            raise ValueError(f"{lengths.shape[0]} responses do not split into groups of {self.group_size}")
        grouped = lengths.view(-1, self.group_size)  # (P,G)
        longer = (grouped > grouped.mean(dim=1, keepdim=True)).view(-1)  # (B,) strictly longer than the group mean
        return marks & longer[:, None]

    def __repr__(self) -> str:
        return f"LongResponseUnionDetector({self.grams!r} | {self.entropy!r}, longer than the group mean)"
