"""The planning-detector seam: one boolean mask over response tokens, and the do-nothing detector."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class PlanningDetector(Protocol):
    """Marks the planning tokens of a batch of sampled responses.

    `needs_entropy`: the trainer must pass per-token entropies to `mask`.
    `marks_planning`: False only for detectors that can never mark anything (HICRA refuses to run with those,
    because HICRA with an all-False mask is silently plain GRPO).
    The trainer always passes `correctness` (the task's score per reply); detectors that do not gate on success
    accept and ignore it.
    """

    needs_entropy: bool
    marks_planning: bool

    def mask(
        self,
        response_ids: torch.Tensor,  # (B, T) long: sampled token ids, padded after the response
        response_mask: torch.Tensor,  # (B, T) bool: True on the tokens the policy generated (incl. the first EOS)
        entropies: torch.Tensor | None = None,  # (B, T) float: H(pi(.|x<t)), only for needs_entropy detectors
        correctness: torch.Tensor | None = None,  # (B,) float: the task's score per reply (>= 1 = correct)
    ) -> torch.Tensor:  # (B, T) bool: True = planning token; always False where response_mask is False
        ...


def check_inputs(response_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Validate shapes and return `response_mask` as bool (an int 0/1 mask would index, not mask: pitfall 11)."""
    if response_ids.dim() != 2:
        raise ValueError(f"response_ids must be (B, T), got shape {tuple(response_ids.shape)}")
    if response_mask.shape != response_ids.shape:
        raise ValueError(
            f"response_mask shape {tuple(response_mask.shape)} != response_ids shape {tuple(response_ids.shape)}"
        )
    return response_mask if response_mask.dtype == torch.bool else response_mask != 0


class NullDetector:
    """Marks nothing: every token is an execution token. For GRPO runs; HICRA refuses it (`marks_planning`)."""

    needs_entropy = False
    marks_planning = False

    def __init__(self, tokenizer=None):  # every detector takes the tokenizer; this one needs none
        pass

    def mask(
        self,
        response_ids: torch.Tensor,
        response_mask: torch.Tensor,
        entropies: torch.Tensor | None = None,
        correctness: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_inputs(response_ids, response_mask)
        return torch.zeros(response_ids.shape, dtype=torch.bool, device=response_ids.device)

    def __repr__(self) -> str:
        return "NullDetector()"
