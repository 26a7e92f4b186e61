"""Autoregressive sampling as a plain loop over the model's forward pass, dropping rows as they finish.

Why not `model.generate`: it runs every row to the longest one, so a batch whose replies end after 10-60 tokens pays
for all rows at every position up to the slowest row's length. Here a row that emits EOS leaves the batch (its cache rows
are dropped with it), so the cost follows the tokens actually generated. What a step costs beyond the model's own
forward is kept small, each piece measured on the cpu benchmark preset (benchmarks/RESULTS.md, "Decoding"):
- the KV cache is preallocated for the whole reply (hicra/rollout/kv_cache.py): no per-step copy of the cache;
- the attention mask is allocated once and fed as a growing view;
- a token is drawn by inverting the row's cumulative distribution (one uniform per row, float64 cumsum): the same
  distribution as `torch.multinomial`, which draws an exponential per vocabulary entry (~30 ms per step for 32 x 49k);
- top-p first looks for the nucleus among the top 64 (then 1,024) tokens, and sorts the whole vocabulary only when
  the nucleus is wider.

Same sampling rule as `generate` with do_sample: logits / temperature, then top-k, then top-p (nucleus), then a
draw from the renormalised distribution; greedy takes the argmax. EOS is forbidden before `min_new_tokens`.
With `return_logprobs`, the sampler's own log-prob of each drawn token comes back too: log_softmax(logits /
temperature) before top-k / top-p, the distribution the trainer scores (for the sampler/trainer mismatch correction).

How often the loop reads the device (`stop_check_every`, chosen by the device): on CPU a host read is free, so the
loop checks after every token and a finished row leaves the batch at once (several reads per token: all finished?
any? which rows stay? and top-p's "is the nucleus in the top 64?"). On a GPU each read waits for the launch queue to
drain, which starves a small model's forward; there a finished row stays in the batch, its further tokens written
as pad (log-prob 0) by tensor ops, and every 8 tokens one read of the live-row count ends the loop or drops the
finished rows; top-p sorts the whole vocabulary rather than read back whether its candidates suffice. That path
draws one uniform per original row at every step, so its samples for a seed do not depend on when rows leave;
they differ from the eager path's draws (same distribution; tests/rollout/test_decode_sync.py).
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import DynamicCache

from hicra.models import prefix_sharing
from hicra.models.cache_compat import cache_kwargs
from hicra.rollout.kv_cache import preallocate

NUCLEUS_CANDIDATES = (64, 1024)  # top-p tries these candidate counts before sorting the whole vocabulary
GPU_STOP_CHECK_EVERY = 8  # up to 7 wasted row-steps per finished row, against a queue drain per token


def _nucleus_drop(sorted_logits: Tensor, log_normaliser: Tensor, top_p: float) -> Tensor:
    """Which of the descending `sorted_logits` (b, k) fall outside the nucleus: the tokens ranked above them already
    hold `top_p` of the probability. The first token always stays."""
    probs = (sorted_logits - log_normaliser).exp()  # (b, k)
    mass_before = probs.cumsum(dim=-1) - probs  # (b, k) probability of the tokens ranked above
    return mass_before >= top_p


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0,
                  candidates: tuple[int, ...] = NUCLEUS_CANDIDATES) -> Tensor:
    """Keep the `top_k` largest logits (0 = all) and the smallest set whose probability reaches `top_p`; the rest -inf.

    logits (b, V) float -> (b, V). The most likely token always survives, so every row can still be sampled.
    `candidates`: the widths top-p searches before sorting the whole vocabulary; each try reads one bool back from
    the device, so the sync-free path passes () and always sorts.
    """
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (b, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        log_normaliser = logits.logsumexp(dim=-1, keepdim=True)  # (b, 1)
        for k in candidates:  # the nucleus is usually narrow: find it among the top k
            if k >= logits.shape[-1]:
                break
            values, order = logits.topk(k, dim=-1)  # (b, k) descending
            drop_sorted = _nucleus_drop(values, log_normaliser, top_p)
            # every row's nucleus ends inside the top k (or top-k left fewer tokens): the rest is dropped too
            if bool((drop_sorted[:, -1] | values[:, -1].isneginf()).all()):
                keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, ~drop_sorted)
                return logits.masked_fill(~keep, float("-inf"))
        values, order = logits.sort(dim=-1, descending=True)  # (b, V)
        drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, _nucleus_drop(values, log_normaliser,
                                                                                            top_p))
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_from(probs: Tensor, uniforms: Tensor | None = None) -> Tensor:
    """One draw per row from unnormalised probabilities (b, V) >= 0 -> (b,) long, by inverting the cumulative sum.

    float64 keeps each token's interval exact to ~1e-16, so the draw follows `probs` as `torch.multinomial` does;
    a zero-probability token has an empty interval and is never drawn. `uniforms` (b, 1) float64 in [0, 1): the
    draws to invert (default: fresh ones from the global generator).
    """
    cumulative = probs.double().cumsum(dim=-1)  # (b, V)
    total = cumulative[:, -1:].contiguous()  # (b, 1)
    if uniforms is None:
        uniforms = torch.rand(total.shape, dtype=torch.float64, device=probs.device)
    u = uniforms * total  # (b, 1) in [0, total)
    token = torch.searchsorted(cumulative, u, right=True)  # first index whose cumulative mass exceeds u
    last_positive = torch.searchsorted(cumulative, total)  # u rounding up to the total must not pick a zero tail
    return torch.minimum(token, last_positive).squeeze(1)


def next_tokens(logits: Tensor, greedy: bool, temperature: float, top_k: int, top_p: float,
                candidates: tuple[int, ...] = NUCLEUS_CANDIDATES, uniforms: Tensor | None = None) -> Tensor:
    """One token per row from last-position logits (b, V) -> (b,) long (`candidates`: filter_logits; `uniforms`:
    sample_from)."""
    if greedy:
        return logits.argmax(dim=-1)
    return sample_from(filter_logits(logits / temperature, top_k, top_p, candidates).softmax(dim=-1), uniforms)


def stop_check_interval(device: torch.device) -> int:
    """Tokens between the loop's host reads on `device`: 1 on CPU, where reads are free (the eager loop), else 8."""
    return 1 if device.type == "cpu" else GPU_STOP_CHECK_EVERY


