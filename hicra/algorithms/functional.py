"""Masked reductions and memory-bounded log-prob / entropy from logits.

Shapes: B = completions (prompts x G), T = response length, V = vocabulary size.
Every mask is bool or {0,1} and has the shape of the tensor it masks.
"""

import torch
from torch import Tensor

Dim = int | tuple[int, ...] | None

# Rows (= token positions) per block of the log-prob / entropy pass. CPU: 32 rows x 49k vocab x 4 bytes = 6 MB per
# temporary, which stays in cache and is reused from the heap (1,024-row blocks measured 1-1.5 s slower per update on
# the cpu benchmark preset). Elsewhere 1,024: a GPU pays per kernel launch, not per fresh page.
CPU_CHUNK_SIZE, DEFAULT_CHUNK_SIZE = 32, 1024


def _chunk_size(logits: Tensor, chunk_size: int | None) -> int:
    if chunk_size is None:
        return CPU_CHUNK_SIZE if logits.device.type == "cpu" else DEFAULT_CHUNK_SIZE
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return chunk_size


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


def logprobs_from_logits(logits: Tensor, targets: Tensor, chunk_size: int | None = None,
                         temperature: float = 1.0) -> Tensor:
    """log p(target) = z[target] - logsumexp(z) with z = logits / temperature, per position, in fp32.

    logits (B,T,V), targets (B,T) int -> (B,T) float32. Differentiable w.r.t. logits.
    """
    return logprobs_and_entropy(logits, targets, temperature, with_entropy=False, chunk_size=chunk_size)[0]


def entropy_from_logits(logits: Tensor, chunk_size: int | None = None, temperature: float = 1.0) -> Tensor:
    """Shannon entropy (nats) of softmax(logits / temperature) per position, in fp32.

    H = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v, with p = softmax(z).
    logits (B,T,V) -> (B,T) float32. Differentiable w.r.t. logits.
    Note: this is the entropy of the whole next-token distribution, not the surprisal -log p(sampled token).
    """
    targets = torch.zeros(logits.shape[:-1], dtype=torch.long, device=logits.device)  # any token: only H is kept
    return logprobs_and_entropy(logits, targets, temperature, with_entropy=True, chunk_size=chunk_size)[1]


def logprobs_and_entropy(logits: Tensor, targets: Tensor, temperature: float = 1.0, with_entropy: bool = True,
                         entropy_grad: bool = True, chunk_size: int | None = None) -> tuple[Tensor, Tensor | None]:
    """log p(target) and (optionally) the entropy H of p = softmax(logits / temperature) at every position, in fp32,
    in one pass over blocks of `chunk_size` rows (None: 32 on CPU, 1,024 elsewhere). log p is differentiable w.r.t.
    logits, H too unless `entropy_grad=False` (then the backward skips its term: only entropy-regularised losses
    need it).

    logits (B,T,V) any float dtype, targets (B,T) int -> logprobs (B,T) float32, entropy (B,T) float32 or None.
    Autograd's log_softmax-and-gather would keep and rebuild several (B*T, V) tensors (the logsumexp backward's
    exp and subtraction, the gather backward's zeros, their sum); here every temporary is (chunk_size, V), small
    enough to stay in cache and be reused from the heap, and the backward allocates only the gradient it returns.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B,T,V), got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets shape {tuple(targets.shape)} != logits.shape[:-1] {tuple(logits.shape[:-1])}")
    chunk_size = _chunk_size(logits, chunk_size)
    flat = logits.reshape(-1, logits.shape[-1])  # (N,V) a view when contiguous
    logprobs, entropy = _LogprobsAndEntropy.apply(flat, targets.reshape(-1), float(temperature), with_entropy,
                                                  with_entropy and entropy_grad, chunk_size)  # (N,) each
    return logprobs.view(targets.shape), entropy.view(targets.shape) if with_entropy else None


# A floor for log p: exp() of anything below ~-104 is 0 in fp32, so this changes no value, and unlike -inf (a banned
# token) it keeps p * log p and h * (log p + H) finite (0 once multiplied by p = 0).
_LOG_P_FLOOR = -1e4


class _LogprobsAndEntropy(torch.autograd.Function):
    """(N,V) logits -> log p(target) (N,) and H (N,), p = softmax(logits / T), block by block.

    Gradients, with z = logits / T, log p = z - lse(z), and g, h the incoming gradients of log p(target) and H:
        d log p(t) / d z = onehot(t) - p,        dH / d z = -p * (log p + H),
    each divided by T for the logits. -inf logits (banned tokens) have p = 0 and contribute 0, never NaN.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, temperature: float, with_entropy: bool, entropy_grad: bool,
                block: int):
        n = logits.shape[0]
        logprobs = torch.empty(n, dtype=torch.float32, device=logits.device)  # (N,)
        lse = torch.empty_like(logprobs)  # (N,)
        entropy = torch.empty_like(logprobs) if with_entropy else logprobs.new_empty(0)
        for lo in range(0, n, block):
            z = _scaled(logits[lo:lo + block], temperature)  # (n_b, V) fp32
            lse[lo:lo + block] = torch.logsumexp(z, dim=-1)
            logprobs[lo:lo + block] = z.gather(-1, targets[lo:lo + block, None]).squeeze(-1) - lse[lo:lo + block]
            if with_entropy:
                log_p = _log_softmax_block(z, lse[lo:lo + block])  # (n_b, V), banned tokens at the floor
                entropy[lo:lo + block] = -torch.linalg.vecdot(log_p.exp(), log_p)  # -sum p log p
        ctx.save_for_backward(logits, targets, lse, entropy)
        ctx.temperature, ctx.entropy_grad, ctx.block = temperature, entropy_grad, block
        if not entropy_grad:
            ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs: Tensor, grad_entropy: Tensor):
        logits, targets, lse, entropy = ctx.saved_tensors
        temperature, block = ctx.temperature, ctx.block
        grad = torch.empty_like(logits)  # (N,V) the only full-size allocation
        g = grad_logprobs.float() / temperature  # (N,)
        h = grad_entropy.float() / temperature if ctx.entropy_grad else None  # (N,)
        for lo in range(0, logits.shape[0], block):
            z = _scaled(logits[lo:lo + block], temperature)  # (n_b, V)
            log_p = _log_softmax_block(z, lse[lo:lo + block])  # (n_b, V)
            if h is None:
                d = log_p.exp_().mul_(-g[lo:lo + block, None])  # -g * p
            else:  # -g * p - h * p * (log p + H)  =  -p * (g + h * (log p + H))
                p = log_p.exp()
                d = log_p.add_(entropy[lo:lo + block, None]).mul_(h[lo:lo + block, None])
                d = d.add_(g[lo:lo + block, None]).mul_(p).neg_()
            d.scatter_add_(-1, targets[lo:lo + block, None], g[lo:lo + block, None])  # + g * onehot(t)
            grad[lo:lo + block] = d
        return grad, None, None, None, None, None


def _log_softmax_block(z: Tensor, lse: Tensor) -> Tensor:
    """log p = z - lse per row (n_b, V), a fresh tensor, floored at _LOG_P_FLOOR."""
    return (z - lse[:, None]).clamp_(min=_LOG_P_FLOOR)


def _scaled(rows: Tensor, temperature: float) -> Tensor:
    rows = rows.float()  # no copy when already fp32
    return rows / temperature if temperature != 1.0 else rows
