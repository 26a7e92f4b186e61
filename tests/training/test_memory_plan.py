"""The preflight memory plan (hicra/training/memory_plan.py, memory_check.py): hand-computed values for a known
config, the plan's parameter / gradient / optimizer / KV terms against the real tensors of a tiny model, the one-line
refusal, and what a run prints and logs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import mlflow
import pytest
import torch
from omegaconf import OmegaConf
from support import run_train

from hicra.config.instantiate import build
from hicra.errors import ConfigError
from hicra.models.loaders import build_tiny_model
from hicra.rollout import decode as decode_module
from hicra.rollout import kv_cache
from hicra.rollout.hf import HFSampler
from hicra.training.memory_check import check_memory, model_shape, run_dtypes, transformers_config
from hicra.training.memory_plan import GIB, RunShape, fits, memory_plan

QWEN25_7B = OmegaConf.create({"_target_": "hicra.models.loaders.load_pretrained", "name_or_path": "Qwen/Qwen2.5-7B"})


def qwen25_7b_parameters() -> int:
    """Qwen2 by hand: embeddings and an untied head (V x H each), per layer q/k/v (with biases), o, a gated MLP and
    two norms, one final norm."""
    V, H, I, L, kv = 152064, 3584, 18944, 28, 4 * 128
    layer = (H * H + H) + 2 * (H * kv + kv) + H * H + 3 * H * I + 2 * H
    return 2 * V * H + L * layer + H


def fsdp_run(**dtypes) -> RunShape:
    """The 7B recipe's shape: 4 ranks, 1 prompt x 8 rows per rank, 2K prompt + 16K reply, micro-batch 1."""
    return RunShape(ranks=4, sharded=True, **dtypes, optimizer_bytes=8, reference=False,
                    gradient_checkpointing=True, rollout_rows=8, val_rows=16, prompt_tokens=2048, new_tokens=16384,
                    val_new_tokens=16384, micro_batch_size=1, scoring_pass=False)


def test_plan_of_qwen2_5_7b_by_hand_and_the_review_s_out_of_memory():
    model = model_shape(transformers_config(QWEN25_7B))
    P = qwen25_7b_parameters()
    assert model.parameters == model.trainable == P == 7_615_616_512  # the published 7.61B
    # Before the bf16 fixes: fp32 gathered weights, K cached in fp32 (RoPE), V in bf16, 16 validation rows per rank.
    old = memory_plan(model, fsdp_run(weight_bytes=4, gather_bytes=4, compute_bytes=2, key_bytes=4, value_bytes=2,
                                      cast_cache=False))
    assert old.terms["weights"] == old.terms["gradients"] == P * 4 // 4 and old.terms["optimizer"] == P * 8 // 4
    assert old.terms["gathered_weights"] == P * 4
    assert old.terms["kv_cache_rollout"] == 8 * (2048 + 16384) * 28 * 4 * 128 * (4 + 2)
    assert old.terms["kv_cache_validation"] == 2 * old.terms["kv_cache_rollout"]
    assert old.peak_phase == "validation" and not fits(old, 79 * GIB)  # out of memory at the first validation
    # What the code does now under bf16-mixed with FSDP: bf16 gather, bf16 K and V, no weight casts.
    now = run_dtypes("float32", "bf16-mixed", sharded=True)
    assert now == {"weight_bytes": 4, "compute_bytes": 2, "gather_bytes": 2, "key_bytes": 2, "value_bytes": 2,
                   "cast_cache": False}
    new = memory_plan(model, fsdp_run(**now))
    assert new.terms["gathered_weights"] == P * 2 and new.terms["kv_cache_rollout"] == 8 * 18432 * 28 * 512 * 4
    assert fits(new, 79 * GIB)
    # the update: one 16K-token row's bf16 logits and their gradient, plus four fp32 (1024, V) temporaries
    assert new.terms["update_logits"] == 2 * 16384 * 152064 * 2 + 4 * 1024 * 152064 * 4


