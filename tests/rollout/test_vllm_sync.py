"""What the vLLM engine receives from a LoRA policy (the merged weights, the policy untouched) and from an FSDP2-sharded
one (whole tensors, one parameter per load), with the fake engine (rollout/test_vllm_fake.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from rollout.test_vllm_fake import PROMPTS

from hicra.models.loaders import build_tiny_model
from hicra.rollout.vllm import VLLMSampler
from hicra.training.distributed import full_weights_for_generation, shard_model

Q = "model.layers.0.self_attn.q_proj.weight"


def lora_policy():
    """The tiny model with LoRA on q/v and a trained copy of the final norm (modules_to_save), its adapters moved
    off peft's zero start (lora_B = 0 would make every merge the identity)."""
    peft = pytest.importorskip("peft")
    policy = peft.get_peft_model(build_tiny_model(seed=0).model, peft.LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], modules_to_save=["model.norm"]))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name or ".modules_to_save." in name:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return policy


def test_a_lora_policy_syncs_exactly_its_merged_weights_and_keeps_its_adapters(with_fake_vllm, tiny):
    policy = lora_policy()
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    expected = copy.deepcopy(policy).merge_and_unload().state_dict()  # what final_model/ would hold
    sampler = VLLMSampler(max_new_tokens=8)
    sampler.generate(policy, tiny.tokenizer, PROMPTS, group_size=2)
    sampler.generate(policy, tiny.tokenizer, PROMPTS, group_size=2, greedy=True)
    llm = sampler._llm
    assert llm.saved["architectures"] == ["LlamaForCausalLM"]  # the base model's class, not PeftModelForCausalLM
    for synced in llm.loaded:
        assert synced.keys() == expected.keys()  # plain names: no base_model.model., .base_layer, lora_, copies
        for name, value in expected.items():
            assert torch.equal(synced[name], value), name
    base = before["base_model.model." + Q.replace(".weight", ".base_layer.weight")]
    assert not torch.equal(llm.loaded[0][Q], base)  # merged, not the bare base
    assert torch.equal(llm.loaded[0]["model.norm.weight"], before["base_model.model.model.norm.modules_to_save."
                                                                  "default.weight"])  # the trained copy
    assert set(llm.load_sizes) == {1}  # one tensor per load
    after = policy.state_dict()  # bit for bit: the frozen base (adapters-off reference) and the adapters
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert not any(getattr(m, "merged", False) for m in policy.modules())  # peft's own flag: nothing merged


@pytest.mark.parametrize("gathered", [False, True], ids=["sharded", "gathered_for_generation"])
def test_a_sharded_policy_syncs_whole_tensors_one_parameter_at_a_time(with_fake_vllm, tiny, one_rank_mesh,
                                                                      gathered):
    """FSDP2's state dict holds DTensor shards, also while hicra's module gathers the policy for generation: each is
    gathered alone (`full_tensor`) and handed over before the next, as a plain whole tensor."""
    bundle = build_tiny_model(seed=0)
    expected = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    shard_model(bundle.model, one_rank_mesh)
    assert all(hasattr(v, "full_tensor") for v in bundle.model.state_dict().values())  # the shards
    sampler = VLLMSampler(max_new_tokens=8)
    if gathered:
        with full_weights_for_generation(bundle.model):
            sampler.generate(bundle.model, bundle.tokenizer, PROMPTS, group_size=2)
    else:
        sampler.generate(bundle.model, bundle.tokenizer, PROMPTS, group_size=2)
    llm = sampler._llm
    (synced,) = llm.loaded
    assert synced.keys() == expected.keys() and set(llm.load_sizes) == {1}
    for name, value in expected.items():
        assert type(synced[name]) is torch.Tensor and torch.equal(synced[name], value), name
    assert llm.saved["architectures"] == ["LlamaForCausalLM"]  # not FSDP2's FSDPLlamaForCausalLM
    # a process group: vLLM's external launcher, its environment taken from the group (a file store: no address)
    assert llm.kwargs["distributed_executor_backend"] == "external_launcher"
    assert llm.env == {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": None, "MASTER_PORT": None}
