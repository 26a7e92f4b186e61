"""LoRA (`lora=default`): only the adapters train, the saved model is a plain transformers model, bad values fail in
one line. All on the tiny model, offline."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from support import CONF_DIR, TINY_RUN, run_train
from transformers import AutoModelForCausalLM

from hicra.config.instantiate import build
from hicra.errors import ConfigError
from hicra.models.loaders import build_tiny_model, load_pretrained
from hicra.models.lora import LORA_KEYS, adapter_free_reference, is_lora, merged_for_save

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}


def _input_ids(vocab_size: int) -> torch.Tensor:
    return torch.randint(0, vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))  # (B, L)


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _step(model, steps: int = 2) -> None:
    """Plain next-token loss and AdamW (no weight decay: a weight with no gradient must not move)."""
    ids = _input_ids(model.config.vocab_size)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(steps):  # lora_B starts at 0, so lora_A gets its first gradient on the second step
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    model.eval()


@pytest.fixture
def lora_model():
    return build_tiny_model(lora=LORA).model


# --- config -----------------------------------------------------------------------------------------------------

def test_lora_none_is_full_fine_tuning_and_default_composes_with_overrides(compose_cfg):
    for cfg in (compose_cfg(), compose_cfg("lora=none"), compose_cfg("model=tiny", "lora=none")):
        assert cfg.lora is None and cfg.model.lora is None
    cfg = compose_cfg("model=tiny", "lora=default", "lora.r=8")
    assert set(cfg.model.lora) == set(LORA_KEYS) and cfg.model.lora.r == 8 and cfg.lora.alpha == 32
    assert is_lora(build(cfg.model).model)


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF_DIR / "lora").glob("*.yaml")))
def test_every_lora_option_builds_the_tiny_model(option, compose_cfg):
    bundle = build(compose_cfg("model=tiny", f"lora={option}").model)
    assert is_lora(bundle.model) == (option != "none")


def test_eval_without_a_lora_group_builds_the_plain_model():
    from support import composer

    cfg = composer("eval")("model=tiny")
    assert cfg.model.lora is None


# --- what trains ------------------------------------------------------------------------------------------------

def test_only_the_adapters_require_grad_and_their_count_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="hicra.models.lora"):
        model = build_tiny_model(lora=LORA).model
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    # every linear layer of both blocks (7 per block), the output head excepted
    assert len(trainable) == 2 * 7 * 2 and not any("lm_head" in n for n in trainable)
    assert f"{sum(trainable.values())} of " in caplog.text


def test_a_gradient_step_changes_only_the_adapters(lora_model):
    before = {n: p.detach().clone() for n, p in lora_model.named_parameters()}
    _step(lora_model)
    changed = {n for n, p in lora_model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".lora_A." in n or ".lora_B." in n for n in changed)
    assert any(".lora_A." in n for n in changed) and any(".lora_B." in n for n in changed)


def test_gradient_checkpointing_still_reaches_every_adapter():
    model = build_tiny_model(lora=LORA, gradient_checkpointing=True).model
    model.train()
    ids = _input_ids(model.config.vocab_size)
    model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if ".lora_B." in n}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())


# --- saving and the reference -----------------------------------------------------------------------------------

def test_merged_save_loads_as_a_plain_model_with_the_same_logits(lora_model, tmp_path):
    _step(lora_model)  # non-zero adapters, so the merge has something to add
    ids = _input_ids(lora_model.config.vocab_size)
    expected = _logits(lora_model, ids)
    merged_for_save(lora_model).save_pretrained(tmp_path)
    assert is_lora(lora_model) and not (tmp_path / "adapter_config.json").exists()  # training state untouched
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert not any("lora" in n for n, _ in loaded.named_parameters())
    torch.testing.assert_close(_logits(loaded, ids), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(_logits(lora_model, ids), expected, atol=0, rtol=0)


def test_a_full_fine_tuning_model_is_saved_as_it_is():
    model = build_tiny_model().model
    assert merged_for_save(model) is model


def test_adapter_free_reference_is_the_policy_at_step_zero(lora_model):
    ids = _input_ids(lora_model.config.vocab_size)
    reference = adapter_free_reference(lora_model).eval()
    start = _logits(lora_model, ids)
    torch.testing.assert_close(reference(input_ids=ids).logits, start, atol=0, rtol=0)
    _step(lora_model)
    assert not torch.allclose(_logits(lora_model, ids), start)  # the policy moved ...
    torch.testing.assert_close(reference(input_ids=ids).logits, start, atol=0, rtol=0)  # ... its reference did not
    assert reference(input_ids=ids).logits.grad_fn is None
    with pytest.raises(TypeError):
        adapter_free_reference(build_tiny_model().model)


# --- bad values -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key,value,named", [
    ("r", 0, "lora.r=0"), ("r", 2.5, "lora.r=2.5"), ("alpha", 0, "lora.alpha=0"), ("alpha", -1.0, "lora.alpha=-1.0"),
    ("dropout", 1.0, "lora.dropout=1.0"), ("dropout", -0.1, "lora.dropout=-0.1"),
    ("dropout", 0.05, "on-policy ratio"), ("target_modules", ["q_proj", "qkv"], "'qkv'"),
    ("target_modules", "attn", "'attn'"), ("target_modules", [], "allowed: all-linear or a list of"),
    ("target_modules", ["lm_head"], "'lm_head'"),  # tied to the embeddings: a merged adapter would change them
])
def test_bad_values_are_one_line_config_errors(key, value, named):
    with pytest.raises(ConfigError, match="allowed|use ") as err:
        build_tiny_model(lora={**LORA, key: value})
    message = str(err.value)
    assert named in message and "\n" not in message
    if key == "target_modules":
        assert "q_proj" in message and "gate_proj" in message  # what is allowed, read from the model


def test_unknown_and_missing_keys_are_named():
    with pytest.raises(ConfigError, match="unknown key lora.rank"):
        build_tiny_model(lora={**LORA, "rank": 8})
    with pytest.raises(ConfigError, match="lora.alpha is missing"):
        build_tiny_model(lora={"r": 8, "dropout": 0.0, "target_modules": "all-linear"})


def test_a_bad_value_from_the_command_line_is_a_config_error(compose_cfg):
    with pytest.raises(ConfigError, match=r"lora.r=0 is not allowed"):
        build(compose_cfg("model=tiny", "lora=default", "lora.r=0").model)


def test_target_modules_takes_a_list_of_layer_names(compose_cfg):
    model = build(compose_cfg("model=tiny", "lora=default", "lora.target_modules=[q_proj,v_proj]").model).model
    adapted = {n.split(".")[-4] for n, p in model.named_parameters() if p.requires_grad}
    assert adapted == {"q_proj", "v_proj"}


def test_without_peft_lora_fails_in_one_line_and_none_still_works(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError
    with pytest.raises(ConfigError, match="needs the peft package: pip install peft; allowed without it: lora=none"):
        build_tiny_model(lora=LORA)
    assert not is_lora(build_tiny_model().model)


# --- end to end -------------------------------------------------------------------------------------------------

@pytest.mark.slow  # two in-process training runs
def test_resume_from_a_lora_checkpoint(compose_cfg, tmp_path):
    from hicra.training.run import train

    common = [*TINY_RUN, "lora=default", "logger=none", "checkpoint_every_n_steps=1"]
    first = train(compose_cfg(*common, f"paths.output_dir={tmp_path}/a"), choices={})
    ckpt = f"{first['run_dir']}/checkpoints/last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["global_step"] == 2 and any(".lora_A." in k for k in state["state_dict"])
    resumed = train(compose_cfg(*common, "trainer.max_steps=3", f"ckpt_path={ckpt}",
                                f"paths.output_dir={tmp_path}/b"), choices={})
    assert resumed["steps"] == 3


@pytest.mark.slow
def test_cli_run_with_lora_saves_a_plain_model(tmp_path):
    result = run_train([*TINY_RUN, "model=tiny", "lora=default", "trainer.max_steps=2", "logger=none",
                      "save_final_model=true"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LoRA r=16 alpha=32 on all-linear" in result.stdout + result.stderr
    final = tmp_path / "run" / "final_model"
    assert not (final / "adapter_config.json").exists()
    bundle = load_pretrained(str(final))  # as hicra-eval loads a checkpoint: from_pretrained + its tokenizer
    assert not is_lora(bundle.model) and not any("lora" in n for n, _ in bundle.model.named_parameters())


def test_a_sharded_lora_policy_is_saved_merged(lora_model, tmp_path):
    """trainer=fsdp with lora=default: final_model/ is the merged plain model (it held the adapters alone), built
    from the weights gathered from FSDP2 shards; on a 1-rank gloo mesh."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from hicra.models.lora import save_final_model
    from hicra.training.distributed import full_state_dict, shard_model

    _step(lora_model)  # non-zero adapters
    ids = _input_ids(lora_model.config.vocab_size)
    expected = _logits(lora_model, ids)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        shard_model(lora_model, init_device_mesh("cpu", (1,)))
        save_final_model(lora_model, tmp_path / "final_model", full_state_dict(lora_model))
    finally:
        dist.destroy_process_group()
    assert not (tmp_path / "final_model" / "adapter_config.json").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final_model").eval()
    assert not any("lora" in n for n, _ in loaded.named_parameters())
    torch.testing.assert_close(_logits(loaded, ids), expected, atol=1e-5, rtol=0)