def tiny_shape_and_model(lora=None):
    cfg = OmegaConf.load("conf/model/tiny.yaml")
    cfg.lora = lora
    shape = model_shape(transformers_config(cfg), lora)
    return shape, build_tiny_model(seed=0, lora=OmegaConf.to_container(lora) if lora else None).model


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def tiny_run(shape, **overrides) -> RunShape:
    base = dict(ranks=1, sharded=False, **run_dtypes("float32", "32-true", False), optimizer_bytes=8,
                reference=False, gradient_checkpointing=False, rollout_rows=4, val_rows=2, prompt_tokens=8,
                new_tokens=6, val_new_tokens=6, micro_batch_size=2, scoring_pass=False)
    return RunShape(**base | overrides)


def test_parameters_gradients_and_adamw_state_equal_the_tensors_of_a_tiny_model():
    shape, model = tiny_shape_and_model()
    plan = memory_plan(shape, tiny_run(shape))
    assert shape.parameters == sum(p.numel() for p in model.parameters())  # tied embeddings counted once
    assert plan.terms["weights"] == tensor_bytes(model.parameters())
    optimizer = torch.optim.AdamW(model.parameters())
    model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    optimizer.step()
    assert plan.terms["gradients"] == tensor_bytes(p.grad for p in model.parameters())
    moments = [v for state in optimizer.state.values() for k, v in state.items() if k != "step"]  # not the counters
    assert plan.terms["optimizer"] == tensor_bytes(moments)


def test_lora_plan_counts_the_adapters_as_trainable():
    pytest.importorskip("peft")
    lora = OmegaConf.create({"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"})
    shape, model = tiny_shape_and_model(lora)
    assert shape.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_kv_cache_term_equals_the_decoding_cache_s_buffers(precision, monkeypatch):
    """The plan's KV term for the rows and capacity decode allocates equals the bytes of the preallocated buffers,
    in fp32 and under bf16 autocast (as Lightning's bf16-mixed): the plan's dtypes are the code's."""
    shape, _ = tiny_shape_and_model()
    bundle = build_tiny_model(seed=0)
    caches = []
    monkeypatch.setattr(decode_module, "preallocate",
                        lambda cache, capacity: caches.append(kv_cache.preallocate(cache, capacity)) or caches[-1])
    sampler = HFSampler(max_new_tokens=5, packed_linears=False)
    prompts = ["What is 2 + 2?", "Compute 3 * 7, then add 1."]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision != "32-true", cache_enabled=False):
        batch = sampler.generate(bundle.model, bundle.tokenizer, prompts, group_size=3)
    measured = tensor_bytes(t for layer in caches[0].layers for t in (layer._keys, layer._values))
    # decode's capacity: the prompt but its last token (fed by the loop) plus the reply budget
    run = tiny_run(shape, **run_dtypes("float32", precision, False), rollout_rows=6,
                   prompt_tokens=batch.prompt_ids.shape[1] - 1, new_tokens=5)
    assert memory_plan(shape, run).terms["kv_cache_rollout"] == measured


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_activations_and_logits_equal_the_tensors_an_update_forward_saves(precision, checkpointing):
    """Every tensor the update's forward keeps for its backward (autograd's saved-tensor hooks; the weights
    themselves left out) against the plan's activations + the micro-batch's logits (m x T x V x b_c): within 15%.
    Under checkpointing the plan also holds the one layer a backward recomputes, which the forward has not made."""
    from hicra.rollout.hf import RolloutBatch, sequence_logprobs

    sizes = {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4}
    cfg = OmegaConf.load("conf/model/tiny.yaml")
    cfg.update(sizes)
    shape = model_shape(transformers_config(cfg))
    model = build_tiny_model(seed=0, gradient_checkpointing=checkpointing, share_prompt_prefix=False, **sizes).model
    model.train()
    weights, saved = {p.data_ptr() for p in model.parameters()}, {}

    def keep(tensor):
        if tensor.data_ptr() not in weights:
            saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    prompt, response = torch.randint(5, 1000, (2, 40)), torch.randint(5, 1000, (2, 200))
    ones = torch.ones_like
    batch = RolloutBatch(prompt, ones(prompt, dtype=torch.bool), response, ones(response, dtype=torch.bool),
                         torch.zeros(2, dtype=torch.bool))
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision != "32-true", cache_enabled=False):
        sequence_logprobs(model, batch)
    run = tiny_run(shape, **run_dtypes("float32", precision, False), gradient_checkpointing=checkpointing,
                   micro_batch_size=2, prompt_tokens=40, new_tokens=200)
    logits = 2 * 200 * shape.vocab * run.compute_bytes
    planned = memory_plan(shape, run).terms["activations"] + logits
    assert 0.85 * planned <= sum(saved.values()) <= 1.15 * planned, (sum(saved.values()), planned)


