"""Each prompt computed once per group, not G times: the G responses of a group share their prompt, and under causal
attention the prompt's keys and values are the same in all G rows.

Log-probs (update, old log-probs, reference): pass 1 runs the U distinct prompts of a micro-batch (U = B / G when it
holds whole groups) and records every layer's keys and values; pass 2 runs only the B responses, each attending to
its prompt's recorded keys/values and causally to itself. Gradients reach the prompt through the recorded tensors
(non-reentrant gradient checkpointing recomputes a layer on the original graph, so this holds with it on).
Rollouts: the prompts, all but their last token, prefill a KV cache once, repeated G times for the decoding loop.

Exact, not an approximation: the same attention over the same keys (tests/models/test_prefix_sharing.py compares log-probs,
gradients and samples with the one-pass path). What it saves is (G-1)/G of the prompt's FLOPs: on the cpu benchmark
preset (64-token prompts, 128-token responses, G = 8) 29% of the update's linear-layer work.

Mechanism: a registered attention function (transformers' AttentionInterface) that is plain SDPA unless the forward
call carries `shared_prefix=` (model kwargs reach the attention function). `model.share_prompt_prefix` switches it.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from hicra.models.cache_compat import output_cache

log = logging.getLogger(__name__)

ATTENTION = "hicra_shared_prefix_sdpa"


# Plain classes, not dataclasses or dicts: FSDP2 rebuilds those when it casts a forward call's inputs, and the
# attention function would then record into a copy.
class _Record:
    """Pass 1: each layer's keys and values, (U, kv_heads, Lp, head_dim), after the rotary embedding."""

    def __init__(self):
        self.keys_values: dict[int, tuple[Tensor, Tensor]] = {}


class _Attend:
    """Pass 2: attend to row r's prompt, `keys_values[layer][row_to_prompt[r]]`, then causally to the response."""

    def __init__(self, keys_values: dict[int, tuple[Tensor, Tensor]], row_to_prompt: Tensor, mask: Tensor):
        self.keys_values = keys_values
        self.row_to_prompt = row_to_prompt  # (B,) long
        self.mask = mask  # (B, 1, T, Lp + T) bool, True = may attend


def _attention(module, query, key, value, attention_mask, shared_prefix=None, **kwargs):
    """Every attention call of an enabled model, decoding included: plain SDPA unless `shared_prefix` is given."""
    if isinstance(shared_prefix, _Record):
        # A gradient-checkpointing replay overwrites this entry; pass 2 already holds the original tensors.
        shared_prefix.keys_values[module.layer_idx] = (key, value)
    elif isinstance(shared_prefix, _Attend):
        prefix_key, prefix_value = shared_prefix.keys_values[module.layer_idx]
        key = torch.cat([prefix_key.index_select(0, shared_prefix.row_to_prompt), key], dim=2)  # (B, kv, Lp+T, d)
        value = torch.cat([prefix_value.index_select(0, shared_prefix.row_to_prompt), value], dim=2)
        attention_mask = shared_prefix.mask
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _mask(*args, **kwargs):
    """transformers' `sdpa_mask` (the usual padding/causal masks outside the two passes), without its causal-skip
    check for a one-token query off the CPU: that check reads the padding mask back to the host (`fast_all`), a sync
    per decoded token on a GPU, to save a mask that costs nothing for one query. The CPU keeps the check (no sync
    there, and its samples stay bit-identical)."""
    from transformers.masking_utils import sdpa_mask

    mask = kwargs.get("attention_mask")
    if kwargs.get("q_length") == 1 and mask is not None and mask.device.type != "cpu":
        kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(*args, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION, _attention)
    AttentionMaskInterface.register(ATTENTION, _mask)


def unsupported_reason(model) -> str | None:
    """Why prompt sharing cannot be exact for this model, or None. The pass-2 mask is plain causal + prompt padding."""
    config = getattr(model, "config", None)
    if config is None:
        return "the model has no transformers config"
    if config._attn_implementation not in ("sdpa", ATTENTION):
        return f"attn_implementation={config._attn_implementation} (prompt sharing builds on sdpa)"
    layer_types = getattr(config, "layer_types", None) or []
    if any("sliding" in str(t) for t in layer_types) or (
            getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)):
        return "sliding-window attention"
    if not all(hasattr(m, "layer_idx") for m in model.modules() if type(m).__name__.endswith("Attention")):
        return "its attention modules carry no layer_idx"
    return None


