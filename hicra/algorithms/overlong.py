"""DAPO's overlong reward shaping: a soft length penalty over a buffer just before the token budget.

DAPO (Yu et al. 2025, arXiv:2503.14476, section 3.4 "Overlong Reward Shaping", Eq. 13), with L_max the token
budget (rollout.max_new_tokens) and L_cache the buffer:

    R_length(y) = 0                                   if |y| <= L_max - L_cache
                = ((L_max - L_cache) - |y|) / L_cache if L_max - L_cache < |y| <= L_max
                = -1                                  if L_max < |y|

added to the task reward. A reply cut at the budget has |y| = L_max and gets -1 from the middle line already, so the
penalty reaches the truncated replies the `exclude_truncated` filter drops and, softly, the ones that almost were.
"""

import torch
from torch import Tensor


def overlong_penalty(lengths: Tensor, *, max_length: int, buffer: int, factor: float = 1.0) -> Tensor:
    """factor x R_length(|y|) per response: lengths (B,) int or float -> penalties (B,) float in [-factor, 0].

    buffer = L_cache (0 turns the shaping off: all zeros), max_length = L_max; factor scales the penalty (DAPO: 1).
    """
    if buffer < 0 or buffer > max_length:
        raise ValueError(f"overlong buffer={buffer} is invalid; allowed: an int in [0, max_length={max_length}]")
    if factor < 0:
        raise ValueError(f"overlong penalty factor={factor} is invalid; allowed: >= 0")
    lengths = lengths.float()
    if buffer == 0:
        return torch.zeros_like(lengths)
    start = max_length - buffer  # last length with no penalty
    linear = (start - lengths) / buffer  # (B,) negative inside the buffer
    penalty = torch.where(lengths <= start, torch.zeros_like(lengths), linear)
    penalty = torch.where(lengths > max_length, torch.full_like(lengths, -1.0), penalty)
    return factor * penalty