def composed(compose_cfg, *overrides):
    cfg = compose_cfg("experiment=smoke", *overrides)
    return cfg, build(cfg.algorithm), build(cfg.rollout), len(build(cfg.task).val_examples())


def test_a_plan_that_does_not_fit_is_refused_in_one_line_naming_what_would(compose_cfg):
    cfg, algorithm, sampler, n_val = composed(compose_cfg, "rollout.max_new_tokens=2048", "micro_batch_size=4")
    planned = check_memory(cfg, algorithm, sampler, n_val, needs_entropy=False)
    peak = planned.plan.peak
    assert planned.plan.peak_phase == "update"  # 4 rows x 2048 tokens x 49k vocabulary of logits
    cfg.device_memory_gib = peak / GIB  # the plan fills 100% where 90% is usable
    with pytest.raises(ConfigError) as err:
        check_memory(cfg, algorithm, sampler, n_val, needs_entropy=False)
    line = str(err.value)
    assert "\n" not in line and "at update (update_logits" in line and "does not fit" in line
    fixes = line.split("would fit: ")[1].split("; or state device_memory_gib")[0].split("; or ")
    assert fixes[0] == "micro_batch_size=2"  # the least change first; val_batch_size would not help
    assert "rollout.max_new_tokens=1024" in fixes
    cfg.micro_batch_size = 2  # the named setting does fit
    assert check_memory(cfg, algorithm, sampler, n_val, needs_entropy=False).plan.peak < 0.9 * peak