@torch.no_grad()
def decode(model, prompt_ids: Tensor, prompt_mask: Tensor, group_size: int, max_new_tokens: int, eos_ids: list[int],
           pad_id: int, greedy: bool = False, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           min_new_tokens: int = 0, return_logprobs: bool = False,
           stop_check_every: int | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """Sample `group_size` replies to each distinct prompt; response ids (B, T) with B = U x G rows grouped prompt
    by prompt and T the longest reply, `pad_id` after each row's first EOS. `return_logprobs`: also the drawn
    tokens' log-probs (B, T) float32, 0 after each row's first EOS.

    prompt_ids, prompt_mask (U, Lp) left-padded. Every prompt but its last token prefills the cache once per distinct
    prompt (repeated G times); the loop then feeds one token per live row. `stop_check_every`: tokens between the
    host reads that end the loop and drop finished rows; None = by device (1 on CPU, 8 on a GPU: module docstring).
    """
    device = prompt_ids.device
    if stop_check_every is None:
        stop_check_every = stop_check_interval(device)
    if stop_check_every < 1:
        raise ValueError(f"stop_check_every={stop_check_every} is not allowed; use an int >= 1")
    Lp = prompt_ids.shape[1]
    if Lp > 1:
        cache = prefix_sharing.prefilled_cache(model, prompt_ids, prompt_mask, group_size)
        preallocate(cache, Lp - 1 + max_new_tokens)
    else:
        cache = DynamicCache(config=model.config)  # a one-token prompt: nothing to prefill
    mask = prompt_mask.new_ones(len(prompt_ids) * group_size, Lp + max_new_tokens, dtype=torch.long)  # (B, Lp+T)
    mask[:, :Lp] = prompt_mask.long().repeat_interleave(group_size, dim=0)
    position = prefix_sharing.positions(mask[:, :Lp])[:, -1:]  # (B, 1) position of the token fed next
    feed = prompt_ids[:, -1:].repeat_interleave(group_size, dim=0)  # (B, 1) the prompts' last tokens
    B = feed.shape[0]
    out = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)  # (B, T_max)
    out_logprobs = torch.zeros((B, max_new_tokens), device=device) if return_logprobs else None  # (B, T_max)
    sampling = {"greedy": greedy, "temperature": temperature, "top_k": top_k, "top_p": top_p}
    step = _Step(model, cache, Lp, min_new_tokens, torch.tensor(eos_ids, device=device), sampling)
    loop = _eager_loop if stop_check_every == 1 else _checked_loop
    length = loop(step, mask, position, feed, out, out_logprobs, pad_id, stop_check_every)
    return (out[:, :length], out_logprobs[:, :length]) if return_logprobs else out[:, :length]


