"""High-entropy ("80/20 forking tokens") detector: the baseline that marks the most uncertain tokens instead of grams.

Per response, the top ceil(rho * n_valid) valid tokens by entropy are marked; ties go to the earlier position.
"""

from __future__ import annotations

import math

import torch

from hicra.planning.base import check_inputs

_EPS = 1e-9  # ceil(0.3 * 10) must be 3, not 4 (0.3 * 10 = 3.0000000000000004 in floating point)


class HighEntropyDetector:
    """Marks the top `rho` fraction (rounded up) of each response's valid tokens by entropy."""

    needs_entropy = True
    marks_planning = True

    def __init__(self, rho: float = 0.2, tokenizer=None):  # every detector takes the tokenizer; this one needs none
        if not (isinstance(rho, (int, float)) and 0.0 < rho <= 1.0 and math.isfinite(rho)):
            raise ValueError(f"planner.rho={rho!r} is invalid; allowed: a number in (0, 1]")
        self.rho = float(rho)

    def mask(
        self,
        response_ids: torch.Tensor,  # (B, T) long
        response_mask: torch.Tensor,  # (B, T) bool
        entropies: torch.Tensor | None = None,  # (B, T) float
    ) -> torch.Tensor:  # (B, T) bool
        valid = check_inputs(response_ids, response_mask)
        if entropies is None:
            raise ValueError("HighEntropyDetector needs per-token entropies; got entropies=None")
        if entropies.shape != response_ids.shape:
            raise ValueError(
                f"entropies shape {tuple(entropies.shape)} != response_ids shape {tuple(response_ids.shape)}"
            )
        valid = valid.to(entropies.device)
        scores = entropies.detach().float().nan_to_num(nan=-math.inf)
        scores = scores.masked_fill(~valid, -math.inf)  # (B, T)
        n_valid = valid.sum(dim=1)  # (B,)
        k = torch.ceil(n_valid.double() * self.rho - _EPS).clamp(min=0).long()  # (B,)
        k = torch.minimum(k, n_valid)
        # stable descending sort: equal entropies keep position order, so the earlier token wins a tie
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices  # (B, T)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
        marked = (rank < k[:, None]) & valid  # invalid tokens sort last (-inf) and k <= n_valid
        return marked.to(response_ids.device)

    def __repr__(self) -> str:
        return f"HighEntropyDetector(rho={self.rho})"
