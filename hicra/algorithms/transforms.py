"""Token-level advantage transforms: sequence advantages (B,) -> token advantages (B,T).

Both transforms share the call signature `fn(advantages, planning_mask)` (HICRA's alpha is bound with
functools.partial / Hydra `_partial_: true`), so the trainer never needs to know which one it holds.
Outputs are fresh, detached tensors: advantages are constants of the policy-gradient loss.
"""

import torch
from torch import Tensor


def _broadcast(advantages: Tensor, planning_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Validate shapes; return (token advantages (B,T) detached, planning mask (B,T) bool)."""
    if planning_mask.dim() != 2:
        raise ValueError(f"planning_mask must be (B,T), got shape {tuple(planning_mask.shape)}")
    # .bool() first: an int {0,1} mask used directly in indexing or where() would be read as indices / values
    mask = planning_mask.bool()  # (B,T)
    advantages = advantages.detach()
    if advantages.dim() == 1 and advantages.shape[0] == mask.shape[0]:
        advantages = advantages.unsqueeze(1).expand(mask.shape)  # (B,) -> (B,T) view
    elif advantages.shape != mask.shape:
        raise ValueError(
            f"advantages must be (B,) or (B,T) matching planning_mask {tuple(mask.shape)}, "
            f"got {tuple(advantages.shape)}"
        )
    return advantages, mask


def identity_token_advantages(advantages: Tensor, planning_mask: Tensor) -> Tensor:
    """GRPO: A[i,t] = A_i on every token. advantages (B,) or (B,T), planning_mask (B,T) (unused but for T) -> (B,T)."""
    token_advantages, _ = _broadcast(advantages, planning_mask)
    # clone: never hand back a view of the caller's tensor (in-place edits downstream must not alias it)
    return token_advantages.clone(memory_format=torch.contiguous_format)  # (B,T)


def hicra_token_advantages(advantages: Tensor, planning_mask: Tensor, alpha: float) -> Tensor:
    """HICRA (paper section 2): amplify credit on planning tokens, sign-aware.

        A_hicra[i,t] = A_i + alpha * |A_i|   if planning_mask[i,t]
                     = A_i                   otherwise

    With alpha = 0.2 planning tokens get x1.2 the advantage when A_i > 0 and x0.8 when A_i < 0; for alpha in [0,1)
    the sign never flips, A_i = 0 stays 0, and alpha = 0 is exactly GRPO (A + 0*|A| == A bit for bit).
    advantages (B,) or (B,T), planning_mask (B,T) bool or {0,1} -> (B,T) new detached tensor.
    """
    if not 0.0 <= alpha < 1.0:  # also rejects NaN
        raise ValueError(f"alpha must be in [0, 1) (alpha >= 1 zeroes or flips negative advantages), got {alpha}")
    token_advantages, mask = _broadcast(advantages, planning_mask)
    return torch.where(mask, token_advantages + alpha * token_advantages.abs(), token_advantages)  # (B,T)


def drop_truncated(response_mask: Tensor, truncated: Tensor) -> Tensor:
    """DAPO's overlong filtering: responses cut at the length limit contribute no token to the loss.

    Their reward still enters the group baseline (advantages are computed before this mask is applied); only
    their own gradient is dropped, because a cut response is judged on an answer it never had room to give.
    response_mask (B,T), truncated (B,) bool -> loss mask (B,T) bool.
    """
    return response_mask.bool() & ~truncated.bool().unsqueeze(1)
