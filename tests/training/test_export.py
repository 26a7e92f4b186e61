"""hicra-export: a Hugging Face folder from a checkpoint (full file or sharded folder), loading with the same weights;
bad input in one line with nothing written. The console script's start and an export of a checkpoint written by two
gloo ranks: tests/training/test_sharded_checkpoint.py; `main` runs in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from support import TINY_RUN
from transformers import AutoModelForCausalLM

from hicra.config.instantiate import build
from hicra.models.lora import merged_for_save
from hicra.training.export import main
from hicra.training.resume import RUN_KEY, config_snapshot


def _trained(compose_cfg, *overrides: str):
    """(policy, record): the run's model as its config builds it, its weights moved off their init (as training
    would), and the run record a checkpoint of it carries."""
    cfg = compose_cfg(*TINY_RUN, "logger=none", *overrides)
    policy = build(cfg.model).model
    with torch.no_grad():
        for i, p in enumerate(policy.parameters()):
            p.add_(0.01 * (i + 1))  # LoRA's B starts at 0: this makes every adapter count in the merge
    return policy, {"mlflow_run_id": None, "run_dir": "/elsewhere", "config": config_snapshot(cfg)}


def _module_state(policy) -> dict:
    """The LightningModule's names (PolicyGradientModule.policy), and a KL run's reference copy beside them."""
    state = {f"policy.{k}": v.detach().clone() for k, v in policy.state_dict().items()}
    return state | {"reference.model.embed_tokens.weight": torch.zeros(2, 2)}


def _full_file(path: Path, policy, record: dict | None) -> Path:
    torch.save({"global_step": 3, "state_dict": _module_state(policy), **({RUN_KEY: record} if record else {})}, path)
    return path


def _sharded(folder: Path, policy, record: dict) -> Path:
    state = _module_state(policy)
    moments = {key: {"exp_avg": torch.zeros_like(value)} for key, value in state.items()}
    dcp.save({"state_dict": state, "optimizer_0": {"state": moments}}, checkpoint_id=folder, no_dist=True)
    torch.save({"global_step": 3, RUN_KEY: record}, folder / "meta.pt")
    return folder


def _export(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _assert_loads_as(folder: Path, expected: dict) -> None:
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.state_dict().keys() == expected.keys()
    for name, value in model.state_dict().items():
        assert torch.equal(value, expected[name]), name


@pytest.mark.parametrize("layout", ["full-file", "sharded-folder"])
def test_export_writes_a_folder_that_loads_with_the_checkpoints_weights(compose_cfg, tmp_path, capsys, layout):
    policy, record = _trained(compose_cfg)
    ckpt = (_full_file(tmp_path / "last.ckpt", policy, record) if layout == "full-file"
            else _sharded(tmp_path / "last.ckpt", policy, record))
    assert _export(capsys, ckpt, tmp_path / "hf")[0] == 0
    _assert_loads_as(tmp_path / "hf", policy.state_dict())
    written = {p.name for p in (tmp_path / "hf").iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "model.safetensors"} <= written
    assert not [p for p in tmp_path.iterdir() if ".exporting-" in p.name]  # no temp folder left


def test_a_lora_policy_is_exported_merged_as_a_plain_model(compose_cfg, tmp_path, capsys):
    pytest.importorskip("peft")
    policy, record = _trained(compose_cfg, "lora=default")
    assert any(".lora_B." in key for key in policy.state_dict())
    assert _export(capsys, _full_file(tmp_path / "last.ckpt", policy, record), tmp_path / "hf")[0] == 0
    _assert_loads_as(tmp_path / "hf", merged_for_save(policy).state_dict())  # W + scaling * B @ A, no adapters


def test_a_run_folder_stands_for_its_newest_checkpoint_and_an_empty_out_dir_is_filled(compose_cfg, tmp_path, capsys):
    policy, record = _trained(compose_cfg)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    _sharded(tmp_path / "run" / "checkpoints" / "last.ckpt", policy, record)
    (tmp_path / "hf").mkdir()
    assert _export(capsys, tmp_path / "run", tmp_path / "hf")[0] == 0
    _assert_loads_as(tmp_path / "hf", policy.state_dict())


def test_bad_input_is_one_line_and_writes_nothing(compose_cfg, tmp_path, capsys):
    policy, record = _trained(compose_cfg)
    good = _full_file(tmp_path / "last.ckpt", policy, record)
    (tmp_path / "not_a_checkpoint.ckpt").write_text("hello")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    other, _ = _trained(compose_cfg, "model.hidden_size=32")
    mismatched = _full_file(tmp_path / "mismatched.ckpt", other, record)  # a config that builds another shape
    cases = [
        ((tmp_path / "missing.ckpt", tmp_path / "a"), "checkpoint {0} does not exist; allowed: a last.ckpt file"),
        ((tmp_path / "not_a_checkpoint.ckpt", tmp_path / "b"), "is not a hicra checkpoint"),
        ((good, tmp_path / "taken"), "out_dir {1} exists and is not an empty folder; nothing was written"),
        ((good, tmp_path / "taken" / "keep.txt"), "exists and is not an empty folder"),
        ((_full_file(tmp_path / "old.ckpt", policy, None), tmp_path / "c"), "carries no run config"),
        ((mismatched, tmp_path / "d"), "does not hold the model its config builds (lm_head.weight: (49152, 32) in"),
    ]
    for args, expected in cases:
        code, err = _export(capsys, *args)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("hicra-export: error: "), (args, err)
        assert expected.format(*args) in lines[0], lines[0]
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    assert not any((tmp_path / name).exists() for name in "abcd")
    assert not [p for p in tmp_path.iterdir() if ".exporting-" in p.name]


def test_the_model_is_rebuilt_without_reading_or_initialising_weights_and_stays_tied(compose_cfg, tmp_path,
                                                                                    monkeypatch):
    """The checkpoint holds every weight: the run's model is built on the meta device (a 7B export does not also read
    the base model) and given empty storage, with the tied input and output embeddings one tensor again."""
    from hicra.models import loaders
    from hicra.training.export import load_policy_weights, rebuild_model

    policy, record = _trained(compose_cfg)
    path = _full_file(tmp_path / "last.ckpt", policy, record)
    state = torch.load(path, weights_only=True)
    built_on = []
    real_finish = loaders.finish_model
    monkeypatch.setattr(loaders, "finish_model", lambda model, *a, **k: built_on.append(
        {p.device.type for p in model.parameters()}) or real_finish(model, *a, **k))
    bundle = rebuild_model(path, state)
    assert built_on == [{"meta"}]
    model = bundle.model
    assert model.lm_head.weight is model.model.embed_tokens.weight and model.lm_head.weight.device.type == "cpu"
    load_policy_weights(model, path, state)
    assert all(torch.equal(value, policy.state_dict()[key]) for key, value in model.state_dict().items())
