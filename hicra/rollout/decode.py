"""Autoregressive sampling as a plain loop over the model's forward pass, dropping rows as they finish.

Why not `model.generate`: it runs every row to the longest one, so a batch whose replies end after 10-60 tokens pays
for all rows at every position up to the slowest row's length. Here a row that emits EOS leaves the batch (its cache rows
are dropped with it), so the cost follows the tokens actually generated. On the 2-core VM (SmolLM2-135M, fp32) a
decoding step costs ~30 ms plus ~5 ms per row, so short, uneven replies -- what RL on small models produces -- decode
several times faster (README, "Speed").

Same sampling rule as `generate` with do_sample: logits / temperature, then top-k, then top-p (nucleus), then a
multinomial draw; greedy takes the argmax. EOS is forbidden before `min_new_tokens`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import DynamicCache

from hicra.models import prefix_sharing


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Keep the `top_k` largest logits (0 = all) and the smallest set whose probability reaches `top_p`; the rest -inf.

    logits (b, V) float -> (b, V). The most likely token always survives, so every row can still be sampled.
    """
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (b, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (b, V)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # (b, V) probability of the tokens ranked above
        drop_sorted = mass_before >= top_p  # the first token has mass_before 0 and is always kept
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_tokens(logits: Tensor, greedy: bool, temperature: float, top_k: int, top_p: float) -> Tensor:
    """One token per row from last-position logits (b, V) -> (b,) long."""
    if greedy:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits / temperature, top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probs, 1).squeeze(1)


@torch.no_grad()
def decode(model, prompt_ids: Tensor, prompt_mask: Tensor, group_size: int, max_new_tokens: int, eos_ids: list[int],
           pad_id: int, greedy: bool = False, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           min_new_tokens: int = 0) -> Tensor:
    """Sample `group_size` replies to each distinct prompt; response ids (B, T) with B = U x G rows grouped prompt
    by prompt and T the longest reply, `pad_id` after each row's first EOS.

    prompt_ids, prompt_mask (U, Lp) left-padded. Every prompt but its last token prefills the cache once per distinct
    prompt (repeated G times); the loop then feeds one token per live row.
    """
    device = prompt_ids.device
    if prompt_ids.shape[1] > 1:
        cache = prefix_sharing.prefilled_cache(model, prompt_ids, prompt_mask, group_size)
    else:
        cache = DynamicCache(config=model.config)  # a one-token prompt: nothing to prefill
    mask = prompt_mask.long().repeat_interleave(group_size, dim=0)  # (B, Lp), grows by one column per token
    position = prefix_sharing.positions(mask)[:, -1:]  # (B, 1) position of the token fed next
    feed = prompt_ids[:, -1:].repeat_interleave(group_size, dim=0)  # (B, 1) the prompts' last tokens
    B = feed.shape[0]
    out = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)  # (B, T_max)
    live = torch.arange(B, device=device)  # (b,) output row of each row still in the batch
    eos = torch.tensor(eos_ids, device=device)
    length = 0
    for t in range(max_new_tokens):
        logits = model(input_ids=feed, attention_mask=mask, position_ids=position, cache=cache,
                       use_cache=True).logits[:, -1].float()  # (b, V)
        if t < min_new_tokens:
            logits[:, eos] = float("-inf")
        token = next_tokens(logits, greedy, temperature, top_k, top_p)  # (b,)
        out[live, t] = token
        length = t + 1
        finished = torch.isin(token, eos)  # (b,)
        if bool(finished.all()):
            break
        if bool(finished.any()):  # drop finished rows from the batch and from the cache
            keep = (~finished).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            live, mask, position, token = live[keep], mask[keep], position[keep], token[keep]
        mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
        position, feed = position + 1, token[:, None]
    return out[:, :length]
