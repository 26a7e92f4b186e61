"""rollout=vllm without vLLM: a one-line CLI error; with a fake `vllm` module: sampling params, layout, weight sync.
Sleep mode, isolation and seeds: test_vllm_engine.py; FSDP and LoRA syncs: test_vllm_sync.py; 2 ranks: test_vllm_ranks.py."""

from __future__ import annotations

import importlib.util
import sys
from types import SimpleNamespace

import pytest
import torch
from rollout.test_vllm_fake import PROMPTS, FakeV1LLM, canned
from support import run_train

from hicra.errors import ConfigError
from hicra.models.loaders import build_tiny_model
from hicra.rollout.vllm import MISSING_VLLM, NO_CUDA, VLLMSampler, batch_from_token_lists

HAS_VLLM = importlib.util.find_spec("vllm") is not None


# --- without vLLM --------------------------------------------------------------------------------------------


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here: rollout=vllm is valid")
def test_cli_without_vllm_fails_in_one_line(tmp_path):
    result = run_train(["rollout=vllm", "model=tiny", "logger=none"], tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("hicra-train: error:")]
    assert errors == [f"hicra-train: error: {MISSING_VLLM}"], result.stderr[-2000:]


def test_missing_vllm_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(ConfigError, match="^rollout=vllm needs the vllm package"):
        VLLMSampler()


# --- layout ----------------------------------------------------------------------------------------------------

def test_layout_left_pads_prompts_right_pads_responses_and_keeps_row_order():
    eos, pad = 2, 0
    prompts = [[11, 12, 13], [11, 12, 13], [21], [21]]  # 2 prompts x G=2, grouped
    responses = [[5, 6, eos], [7], [8, eos, 9], [eos]]
    batch = batch_from_token_lists(prompts, responses, pad, [eos])
    assert batch.prompt_ids.tolist() == [[11, 12, 13], [11, 12, 13], [0, 0, 21], [0, 0, 21]]
    assert batch.prompt_mask.tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 1], [0, 0, 1]]
    assert batch.response_ids.tolist() == [[5, 6, eos], [7, pad, pad], [8, eos, 9], [eos, pad, pad]]
    assert batch.response_mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 0, 0]]  # up to the first EOS
    assert batch.truncated.tolist() == [False, True, False, False]
    assert batch.response_ids.dtype == batch.prompt_ids.dtype == torch.long


def test_layout_when_pad_is_eos():
    """SmolLM2: pad == EOS. Padding after a short truncated row is neither counted nor taken for its EOS."""
    eos = 2
    batch = batch_from_token_lists([[9], [9]], [[5, 6, 7, 8], [5, eos]], eos, [eos])
    assert batch.response_ids.tolist() == [[5, 6, 7, 8], [5, eos, eos, eos]]
    assert batch.response_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch.truncated.tolist() == [True, False]
    short = batch_from_token_lists([[9], [9]], [[5, 6], [5, 6, 7, eos]], eos, [eos])  # stopped short, no EOS
    assert short.response_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert short.truncated.tolist() == [True, False]


def test_layout_with_several_eos_ids():
    batch = batch_from_token_lists([[1]], [[4, 7, 3, 3]], 0, [3, 7])
    assert batch.response_mask.tolist() == [[1, 1, 0, 0]] and batch.truncated.tolist() == [False]


# --- with the fake vLLM (rollout/test_vllm_fake.py) ------------------------------------------------------

def test_no_cuda_is_a_config_error(with_fake_vllm, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="^" + NO_CUDA.replace("(", r"\(").replace(")", r"\)") + "$"):
        VLLMSampler()


def test_settings_are_validated_like_hf(with_fake_vllm):
    with pytest.raises(ConfigError, match="rollout.temperature=0"):
        VLLMSampler(temperature=0)
    with pytest.raises(ConfigError, match="rollout.gpu_memory_utilization=1.5"):
        VLLMSampler(gpu_memory_utilization=1.5)
    with pytest.raises(ConfigError, match="rollout.max_model_len=100"):
        VLLMSampler(max_model_len=100, max_prompt_tokens=64, max_new_tokens=64)
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match=f"^rollout.tensor_parallel_size={bad} is not allowed"):
            VLLMSampler(tensor_parallel_size=bad)
    sampler = VLLMSampler(max_prompt_tokens=64, max_new_tokens=32, val_max_new_tokens=48)
    assert (sampler.max_new_tokens, sampler.val_max_new_tokens, sampler.max_model_len) == (32, 48, 112)
    assert (sampler.temperature, sampler.top_p, sampler.top_k, sampler.max_prompt_tokens) == (1.0, 1.0, 0, 64)


