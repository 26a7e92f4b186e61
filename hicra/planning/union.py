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
        correctness: torch.Tensor | None = None,  # unused
    ) -> torch.Tensor:  # (B, T) bool
        valid = check_inputs(response_ids, response_mask)
        high = self.entropy.mask(response_ids, valid, entropies)  # raises first when entropies are missing
        return self.grams.mask(response_ids, valid) | high

    def __repr__(self) -> str:
        return f"UnionDetector({self.grams!r} | {self.entropy!r})"

