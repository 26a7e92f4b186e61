"""Rollouts: sample G responses per prompt (hicra's decoding loop, or transformers' `generate` with a static cache),
and score sequences with the policy.

Layout of every batch (B = prompts x G, rows ordered group by group):

    [pad pad p p p p | r r r r EOS pad pad]
     <---- Lp -----> | <------- T ------->
    prompt_ids (B,Lp) left-padded, so every response starts at column Lp;
    response_ids (B,T); response_mask (B,T) is true on generated tokens up to and including the first EOS.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

from hicra.algorithms import logprobs_and_entropy
from hicra.errors import ConfigError
from hicra.models import prefix_sharing
from hicra.models.cache_compat import cache_kwargs
from hicra.options import CACHE_IMPLEMENTATIONS as _CACHES
from hicra.rollout.decode import decode
from hicra.rollout.kv_cache import static_cache
from hicra.rollout.packed_linear import packed_linears

# None: transformers' dynamic cache. "static": a fixed-size cache that transformers compiles the decoding step for
# (torch.compile, CUDA graphs on GPU): per-token launch overhead, not FLOPs, bounds small-model decoding.
CACHE_IMPLEMENTATIONS = (None, *_CACHES)


@dataclass
class RolloutBatch:
    prompt_ids: Tensor  # (B, Lp) left-padded
    prompt_mask: Tensor  # (B, Lp) bool
    response_ids: Tensor  # (B, T)
    response_mask: Tensor  # (B, T) bool, generated tokens up to and including the first EOS
    truncated: Tensor  # (B,) bool, hit max_new_tokens without an EOS
    # (B, T) float: the sampler's own log-prob of each response token (0 on padding), when it reports them; the
    # trainer corrects the loss for where they differ from its own (algorithm.sampler_correction)
    sampler_logprobs: Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.response_mask.sum())

    def rows(self, index: slice | Tensor) -> RolloutBatch:
        """The rows at `index`: a slice (micro-batches) or a (K,) long tensor (dynamic sampling's kept groups)."""
        sampler = None if self.sampler_logprobs is None else self.sampler_logprobs[index]
        return RolloutBatch(*(t[index] for t in (self.prompt_ids, self.prompt_mask, self.response_ids,
                                                 self.response_mask, self.truncated)), sampler)


def response_mask_from_eos(response_ids: Tensor, eos_ids: list[int]) -> tuple[Tensor, Tensor]:
    """True up to and including the first EOS of each row; (B,T) mask and (B,) truncated flags.

    Works when pad == EOS (SmolLM2): everything after the first EOS is padding, whatever its id.
    """
    is_eos = torch.isin(response_ids, torch.tensor(eos_ids, device=response_ids.device))  # (B,T)
    eos_seen_before = (is_eos.cumsum(dim=1) - is_eos.long()) > 0  # (B,T) an EOS strictly earlier in the row
    return ~eos_seen_before, ~is_eos.any(dim=1)


def eos_token_ids(tokenizer, model) -> list[int]:
    eos = model.generation_config.eos_token_id
    ids = eos if isinstance(eos, list) else [eos if eos is not None else tokenizer.eos_token_id]
    return [i for i in ids if i is not None]


@contextlib.contextmanager
def cast_once(device: torch.device):
    """Under autocast, cast each fp32 weight to the compute dtype once per generation, not once per decoded token.

    Lightning's bf16-mixed autocast turns the cast cache off (right for training, where weights change every step),
    so every decoding step would read each fp32 weight and write and read its bf16 copy again. The weights do not
    change during a generation: the cache is turned on for it and cleared after it, so that the next rollout casts
    the weights the optimizer has updated (in place, under the same tensors the cache is keyed on)."""
    if not torch.is_autocast_enabled(device.type) or torch.is_autocast_cache_enabled():
        yield
        return
    try:
        with torch.autocast(device.type, dtype=torch.get_autocast_dtype(device.type), cache_enabled=True):
            yield
    finally:
        torch.clear_autocast_cache()


class HFSampler:
    """Samples with the model's own forward pass (no vLLM needed). One instance per run; settings: `conf/rollout/`.

    The default dynamic cache decodes in `hicra.rollout.decode` (finished rows leave the batch); a static cache goes
    through `model.generate`, which compiles the decoding step for it (GPU). On CPU the linear layers run on
    oneDNN-packed weights while sampling (`packed_linears`, hicra/rollout/packed_linear.py)."""

    runs_policy_forward = True  # generate calls the policy itself: a sharded policy is gathered around it (module.py)

    def __init__(
        self,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        max_new_tokens: int = 160,
        max_prompt_tokens: int = 512,
        val_max_new_tokens: int | None = None,
        min_new_tokens: int = 0,
        cache_implementation: str | None = None,
        prompt_bucket: int = 0,
        packed_linears: bool = True,
    ):
        if not 0.0 < temperature <= 10.0:
            raise ConfigError(f"rollout.temperature={temperature} is not allowed; use a value in (0, 10]")
        if not 0.0 < top_p <= 1.0:
            raise ConfigError(f"rollout.top_p={top_p} is not allowed; use a value in (0, 1]")
        if max_new_tokens <= 0 or max_prompt_tokens <= 0:
            raise ConfigError(
                f"rollout.max_new_tokens={max_new_tokens} / max_prompt_tokens={max_prompt_tokens} must be > 0"
            )
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.max_new_tokens, self.max_prompt_tokens = max_new_tokens, max_prompt_tokens
        self.val_max_new_tokens = val_max_new_tokens or max_new_tokens
        if not 0 <= min_new_tokens <= max_new_tokens:
            raise ConfigError(f"rollout.min_new_tokens={min_new_tokens} is not allowed; use 0..max_new_tokens "
                              f"({max_new_tokens})")
        if cache_implementation not in CACHE_IMPLEMENTATIONS:
            raise ConfigError(f"rollout.cache_implementation={cache_implementation} is not allowed; allowed: "
                              f"{', '.join(map(str, CACHE_IMPLEMENTATIONS))}")
        if prompt_bucket < 0:
            raise ConfigError(f"rollout.prompt_bucket={prompt_bucket} is not allowed; use 0 (off) or a positive int")
        self.min_new_tokens, self.cache_implementation = min_new_tokens, cache_implementation
        # Prompts left-padded to a multiple of this: a static cache then sees a few shapes, and its compiled
        # decoding graph is reused across steps instead of recompiled for every new prompt length.
        self.prompt_bucket = prompt_bucket or None
        self.packed_linears = packed_linears  # CPU only: oneDNN-packed weights while sampling (packed_linear.py)

    @torch.no_grad()
    def generate(self, model, tokenizer, prompts: list[str], group_size: int, greedy: bool = False) -> RolloutBatch:
        """Each prompt repeated `group_size` times (rows grouped), sampled (or greedy for evaluation)."""
        enc = tokenizer(prompts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_prompt_tokens,
                        add_special_tokens=False, pad_to_multiple_of=self.prompt_bucket)
        device = next(model.parameters()).device
        distinct_ids, distinct_mask = enc.input_ids.to(device), enc.attention_mask.to(device)  # (U, Lp)
        prompt_ids = distinct_ids.repeat_interleave(group_size, dim=0)  # (B, Lp)
        prompt_mask = distinct_mask.repeat_interleave(group_size, dim=0)  # (B, Lp)
        sample = not greedy and self.temperature > 0
        kwargs = ({"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}
                  if sample else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None})
        was_training = model.training
        model.eval()
        max_new_tokens = self.val_max_new_tokens if greedy else self.max_new_tokens
        # greedy validation checks answers: forcing length there would only cost time
        min_new_tokens = 0 if greedy else self.min_new_tokens
        sampler_logprobs = None  # only hicra's decoding loop reports them (generate's scores are filtered)
        with packed_linears(model, len(prompt_ids), enabled=self.packed_linears), cast_once(device):
            if self.cache_implementation is None:
                decoded = decode(model, distinct_ids, distinct_mask, group_size, max_new_tokens,
                                 eos_token_ids(tokenizer, model), tokenizer.pad_token_id, greedy=not sample,
                                 temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                                 min_new_tokens=min_new_tokens, return_logprobs=sample)
                response_ids, sampler_logprobs = decoded if sample else (decoded, None)  # (B, T) each
            else:  # generate compiles its decoding step for the static cache (and allocates it, outside autocast)
                cache = static_cache(model, prompt_ids.shape[1] + max_new_tokens)
                cache_args = {"cache_implementation": self.cache_implementation} if cache is None else \
                    cache_kwargs(cache)
                out = model.generate(
                    input_ids=prompt_ids, attention_mask=prompt_mask, max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=eos_token_ids(tokenizer, model), use_cache=True,
                    min_new_tokens=min_new_tokens, **cache_args, **kwargs)
                response_ids = out[:, prompt_ids.shape[1]:]  # (B, T)
        model.train(was_training)
        response_mask, truncated = response_mask_from_eos(response_ids, eos_token_ids(tokenizer, model))
        if sampler_logprobs is not None:
            sampler_logprobs = sampler_logprobs.masked_fill(~response_mask, 0.0)  # (B, T)
        return RolloutBatch(prompt_ids, prompt_mask.bool(), response_ids, response_mask, truncated, sampler_logprobs)


def trim_padding(batch: RolloutBatch) -> tuple[RolloutBatch, int]:
    """Drop columns that are padding in every row (left of the prompts, right of the responses): fewer FLOPs.

    Returns the trimmed batch and its response width, so per-token tensors can be cut to match: `[:, :end]`.
    """
    first = int(batch.prompt_mask.any(dim=0).int().argmax())  # first prompt column any row uses
    valid_cols = batch.response_mask.any(dim=0).nonzero()
    end = int(valid_cols.max()) + 1 if len(valid_cols) else 1
    trimmed = RolloutBatch(batch.prompt_ids[:, first:], batch.prompt_mask[:, first:],
                           batch.response_ids[:, :end], batch.response_mask[:, :end], batch.truncated)
    return trimmed, end


def sequence_logprobs(
    model, batch: RolloutBatch, with_entropy: bool = False, temperature: float = 1.0, entropy_grad: bool = True
) -> tuple[Tensor, Tensor | None]:
    """log pi(response token | prefix) (B,T) and optionally the policy entropy at each response position (B,T).

    Logits are divided by the sampling temperature, so the ratio is taken against the distribution that sampled.
    Position ids follow the attention mask, as `generate` does with left padding, so the first update of a fresh
    rollout sees exactly the sampling distribution (ratio 1). Rows that share a prompt compute it once when the
    model has prompt sharing on (hicra/models/prefix_sharing.py). `entropy_grad=False` returns the entropy detached,
    and the backward skips its term: only the algorithms that put entropy in their loss need its gradient.
    """
    pieces = prefix_sharing.shared_prompt_logits(model, batch.prompt_ids, batch.prompt_mask, batch.response_ids) \
        if prefix_sharing.is_enabled(model) else None  # (B, 1, V) and (B, T-1, V)
    if pieces is None:
        attention = torch.cat([batch.prompt_mask, batch.response_mask], dim=1).long()  # (B, L)
        input_ids = torch.cat([batch.prompt_ids, batch.response_ids], dim=1)  # (B, L)
        T = batch.response_ids.shape[1]
        # Only the T positions that predict response tokens need logits: position Lp-1 predicts response token 0.
        pieces = (model(input_ids=input_ids, attention_mask=attention, position_ids=prefix_sharing.positions(attention),
                        use_cache=False, logits_to_keep=T + 1).logits[:, :-1],)  # (B, T, V)
    targets = batch.response_ids.split([p.shape[1] for p in pieces], dim=1)
    # fp32 and the temperature are applied block by block inside: no second (B,T,V) tensor
    outputs = [logprobs_and_entropy(p, t, temperature, with_entropy, entropy_grad) for p, t in zip(pieces, targets)]
    logprobs = torch.cat([lp for lp, _ in outputs], dim=1)  # (B, T)
    entropy = torch.cat([h for _, h in outputs], dim=1) if with_entropy else None  # (B, T)
    return logprobs, entropy
