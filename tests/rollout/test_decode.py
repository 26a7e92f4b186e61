"""The decoding loop: the same tokens as `generate` for greedy, the right distribution for sampling, rows that
finish early leave the batch without changing anyone's tokens."""

from __future__ import annotations

import math

import pytest
import torch

from hicra.models.loaders import build_tiny_model
from hicra.rollout.decode import decode, filter_logits

NEG = -math.inf


def test_filter_logits_by_hand():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert filter_logits(logits, top_k=2).tolist() == [[NEG, 3.0, 2.0, NEG]]
    probs = torch.tensor([[0.6, 0.3, 0.1]])
    assert filter_logits(probs.log(), top_p=0.5).isfinite().tolist() == [[True, False, False]]  # 0.6 >= 0.5
    assert filter_logits(probs.log(), top_p=0.7).isfinite().tolist() == [[True, True, False]]  # 0.6 < 0.7 <= 0.9
    assert filter_logits(probs.log(), top_p=1e-9).isfinite().sum() == 1  # the argmax always survives
    assert torch.equal(filter_logits(logits), logits)  # top_k=0, top_p=1: untouched


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_tiny_model(seed=0)


def _encode(tokenizer, prompts):
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    return enc.input_ids, enc.attention_mask


PROMPTS = ["What is 2 + 2?", "Compute the sum of the first three odd numbers.", "Hi", "Name a prime number above 10."]


def test_greedy_equals_generate_when_rows_finish_at_different_times(tiny):
    ids, mask = _encode(tiny.tokenizer, PROMPTS)
    pad = tiny.tokenizer.pad_token_id
    free = tiny.model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=16,
                               pad_token_id=pad, eos_token_id=[-1])[:, ids.shape[1]:]  # (4, 16), no row stops
    # "EOS" = tokens the rows emit at different positions, so rows leave the batch at different steps
    eos = sorted({int(free[0, 3]), int(free[1, 9])})
    expected = tiny.model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=16,
                                   pad_token_id=pad, eos_token_id=eos)[:, ids.shape[1]:]
    got = decode(tiny.model, ids, mask, 1, 16, eos, pad, greedy=True)
    assert torch.isin(got, torch.tensor(eos)).any(dim=1).sum() >= 2  # the test exercises early finishing
    assert torch.equal(got, expected[:, :got.shape[1]])
    assert (expected[:, got.shape[1]:] == pad).all()  # generate only padded where every row had finished


def test_groups_are_contiguous_and_each_prompt_prefilled_once(tiny):
    ids, mask = _encode(tiny.tokenizer, PROMPTS[:2])
    pad = tiny.tokenizer.pad_token_id
    greedy = decode(tiny.model, ids, mask, 3, 8, [pad], pad, greedy=True)  # (6, T)
    assert greedy.shape[0] == 6
    assert torch.equal(greedy[0], greedy[2]) and not torch.equal(greedy[2], greedy[3])


def test_sampled_first_tokens_follow_the_filtered_distribution(tiny):
    ids, mask = _encode(tiny.tokenizer, ["What is 2 + 2?"])
    pad = tiny.tokenizer.pad_token_id
    temperature, top_k, n = 0.7, 6, 6000
    with torch.no_grad():
        logits = tiny.model(input_ids=ids, attention_mask=mask).logits[:, -1].float()  # (1, V)
    expected = filter_logits(logits / temperature, top_k=top_k).softmax(-1)[0]  # (V,)
    torch.manual_seed(0)
    first = decode(tiny.model, ids, mask, n, 1, [pad], pad, temperature=temperature, top_k=top_k)[:, 0]  # (n,)
    observed = torch.bincount(first, minlength=len(expected)).float() / n
    assert observed[expected == 0].sum() == 0  # nothing outside the top-k
    assert 0.5 * (observed - expected).abs().sum() < 0.03  # total variation; ~0.015 expected at n=6000


def test_min_new_tokens_forbids_eos_before_it(tiny):
    ids, mask = _encode(tiny.tokenizer, PROMPTS)
    pad = tiny.tokenizer.pad_token_id
    first = decode(tiny.model, ids, mask, 1, 1, [pad], pad, greedy=True)[:, 0]
    eos = [int(first[0])]  # row 0's greedy first token would end it at once
    out = decode(tiny.model, ids, mask, 1, 6, eos, pad, greedy=True, min_new_tokens=3)
    assert not torch.isin(out[:, :3], torch.tensor(eos)).any()