def test_training_rollout_params_and_batch(with_fake_vllm, tiny):
    sampler = VLLMSampler(temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=16, max_prompt_tokens=8,
                          gpu_memory_utilization=0.25, seed=3)
    tok, eos, G = tiny.tokenizer, tiny.tokenizer.eos_token_id, 3
    batch = sampler.generate(tiny.model, tok, PROMPTS, group_size=G)
    llm = sampler._llm
    assert llm.kwargs["model"] == llm.kwargs["tokenizer"]  # the temp folder with the policy's config and tokenizer
    assert {k: v for k, v in llm.kwargs.items() if k not in ("model", "tokenizer")} == {
        "load_format": "dummy", "dtype": "bfloat16", "gpu_memory_utilization": 0.25, "enforce_eager": False,
        "max_model_len": 8 + 16, "seed": 3, "logprobs_mode": "processed_logprobs", "tensor_parallel_size": 1,
        "enable_sleep_mode": True}  # one process: a plain engine, no external launcher
    assert llm.saved["architectures"] == ["LlamaForCausalLM"] and not llm.inference_mode_at_init
    prompts, params, loads_before = llm.requests[0]
    assert loads_before == 1 and llm.prefix_cache_resets == 1  # weights synced before sampling
    assert [(p.n, p.temperature, p.top_p, p.top_k, p.max_tokens, p.stop_token_ids, p.logprobs) for p in params] == \
        [(G, 0.7, 0.9, -1, 16, [eos], 0)] * 2
    # every request its own sampling stream, and no child's seed (vLLM: request seed + j) shared across requests
    child_seeds = [p.seed + j for p in params for j in range(G)]
    assert len(set(child_seeds)) == len(child_seeds) == 2 * G

    # Prompts: exactly HFSampler's tokenization (left padding, truncation to max_prompt_tokens, no special tokens).
    enc = tok(PROMPTS, return_tensors="pt", padding=True, truncation=True, max_length=8, add_special_tokens=False)
    assert [p["prompt_token_ids"] for p in prompts] == [row[m].tolist() for row, m in
                                                        zip(enc.input_ids, enc.attention_mask.bool())]
    assert torch.equal(batch.prompt_ids, enc.input_ids.repeat_interleave(G, dim=0))
    assert torch.equal(batch.prompt_mask, enc.attention_mask.bool().repeat_interleave(G, dim=0))
    # Responses, grouped prompt by prompt; pad == eos for SmolLM2's tokenizer.
    pad = tok.pad_token_id
    expected = [canned(i, j, eos)[0] for i in range(2) for j in range(G)]
    width = max(map(len, expected))
    assert batch.response_ids.tolist() == [r + [pad] * (width - len(r)) for r in expected]
    assert batch.response_mask.sum(dim=1).tolist() == [len(r) for r in expected]
    assert batch.truncated.tolist() == [j % 2 == 1 for _ in range(2) for j in range(G)]
    assert batch.response_ids.device == next(tiny.model.parameters()).device


def test_greedy_is_temperature_zero_one_sample_repeated(with_fake_vllm, tiny):
    sampler = VLLMSampler(top_k=5, max_new_tokens=16, val_max_new_tokens=24)
    batch = sampler.generate(tiny.model, tiny.tokenizer, PROMPTS, group_size=2, greedy=True)
    params = sampler._llm.requests[0][1]
    assert [(p.n, p.temperature, p.max_tokens) for p in params] == [(1, 0.0, 24)] * 2
    assert torch.equal(batch.response_ids[0], batch.response_ids[1]) and batch.response_ids.shape[0] == 4
    sampler.generate(tiny.model, tiny.tokenizer, PROMPTS, group_size=2)
    assert sampler._llm.requests[1][1][0].top_k == 5


