"""Decoding under bf16 autocast (trainer.precision=bf16-mixed on fp32 weights): the KV cache holds bf16, not the fp32
keys RoPE promotes to, the fp32 weights are cast once per generation (the cast cache), and the tokens stay those of
`generate` under the same autocast."""

from __future__ import annotations

import torch
from support import sharpened_tiny_model

from hicra.models.loaders import build_tiny_model
from hicra.rollout import decode as decode_module
from hicra.rollout import kv_cache
from hicra.rollout.hf import HFSampler

PROMPTS = ["What is 2 + 2?", "Compute the sum of the first three odd numbers."]


def test_kv_cache_holds_bf16_under_autocast_and_decoding_equals_generate(monkeypatch):
    bundle = sharpened_tiny_model()
    enc = bundle.tokenizer(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    pad = bundle.tokenizer.pad_token_id
    caches = []
    monkeypatch.setattr(decode_module, "preallocate",
                        lambda cache, capacity: caches.append(kv_cache.preallocate(cache, capacity)) or caches[-1])
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):  # as Lightning's bf16-mixed
        expected = bundle.model.generate(input_ids=enc.input_ids, attention_mask=enc.attention_mask, do_sample=False,
                                         max_new_tokens=12, pad_token_id=pad, eos_token_id=[-1])
        got = decode_module.decode(bundle.model, enc.input_ids, enc.attention_mask, 1, 12, [-1], pad, greedy=True)
    layers = caches[0].layers
    assert {layer._keys.dtype for layer in layers} == {layer._values.dtype for layer in layers} == {torch.bfloat16}
    assert torch.equal(got, expected[:, enc.input_ids.shape[1]:])
    # without autocast the cache keeps the weights' dtype
    decode_module.decode(bundle.model, enc.input_ids, enc.attention_mask, 1, 2, [-1], pad, greedy=True)
    assert caches[1].layers[0]._keys.dtype == torch.float32


def test_generation_under_autocast_casts_each_weight_once_and_forgets_the_casts():
    """Lightning's autocast turns the cast cache off; the sampler turns it on for a generation and clears it after,
    so a weight changed by the optimizer step is cast afresh for the next rollout."""
    bundle = build_tiny_model(seed=0)
    seen = []
    bundle.model.model.register_forward_pre_hook(lambda *_: seen.append(torch.is_autocast_cache_enabled()))
    sampler = HFSampler(max_new_tokens=6)
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        sampler.generate(bundle.model, bundle.tokenizer, PROMPTS[:1], 2, greedy=True)
        assert seen and all(seen) and not torch.is_autocast_cache_enabled()
        with torch.no_grad():
            for param in bundle.model.parameters():
                param.mul_(-1.0)  # in place, as the optimizer: a stale cast would keep the old sign
        after = sampler.generate(bundle.model, bundle.tokenizer, PROMPTS[:1], 2, greedy=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=True):
            fresh = HFSampler(max_new_tokens=6).generate(bundle.model, bundle.tokenizer, PROMPTS[:1], 2, greedy=True)
    assert torch.equal(after.response_ids, fresh.response_ids)


def test_the_static_cache_of_generate_holds_bf16_under_autocast(monkeypatch):
    """rollout.cache_implementation=static: transformers allocates its StaticCache like the first keys it sees (fp32
    under autocast); the sampler hands generate one in the compute dtype, with the same tokens."""
    from hicra.rollout import hf

    bundle = sharpened_tiny_model()
    caches = []
    monkeypatch.setattr(hf, "static_cache", lambda model, n: caches.append(kv_cache.static_cache(model, n)) or caches[-1])
    sampler = HFSampler(max_new_tokens=8, cache_implementation="static", packed_linears=False)
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        got = sampler.generate(bundle.model, bundle.tokenizer, PROMPTS, 1, greedy=True)
        enc = bundle.tokenizer(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
        expected = bundle.model.generate(input_ids=enc.input_ids, attention_mask=enc.attention_mask, do_sample=False,
                                         max_new_tokens=8, pad_token_id=bundle.tokenizer.pad_token_id,
                                         eos_token_id=hf.eos_token_ids(bundle.tokenizer, bundle.model),
                                         )[:, enc.input_ids.shape[1]:]  # its dynamic cache: transformers 5.17's own
        # static cache cannot run under autocast (it allocates values in the fp32 keys' dtype, then copies bf16 in)
    assert {layer.keys.dtype for layer in caches[0].layers} == {layer.values.dtype for layer in caches[0].layers} \
        == {torch.bfloat16}
    assert torch.equal(got.response_ids, expected)
    assert caches[0] is not None and kv_cache.static_cache(bundle.model, 8) is None  # outside autocast: generate's own