class _Step:
    """One decoding step's work shared by both loops: the forward over the live rows, EOS forbidden before
    `min_new_tokens`, and the sampler's log-prob of the drawn tokens."""

    def __init__(self, model, cache, Lp: int, min_new_tokens: int, eos: Tensor, sampling: dict):
        self.model, self.cache, self.Lp, self.min_new_tokens, self.eos = model, cache, Lp, min_new_tokens, eos
        self.sampling = sampling

    def logits(self, t: int, feed: Tensor, mask: Tensor, position: Tensor) -> Tensor:
        """(b, V) float32 next-token logits of the live rows at reply position t."""
        logits = self.model(input_ids=feed, attention_mask=mask[:, :self.Lp + t], position_ids=position,
                            use_cache=True, **cache_kwargs(self.cache)).logits[:, -1].float()  # (b, V)
        if t < self.min_new_tokens:
            logits[:, self.eos] = float("-inf")
        return logits

    def logprobs(self, logits: Tensor, token: Tensor) -> Tensor:
        """(b,) log-prob of `token` under logits / temperature: one gather and one logsumexp over (b, V), cheap beside
        the forward."""
        scaled = logits / self.sampling["temperature"]
        return scaled.gather(1, token[:, None]).squeeze(1) - scaled.logsumexp(dim=-1)


def _eager_loop(step: _Step, mask: Tensor, position: Tensor, feed: Tensor, out: Tensor, out_logprobs: Tensor | None,
                pad_id: int, check_every: int) -> int:
    """Check after every token and drop finished rows at once (the CPU path; host reads are free there). Fills
    `out` / `out_logprobs` (B, T) and returns the reply width."""
    live = torch.arange(out.shape[0], device=out.device)  # (b,) output row of each row still in the batch
    length = 0
    for t in range(out.shape[1]):
        logits = step.logits(t, feed, mask, position)  # (b, V)
        token = next_tokens(logits, **step.sampling)  # (b,)
        out[live, t] = token
        if out_logprobs is not None:
            out_logprobs[live, t] = step.logprobs(logits, token)
        length = t + 1
        finished = torch.isin(token, step.eos)  # (b,)
        if bool(finished.all()):
            break
        if bool(finished.any()):  # drop finished rows from the batch and from the cache
            keep = (~finished).nonzero().squeeze(1)
            step.cache.batch_select_indices(keep)
            live, mask, position, token = live[keep], mask[keep], position[keep], token[keep]
        position, feed = position + 1, token[:, None]
    return length


def _checked_loop(step: _Step, mask: Tensor, position: Tensor, feed: Tensor, out: Tensor, out_logprobs: Tensor | None,
                  pad_id: int, check_every: int) -> int:
    """The GPU path: no host read between checks. A finished row stays in the batch until the next check, every
    `check_every` tokens, where one read of the live-row count ends the loop or drops the finished rows; one more
    read at the end gives the reply width. Fills `out` / `out_logprobs` (B, T) as _eager_loop does."""
    B, T = out.shape
    live = torch.arange(B, device=out.device)  # (b,) output row of each row still in the batch
    done = torch.zeros(B, dtype=torch.bool, device=out.device)  # (b,) emitted EOS, still in the batch
    ends = torch.full((B,), T, device=out.device)  # (B,) each reply's width: its first EOS + 1, T without one
    for t in range(T):
        logits = step.logits(t, feed, mask, position)  # (b, V)
        # one uniform per original row, indexed by the live ones: a row's draws do not depend on when others leave
        uniforms = None if step.sampling["greedy"] else \
            torch.rand((B, 1), dtype=torch.float64, device=out.device)[live]  # (b, 1)
        token = next_tokens(logits, **step.sampling, candidates=(), uniforms=uniforms).masked_fill(done, pad_id)
        out[live, t] = token
        if out_logprobs is not None:
            out_logprobs[live, t] = step.logprobs(logits, token).masked_fill(done, 0.0)
        finished = (token[:, None] == step.eos).any(dim=1) & ~done  # (b,) EOS now; isin sorts (a read) for long lists
        ends[live] = torch.where(finished, t + 1, ends[live])
        done = done | finished
        if (t + 1) % check_every == 0 and t + 1 < T:
            n_live = int((~done).sum())  # the host read: one per check
            if n_live == 0:
                break
            if n_live < len(live):  # drop finished rows from the batch and from the cache
                keep = done.to(torch.uint8).argsort(stable=True)[:n_live]  # (n_live,) live rows in order, no sync
                step.cache.batch_select_indices(keep)
                live, mask, position, token, done = live[keep], mask[keep], position[keep], token[keep], done[keep]
        position, feed = position + 1, token[:, None]
    return int(ends.max())  # the second host read, once per reply
