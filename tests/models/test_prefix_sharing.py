"""Prompt sharing (hicra/models/prefix_sharing.py) is exact: log-probs, entropies, gradients and samples equal the one-pass
path's, with gradient checkpointing on or off and with LoRA; it really runs each prompt once; models it cannot
serve exactly keep the one-pass path; a saved model carries no trace of it."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, MistralConfig, MistralForCausalLM

from hicra.models import prefix_sharing
from hicra.models.loaders import build_tiny_model
from hicra.rollout.hf import HFSampler, RolloutBatch, response_mask_from_eos, sequence_logprobs

PROMPTS = ["What is 2 + 2?", "Compute the sum of the first three odd numbers, then explain why it is a square."]
G = 3


def _pair(**kwargs):
    """The same random weights twice: prompt sharing on and off."""
    return build_tiny_model(seed=0, share_prompt_prefix=True, **kwargs), \
        build_tiny_model(seed=0, share_prompt_prefix=False, **kwargs)


def _batch(tokenizer, group_size=G, T=9) -> RolloutBatch:
    """Left-padded prompts of different lengths, each repeated group_size times; responses of different lengths."""
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    prompt_ids = enc.input_ids.repeat_interleave(group_size, 0)  # (B, Lp)
    prompt_mask = enc.attention_mask.bool().repeat_interleave(group_size, 0)
    gen = torch.Generator().manual_seed(0)
    response = torch.randint(3, 1000, (len(prompt_ids), T), generator=gen)  # (B, T)
    response[1, 4:] = tokenizer.eos_token_id  # an early EOS followed by padding
    response[-2, 0] = tokenizer.eos_token_id  # an immediate EOS
    mask, truncated = response_mask_from_eos(response, [tokenizer.eos_token_id])
    return RolloutBatch(prompt_ids, prompt_mask, response, mask, truncated)


def test_distinct_prompts_follow_row_order():
    ids = torch.tensor([[1, 2], [1, 2], [3, 4], [3, 4], [1, 2]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    firsts, row_to_prompt = prefix_sharing.distinct_prompts(ids, mask)
    assert firsts.tolist() == [0, 2, 4]  # a prompt seen again later is a new group: exact either way
    assert row_to_prompt.tolist() == [0, 0, 1, 1, 2]
    # the same ids with a different mask are different prompts
    mask[1, 0] = False
    assert prefix_sharing.distinct_prompts(ids, mask)[1].tolist() == [0, 1, 2, 2, 3]


def test_no_shared_rows_leaves_the_one_pass_path():
    shared, _ = _pair()
    batch = _batch(shared.tokenizer, group_size=1)
    assert prefix_sharing.shared_prompt_logits(shared.model, batch.prompt_ids, batch.prompt_mask,
                                               batch.response_ids) is None


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_logprobs_entropies_and_gradients_equal_the_one_pass_path(gradient_checkpointing):
    shared, plain = _pair(gradient_checkpointing=gradient_checkpointing)
    assert prefix_sharing.is_enabled(shared.model) and not prefix_sharing.is_enabled(plain.model)
    batch = _batch(shared.tokenizer)
    results = []
    for bundle in (shared, plain):
        bundle.model.train()
        logprobs, entropy = sequence_logprobs(bundle.model, batch, with_entropy=True, temperature=0.7)
        m = batch.response_mask
        # a loss that weights positions differently, so a wrong position or row would show in the gradient
        weights = torch.linspace(0.5, 1.5, logprobs.numel()).view_as(logprobs)
        loss = (torch.where(m, logprobs * weights, 0.0).sum() + torch.where(m, entropy, 0.0).sum()) / m.sum()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in bundle.model.named_parameters()}
        results.append((logprobs.detach(), entropy.detach(), grads))
    (lp_s, ent_s, g_s), (lp_p, ent_p, g_p) = results
    m = batch.response_mask
    torch.testing.assert_close(lp_s[m], lp_p[m], rtol=0, atol=1e-5)
    torch.testing.assert_close(ent_s[m], ent_p[m], rtol=0, atol=1e-5)
    assert g_s.keys() == g_p.keys()
    for name in g_p:
        torch.testing.assert_close(g_s[name], g_p[name], rtol=1e-4, atol=1e-6, msg=name)


def test_each_prompt_runs_once():
    """Tokens through the embedding: U x Lp + B x T with sharing, B x (Lp + T) without."""
    shared, plain = _pair()
    batch = _batch(shared.tokenizer)
    B, Lp = batch.prompt_ids.shape
    T = batch.response_ids.shape[1]
    seen = {}
    for name, bundle in (("shared", shared), ("plain", plain)):
        counts = []
        hook = bundle.model.get_input_embeddings().register_forward_hook(
            lambda module, args, out, counts=counts: counts.append(args[0].numel()))
        with torch.no_grad():
            sequence_logprobs(bundle.model, batch)
        hook.remove()
        seen[name] = sum(counts)
    assert seen["plain"] == B * (Lp + T)
    assert seen["shared"] == len(PROMPTS) * Lp + B * T


def test_samples_equal_the_one_pass_prefill():
    shared, plain = _pair()
    sampler = HFSampler(temperature=1.0, max_new_tokens=10)
    out = {}
    for name, bundle in (("shared", shared), ("plain", plain)):
        torch.manual_seed(3)
        sampled = sampler.generate(bundle.model, bundle.tokenizer, PROMPTS, group_size=4)
        greedy = sampler.generate(bundle.model, bundle.tokenizer, PROMPTS, group_size=2, greedy=True)
        out[name] = (sampled, greedy)
    for a, b in zip(out["shared"], out["plain"]):
        assert torch.equal(a.prompt_ids, b.prompt_ids) and torch.equal(a.prompt_mask, b.prompt_mask)
        assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.response_mask, b.response_mask)


def test_lora_policy_and_its_adapter_free_reference_share_prompts():
    pytest.importorskip("peft")
    from hicra.models.lora import adapter_free_reference

    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
    shared, plain = _pair(lora=lora)
    batch = _batch(shared.tokenizer)
    m = batch.response_mask
    with torch.no_grad():
        for a, b in ((shared.model, plain.model),
                     (adapter_free_reference(shared.model), adapter_free_reference(plain.model))):
            assert prefix_sharing.is_enabled(a)
            torch.testing.assert_close(sequence_logprobs(a, batch)[0][m], sequence_logprobs(b, batch)[0][m],
                                       rtol=0, atol=1e-5)


def test_models_it_cannot_serve_exactly_keep_the_one_pass_path(smollm2_tokenizer):
    eager = build_tiny_model(seed=0, share_prompt_prefix=False)
    eager.model.config._attn_implementation = "eager"
    assert "eager" in prefix_sharing.unsupported_reason(eager.model)
    assert not prefix_sharing.enable(eager.model) and not prefix_sharing.is_enabled(eager.model)
    config = MistralConfig(vocab_size=len(smollm2_tokenizer), hidden_size=32, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, intermediate_size=64, sliding_window=4,
                           attn_implementation="sdpa")
    mistral = MistralForCausalLM(config)
    assert prefix_sharing.unsupported_reason(mistral) == "sliding-window attention"
    assert not prefix_sharing.enable(mistral) and mistral.config._attn_implementation == "sdpa"


def test_saved_model_loads_as_a_plain_transformers_model(tmp_path):
    shared, _ = _pair()
    shared.model.save_pretrained(tmp_path)
    assert prefix_sharing.ATTENTION not in (tmp_path / "config.json").read_text()
    json.loads((tmp_path / "config.json").read_text())
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert reloaded.config._attn_implementation != prefix_sharing.ATTENTION


def test_a_one_token_querys_mask_off_the_cpu_reads_nothing_back_to_the_host():
    """A decoded token's mask on a GPU: transformers' causal-skip check reads the padding mask back (one sync per
    token); ours builds the mask without reading it. A meta tensor stands in for a device tensor: any read raises."""
    from transformers.masking_utils import causal_mask_function, sdpa_mask

    from hicra.models.prefix_sharing import _mask

    step = {"batch_size": 2, "q_length": 1, "kv_length": 5, "q_offset": 4, "kv_offset": 0,
            "mask_function": causal_mask_function, "attention_mask": torch.ones(2, 5, dtype=torch.bool, device="meta"),
            "allow_is_causal_skip": True, "local_size": None, "device": "meta"}
    with pytest.raises(RuntimeError, match="meta"):
        sdpa_mask(**step)  # the read this avoids
    assert _mask(**step).shape == (2, 1, 1, 5)
    on_cpu = step | {"attention_mask": torch.ones(2, 5, dtype=torch.bool), "device": "cpu"}
    assert _mask(**on_cpu) is None and sdpa_mask(**on_cpu) is None  # the CPU keeps the skip: no mask for no padding
