"""High-entropy ("80/20 forking tokens") detector: the baseline that marks the most uncertain tokens instead of grams.

Per response, the top ceil(rho * n_valid) valid tokens by entropy are marked; ties go to the earlier position; NaN
entropies rank last. The selection is `hicra.metrics.diagnostics.top_fraction_mask`, shared with the
planning / high-entropy overlap diagnostic.
"""

from __future__ import annotations

import math

import torch

from hicra.metrics.diagnostics import top_fraction_mask
from hicra.planning.base import check_inputs


class HighEntropyDetector:
    """Marks the top `rho` fraction (rounded up) of each response's valid tokens by entropy."""

    needs_entropy = True
    marks_planning = True

    def __init__(self, rho: float = 0.3, tokenizer=None):  # every detector takes the tokenizer; this one needs none
        if not (isinstance(rho, (int, float)) and 0.0 < rho <= 1.0 and math.isfinite(rho)):
            raise ValueError(f"planner.rho={rho!r} is invalid; allowed: a number in (0, 1]")
        self.rho = float(rho)

    def mask(
        self,
        response_ids: torch.Tensor,  # (B, T) long
        response_mask: torch.Tensor,  # (B, T) bool
        entropies: torch.Tensor | None = None,  # (B, T) float
        correctness: torch.Tensor | None = None,  # unused
    ) -> torch.Tensor:  # (B, T) bool
        valid = check_inputs(response_ids, response_mask)
        if entropies is None:
            raise ValueError("HighEntropyDetector needs per-token entropies; got entropies=None")
        if entropies.shape != response_ids.shape:
            raise ValueError(
                f"entropies shape {tuple(entropies.shape)} != response_ids shape {tuple(response_ids.shape)}"
            )
        marked = top_fraction_mask(entropies, valid, self.rho)  # (B, T); the rule shared with the diagnostics
        return marked.to(response_ids.device)

    def __repr__(self) -> str:
        return f"HighEntropyDetector(rho={self.rho})"