def enable(model) -> bool:
    """Switch `model` to the prompt-sharing attention; False (and a log line) where that would not be exact."""
    reason = unsupported_reason(model)
    if reason is not None:
        log.info("model.share_prompt_prefix: off for this model (%s); every row computes its prompt", reason)
        return False
    _register()
    model.config._attn_implementation = ATTENTION
    return True


def is_enabled(model) -> bool:
    return getattr(getattr(model, "config", None), "_attn_implementation", None) == ATTENTION


def distinct_prompts(prompt_ids: Tensor, prompt_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Rows are grouped prompt by prompt: a new prompt starts where a row differs from the one before.

    prompt_ids, prompt_mask (B, Lp) -> first row of each distinct prompt (U,) and row -> prompt index (B,).
    """
    same_as_previous = (prompt_ids[1:] == prompt_ids[:-1]).all(1) & (prompt_mask[1:] == prompt_mask[:-1]).all(1)
    starts = torch.cat([same_as_previous.new_ones(1), ~same_as_previous])  # (B,) bool
    return starts.nonzero().squeeze(1), starts.long().cumsum(0) - 1


def positions(mask: Tensor) -> Tensor:
    """Position ids that skip left padding, as `generate` counts them: (B, L) mask -> (B, L) long."""
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


def shared_prompt_logits(model, prompt_ids: Tensor, prompt_mask: Tensor,
                         response_ids: Tensor) -> tuple[Tensor, Tensor] | None:
    """Logits predicting each response token, with each distinct prompt run once, in two pieces: (B, 1, V) for
    response token 0 (from the prompt's last position) and (B, T-1, V) for tokens 1..T-1. Two pieces rather than one
    (B, T, V) tensor: joining them would copy the largest tensor of the update. None when no two rows share a prompt
    (nothing to save: the caller runs its one-pass forward).

    prompt_ids, prompt_mask (B, Lp) left-padded; response_ids (B, T).
    """
    firsts, row_to_prompt = distinct_prompts(prompt_ids, prompt_mask)
    if len(firsts) == len(row_to_prompt):
        return None
    prompts, mask = prompt_ids[firsts], prompt_mask[firsts]  # (U, Lp)
    record = _Record()
    # The last prompt position predicts response token 0: pass 1 keeps only its logits.
    first_logits = model(input_ids=prompts, attention_mask=mask.long(), position_ids=positions(mask),
                         use_cache=False, logits_to_keep=1, shared_prefix=record).logits  # (U, 1, V)
    B, T = response_ids.shape
    prompt_lengths = mask.long().sum(1).index_select(0, row_to_prompt)  # (B,)
    response_positions = prompt_lengths[:, None] + torch.arange(T, device=response_ids.device)  # (B, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=response_ids.device).tril()  # (T, T)
    attend = torch.cat([mask.bool().index_select(0, row_to_prompt)[:, None, :].expand(B, T, -1),
                        causal.expand(B, T, T)], dim=2)[:, None]  # (B, 1, T, Lp + T)
    # The last response token predicts nothing: logits at positions 0..T-2 only.
    logits = model(input_ids=response_ids, position_ids=response_positions, use_cache=False,
                   logits_to_keep=torch.arange(T - 1, device=response_ids.device),
                   shared_prefix=_Attend(record.keys_values, row_to_prompt, attend)).logits  # (B, T-1, V)
    return first_logits.index_select(0, row_to_prompt), logits


def prefilled_cache(model, prompt_ids: Tensor, prompt_mask: Tensor, group_size: int):
    """A KV cache of each distinct prompt but its last token, run once and repeated `group_size` times, for the
    decoding loop (hicra/rollout/decode.py), which feeds the last token itself and samples the first response token.

    prompt_ids, prompt_mask (U, Lp) left-padded, Lp >= 2 -> transformers cache of U x group_size rows, Lp - 1 tokens.
    """
    ids, mask = prompt_ids[:, :-1], prompt_mask[:, :-1]  # (U, Lp-1)
    cache = output_cache(model(input_ids=ids, attention_mask=mask.long(), position_ids=positions(mask), use_cache=True,
                               logits_to_keep=1))
    cache.batch_repeat_interleave(group_size)  # rows grouped like repeat_interleave(prompt_ids, G)
    return cache
