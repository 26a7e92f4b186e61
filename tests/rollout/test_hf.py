"""Rollout bookkeeping: response masks, and log-probs of the update pass equal the sampler's (ratio 1)."""

from __future__ import annotations

import pytest
import torch

from hicra.models.loaders import build_tiny_model
from hicra.rollout.hf import HFSampler, RolloutBatch, response_mask_from_eos, sequence_logprobs


def test_response_mask_covers_generated_tokens_up_to_and_including_first_eos():
    eos = 2
    ids = torch.tensor([[5, 6, 2, 2, 2],    # EOS then padding that is also EOS
                        [5, 6, 7, 8, 9],    # no EOS: truncated, every token counts
                        [2, 2, 2, 2, 2],    # immediate EOS: one token (the EOS itself)
                        [5, 2, 7, 2, 2]])   # tokens after the first EOS never count
    mask, truncated = response_mask_from_eos(ids, [eos])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]]
    assert truncated.tolist() == [False, True, False, False]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_tiny_model(seed=0)


def _prompts(tokenizer):
    return ["What is 2 + 2?", "Compute the sum of the first three odd numbers, then explain why it is a square."]


def test_update_pass_reproduces_the_sampling_distribution(tiny):
    """Left-padded prompts of different lengths: logits of our forward == logits `generate` sampled from."""
    sampler = HFSampler(temperature=1.0, max_new_tokens=12)
    prompts = _prompts(tiny.tokenizer)
    enc = tiny.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(1)
    out = tiny.model.generate(input_ids=enc.input_ids, attention_mask=enc.attention_mask, do_sample=True,
                              max_new_tokens=12, output_logits=True, return_dict_in_generate=True,
                              pad_token_id=tiny.tokenizer.pad_token_id, top_k=0, top_p=1.0)
    response = out.sequences[:, enc.input_ids.shape[1]:]  # (B, T)
    gen_logprobs = torch.stack(out.logits, dim=1).log_softmax(-1).gather(-1, response[..., None])[..., 0]
    mask, truncated = response_mask_from_eos(response, [tiny.tokenizer.eos_token_id])
    batch = RolloutBatch(enc.input_ids, enc.attention_mask.bool(), response, mask, truncated)
    with torch.no_grad():
        logprobs, entropy = sequence_logprobs(tiny.model, batch, with_entropy=True, temperature=sampler.temperature)
    assert torch.allclose(logprobs[mask], gen_logprobs[mask], atol=1e-4)
    assert entropy.shape == logprobs.shape and (entropy[mask] > 0).all()


def test_sampler_groups_rows_prompt_by_prompt(tiny):
    sampler = HFSampler(temperature=1.0, max_new_tokens=8)
    batch = sampler.generate(tiny.model, tiny.tokenizer, _prompts(tiny.tokenizer), group_size=3)
    assert batch.response_ids.shape[0] == 6 and batch.prompt_ids.shape[0] == 6
    assert torch.equal(batch.prompt_ids[0], batch.prompt_ids[2]) and not torch.equal(batch.prompt_ids[2],
                                                                                      batch.prompt_ids[3])
    assert batch.response_mask[:, 0].all()  # every response has at least its first token
    greedy = sampler.generate(tiny.model, tiny.tokenizer, _prompts(tiny.tokenizer), group_size=2, greedy=True)
    assert torch.equal(greedy.response_ids[0], greedy.response_ids[1])  # greedy is deterministic


def test_sampler_packs_the_linears_only_while_it_samples_and_its_greedy_tokens_match_unpacked(tiny, monkeypatch):
    from hicra.rollout import hf

    packed_during = []
    real = hf.packed_linears

    def spy(model, rows, enabled=True):
        packed_during.append((rows, enabled))
        return real(model, rows, enabled)

    monkeypatch.setattr(hf, "packed_linears", spy)
    prompts = _prompts(tiny.tokenizer)
    on = HFSampler(max_new_tokens=10).generate(tiny.model, tiny.tokenizer, prompts, group_size=2, greedy=True)
    off = HFSampler(max_new_tokens=10, packed_linears=False).generate(tiny.model, tiny.tokenizer, prompts, 2, True)
    assert packed_during == [(4, True), (4, False)]
    assert torch.equal(on.response_ids, off.response_ids)
    assert all("forward" not in vars(m) for m in tiny.model.modules())  # the update runs on the plain modules


def test_bad_sampling_settings_are_rejected():
    from hicra.errors import ConfigError

    with pytest.raises(ConfigError, match="rollout.temperature"):
        HFSampler(temperature=0.0)
    with pytest.raises(ConfigError, match="rollout.top_p"):
        HFSampler(top_p=1.5)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        HFSampler(max_new_tokens=0)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_keeps_its_own_logprobs_and_they_match_the_trainers(tiny, temperature):
    """The decoding loop reports log pi_sampler of each drawn token (0 on padding); in the same precision they agree
    with the trainer's scoring pass, so the mismatch correction has nothing to correct. Greedy reports none."""
    sampler = HFSampler(temperature=temperature, max_new_tokens=10)
    torch.manual_seed(2)
    batch = sampler.generate(tiny.model, tiny.tokenizer, _prompts(tiny.tokenizer), group_size=3)
    assert batch.sampler_logprobs is not None and batch.sampler_logprobs.shape == batch.response_ids.shape
    assert (batch.sampler_logprobs[~batch.response_mask] == 0).all()
    assert (batch.sampler_logprobs[batch.response_mask] < 0).all()
    with torch.no_grad():
        trainer, _ = sequence_logprobs(tiny.model, batch, temperature=temperature)
    mask = batch.response_mask
    torch.testing.assert_close(batch.sampler_logprobs[mask], trainer[mask], atol=1e-4, rtol=0)
    assert batch.rows(slice(0, 2)).sampler_logprobs.shape[0] == 2  # micro-batches carry them
    greedy = sampler.generate(tiny.model, tiny.tokenizer, _prompts(tiny.tokenizer), group_size=1, greedy=True)
    assert greedy.sampler_logprobs is None
