"""Masked reductions and memory-bounded log-prob / entropy from logits.

Shapes: B = completions (prompts x G), T = response length, V = vocabulary size.
Every mask is bool or {0,1} and has the shape of the tensor it masks.
"""

from typing import Optional, Union

import torch
from torch import Tensor

Dim = Optional[Union[int, tuple[int, ...]]]

# Rows (= token positions) per chunk: 1024 rows x 152k vocab x 4 bytes ~ 0.6 GB of fp32 temporaries at most.
DEFAULT_CHUNK_SIZE = 1024


def masked_sum(x: Tensor, mask: Tensor, dim: Dim = None) -> Tensor:
    """sum(x[mask]) over `dim` (all dims when None).

    torch.where rather than x * mask: a NaN or inf at a padded position would survive a multiplication (NaN * 0 = NaN).
    """
    zeroed = torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return zeroed.sum() if dim is None else zeroed.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: Dim = None) -> Tensor:
    """sum(x[mask]) / count(mask) over `dim`; an empty mask gives 0, never NaN (count is clamped to >= 1)."""
    mask = mask.bool().expand_as(x)
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1)


def _row_chunks(logits: Tensor, chunk_size: int) -> tuple[Tensor, ...]:
    """Flatten (B,T,V) -> (B*T,V) and split it into chunks of at most `chunk_size` rows (views, no copy)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B,T,V), got shape {tuple(logits.shape)}")
    return logits.reshape(-1, logits.shape[-1]).split(chunk_size)  # each (<=chunk_size, V)


def logprobs_from_logits(logits: Tensor, targets: Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE,
                         temperature: float = 1.0) -> Tensor:
    """log p(target) = z[target] - logsumexp(z) with z = logits / temperature, per position, in fp32.

    logits (B,T,V), targets (B,T) int -> (B,T) float32. Differentiable w.r.t. logits.
    A full log_softmax (or a full logits / temperature) would allocate another (B,T,V) tensor (in fp32: 4 bytes x B
    x T x V); processing `chunk_size` rows at a time keeps the temporaries at (chunk_size, V).
    """
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets shape {tuple(targets.shape)} != logits.shape[:-1] {tuple(logits.shape[:-1])}")
    flat_targets = targets.reshape(-1, 1).split(chunk_size)  # each (<=chunk_size, 1)
    out = []
    for rows, tgt in zip(_row_chunks(logits, chunk_size), flat_targets):
        rows = _scaled(rows, temperature)  # (n, V); fp32 because bf16 logsumexp loses ~2 significant digits
        picked = rows.gather(-1, tgt).squeeze(-1)  # (n,)
        out.append(picked - torch.logsumexp(rows, dim=-1))  # (n,)
    return torch.cat(out).view(targets.shape)  # (B,T)


def _scaled(rows: Tensor, temperature: float) -> Tensor:
    rows = rows.float()  # no copy when already fp32
    return rows / temperature if temperature != 1.0 else rows


def entropy_from_logits(logits: Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE, temperature: float = 1.0) -> Tensor:
    """Shannon entropy (nats) of softmax(logits / temperature) per position, in fp32.

    H = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v, with p = softmax(z).
    logits (B,T,V) -> (B,T) float32. Differentiable; chunked over rows like `logprobs_from_logits`.
    Note: this is the entropy of the whole next-token distribution, not the surprisal -log p(sampled token).
    """
    out = []
    for rows in _row_chunks(logits, chunk_size):
        # fp32; -inf logits (banned tokens) become the most negative float so that p*z is 0*(-big) = 0, not NaN
        rows = _scaled(rows, temperature).clamp(min=torch.finfo(torch.float32).min)  # (n, V)
        lse = torch.logsumexp(rows, dim=-1)  # (n,)
        probs = torch.exp(rows - lse.unsqueeze(-1))  # (n, V)
        out.append(lse - (probs * rows).sum(-1))  # (n,)
    return torch.cat(out).view(logits.shape[:-1])  # (B,T)