def test_the_cli_refuses_before_any_model_or_mlflow_run(tmp_path):
    result = run_train(["experiment=smoke", "device_memory_gib=0.001"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("hicra-train: error:")]
    assert len(errors) == 1 and "memory plan:" in errors[0], result.stderr[-2000:]
    assert "no single setting fits" in errors[0]  # 1 MiB: nothing would
    for db in tmp_path.rglob("*.db"):  # no MLflow run was opened
        client = mlflow.MlflowClient(f"sqlite:///{db}")
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_a_run_prints_its_plan_and_logs_it_to_mlflow(trained_run, tmp_path):
    stdout = trained_run.result["stdout"]
    assert "hicra-train: memory plan per device" in stdout and "kv_cache_validation" in stdout
    assert "memory plan      " in stdout  # the summary's line
    client = mlflow.MlflowClient(trained_run.tracking_uri)
    path = client.download_artifacts(trained_run.run_id, "memory_plan.json", str(tmp_path))
    record = json.loads(Path(path).read_text())
    assert record["peak_bytes"] == record["phases_bytes"][record["peak_phase"]] > 0
    assert client.get_run(trained_run.run_id).data.tags["memory_plan"].endswith("per device")


def test_a_local_folder_s_config_is_read_and_an_unknown_model_skips_the_plan(compose_cfg, tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=1000).save_pretrained(tmp_path)
    cfg, algorithm, sampler, n_val = composed(compose_cfg, "model=hf", f"model.name_or_path={tmp_path}")
    planned = check_memory(cfg, algorithm, sampler, n_val, needs_entropy=False)
    layer = 2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 64 + 2 * 32  # q, o; k, v (2 KV heads of 8); gated MLP; 2 norms
    assert planned.plan.terms["weights"] == 4 * (2 * 1000 * 32 + 3 * layer + 32)  # untied head, final norm
    cfg.model.name_or_path = str(tmp_path / "absent")  # no config before loading: the load will say what is wrong
    assert check_memory(cfg, algorithm, sampler, n_val, needs_entropy=False) is None


@pytest.mark.parametrize("sleeps", [True, False])
def test_vllm_generates_inside_its_share_and_sleep_mode_gives_it_back_for_the_update(compose_cfg, sleeps):
    cfg, algorithm, _, n_val = composed(compose_cfg)
    sampler = dataclasses.make_dataclass("FakeVLLM", [("max_prompt_tokens", int), ("max_new_tokens", int),
                                                      ("val_max_new_tokens", int), ("gpu_memory_utilization", float),
                                                      ("enable_sleep_mode", bool)])(512, 24, 24, 0.5, sleeps)
    cfg.device_memory_gib = 1.0
    plan = check_memory(cfg, algorithm, sampler, n_val, needs_entropy=False).plan
    assert plan.terms["kv_cache_rollout"] == 0 and plan.terms["gathered_weights"] == 0
    assert plan.terms["vllm_engine"] == GIB // 2  # the engine's share while it generates
    assert plan.terms["vllm_asleep"] == (0 if sleeps else GIB // 2)
    state = sum(plan.terms[t] for t in ("weights", "gradients", "optimizer", "ddp_buckets", "reference"))
    assert plan.phase_bytes("generation") == state + GIB // 2 + plan.terms["weight_casts"]
    assert "vllm_asleep" in plan.phases["update"] and "vllm_engine" not in plan.phases["update"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_generation_and_update_peaks_on_a_gpu_match_the_plan():
    """A random Qwen2.5-0.5B-shaped model in fp32 under bf16 autocast (Lightning's bf16-mixed) on one GPU: the peak
    of a 16-row generation forced to its whole budget, and of one update micro-batch, against the plan's phases
    without the optimizer (no step is taken). Generation is counted tensor by tensor: within 15%; the update's
    activations are an estimate, and its temporaries are the GPU's: the plan must not be under the measured peak by
    more than 10%, nor over twice it."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from hicra.rollout.hf import RolloutBatch, sequence_logprobs

    config = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)
    shape = model_shape(config)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").cuda()
    tokenizer = build_tiny_model(seed=0).tokenizer  # any tokenizer whose ids fall inside the vocabulary
    sampler = HFSampler(max_new_tokens=1024, min_new_tokens=1024, max_prompt_tokens=64, packed_linears=False)
    prompts = ["What is 2 + 2? " * 6, "Compute 3 * 7, then add 1. " * 4]
    run = tiny_run(shape, **run_dtypes("float32", "bf16-mixed", False), rollout_rows=16, val_rows=16,
                   prompt_tokens=64, new_tokens=1024, val_new_tokens=1024, micro_batch_size=2)
    plan = memory_plan(shape, run)
    torch.cuda.synchronize(), torch.cuda.reset_peak_memory_stats()
    with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
        batch = sampler.generate(model, tokenizer, prompts, group_size=8)
    generation = torch.cuda.max_memory_allocated()
    planned = sum(plan.terms[t] for t in ("weights", "weight_casts", "kv_cache_rollout", "sampling_rollout"))
    assert 0.85 * planned <= generation <= 1.15 * planned, (generation / GIB, planned / GIB)
    model.train()
    torch.cuda.reset_peak_memory_stats()
    micro = RolloutBatch(batch.prompt_ids[:2], batch.prompt_mask[:2], batch.response_ids[:2],
                         batch.response_mask[:2], batch.truncated[:2])
    with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
        logprobs, _ = sequence_logprobs(model, micro)
        logprobs.sum().backward()
    update = torch.cuda.max_memory_allocated()
    planned = sum(plan.terms[t] for t in ("weights", "gradients", "update_logits", "activations"))
    assert 0.9 * update <= planned <= 2 * update, (update / GIB, planned / GIB)
