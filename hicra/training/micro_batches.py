"""A rollout batch in micro-batches of rows: what bounds the memory of a forward pass, whatever the batch size."""

from __future__ import annotations

import torch
from torch import Tensor

from hicra.rollout.hf import RolloutBatch, sequence_logprobs, trim_padding


def micro_batches(rollout: RolloutBatch, size: int, per_token: dict[str, Tensor]):
    """Yield (rows, end, micro, per_token cut to [rows, :end]): row slices of `size`, each trimmed to its own
    non-padding columns (fewer FLOPs on short micro-batches)."""
    B = rollout.response_ids.shape[0]
    for start in range(0, B, size):
        rows = slice(start, start + size)
        micro, end = trim_padding(rollout.rows(rows))
        yield rows, end, micro, {k: v[rows, :end] for k, v in per_token.items()}


@torch.no_grad()
def scoring_pass(model, rollout: RolloutBatch, size: int, temperature: float, with_entropy: bool,
                 device: torch.device) -> tuple[Tensor, Tensor | None]:
    """Log-probs (B,T) (and entropies (B,T)) of the sampled responses under `model`, with no graph; 0 on padding."""
    logprobs = torch.zeros(rollout.response_ids.shape, device=device)
    entropy = torch.zeros_like(logprobs) if with_entropy else None
    for rows, end, micro, _ in micro_batches(rollout, size, {}):
        lp, ent = sequence_logprobs(model, micro, with_entropy, temperature)
        logprobs[rows, :end] = lp
        if with_entropy:
            entropy[rows, :end] = ent
    return logprobs, entropy