def test_weights_are_synced_before_every_generation(with_fake_vllm, tiny):
    """After an optimizer step the engine gets the new weights, for validation and training rollouts alike."""
    model = build_tiny_model(seed=1).model
    sampler = VLLMSampler(max_new_tokens=8)
    sampler.generate(model, tiny.tokenizer, PROMPTS, group_size=1, greedy=True)
    llm = sampler._llm
    assert llm.loaded[0].keys() == model.state_dict().keys()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)  # fused: no tensor-version bumps
    model(input_ids=torch.tensor([[5, 6, 7]]), labels=torch.tensor([[5, 6, 7]])).loss.backward()
    optimizer.step()
    for greedy in (True, False, False):
        sampler.generate(model, tiny.tokenizer, PROMPTS, group_size=2, greedy=greedy)
    assert [r[2] for r in llm.requests] == [1, 2, 3, 4] and sampler.weight_syncs == 4
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(llm.loaded[0][name], llm.loaded[1][name])
    assert torch.equal(llm.loaded[1][name], model.state_dict()[name])


def test_weights_reach_a_v1_engine_through_collective_rpc(with_fake_vllm, tiny):
    with_fake_vllm(FakeV1LLM)
    sampler = VLLMSampler(max_new_tokens=8)
    sampler.generate(tiny.model, tiny.tokenizer, PROMPTS, group_size=2)
    assert len(sampler._llm.loaded) == 1 and sampler._llm.requests[0][2] == 1


def test_an_engine_without_a_weight_route_is_a_config_error(with_fake_vllm, tiny):
    class Opaque(FakeV1LLM):
        collective_rpc = property()  # hasattr(...) is False

    with_fake_vllm(Opaque)
    with pytest.raises(ConfigError, match="cannot copy the policy's weights"):
        VLLMSampler().generate(tiny.model, tiny.tokenizer, PROMPTS, group_size=2)


def test_engine_starts_in_process_outside_inference_mode(with_fake_vllm, tiny):
    """Lightning validates under inference mode; the engine's parameters must still be writable by later syncs."""
    import os

    sampler = VLLMSampler(max_new_tokens=8)
    with torch.inference_mode():
        sampler.generate(tiny.model, tiny.tokenizer, PROMPTS, group_size=1, greedy=True)
    assert not sampler._llm.inference_mode_at_init and os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"


def test_lora_is_supported_for_preflight():
    assert VLLMSampler.supports_lora  # hicra/training/preflight.py refuses lora=... with a sampler that says False


def test_a_completion_stopped_on_eos_keeps_its_eos():
    """Whether or not vLLM lists the stop token among the ids, the row ends in it (and so is not `truncated`)."""
    from hicra.rollout.vllm import _completion_ids

    assert _completion_ids(SimpleNamespace(token_ids=[5, 6], finish_reason="stop", stop_reason=7), [2, 7]) == [5, 6, 7]
    assert _completion_ids(SimpleNamespace(token_ids=[5, 2], finish_reason="stop", stop_reason=None), [2]) == [5, 2]
    assert _completion_ids(SimpleNamespace(token_ids=[5, 6], finish_reason="length", stop_reason=None), [2]) == [5, 6]


def test_training_rollouts_keep_vllms_logprobs_for_the_mismatch_correction(with_fake_vllm, tiny):
    """The sampled tokens' log-probs, laid out like response_ids: 0 on padding, NaN on an EOS vLLM did not score;
    greedy (validation) asks for none."""
    sampler = VLLMSampler(max_new_tokens=16, max_prompt_tokens=8)
    eos = tiny.tokenizer.eos_token_id
    batch = sampler.generate(tiny.model, tiny.tokenizer, PROMPTS, group_size=2)
    expected = [canned(i, j, eos)[0] for i in range(2) for j in range(2)]
    for row, ids in enumerate(expected):
        assert batch.sampler_logprobs[row, :len(ids)].tolist() == pytest.approx([-t / 1000 for t in ids])
        assert (batch.sampler_logprobs[row, len(ids):] == 0).all()
    assert batch.sampler_logprobs.shape == batch.response_ids.shape
    assert sampler.generate(tiny.model, tiny.tokenizer, PROMPTS, group_size=2, greedy=True).sampler_logprobs is None


def test_layout_marks_tokens_without_a_logprob():
    from hicra.rollout.vllm import batch_from_token_lists

    batch = batch_from_token_lists([[1], [1]], [[5, 6, 2], [7]], pad_id=0, eos_ids=[2],
                                   logprobs_per_row=[[-0.5, -0.25], [-1.0]])  # row 0's EOS was appended
    got = batch.sampler_logprobs
    assert got[0, :2].tolist() == [-0.5, -0.25] and got[0, 2].isnan() and got[1].tolist() == [-1.0, 0.0, 0.0]
