"""checkpoint=... -> sources: model folders, training run ids, experiment:<name>, and the one-line errors."""

from __future__ import annotations

import mlflow
import pytest
from omegaconf import OmegaConf

from hicra.errors import ConfigError
from hicra.evaluation import sources

MODEL_CFG = OmegaConf.create({"name_or_path": "bundled://smollm2-135m-instruct", "dtype": "float32"})


@pytest.fixture(scope="module")
def client(fake_store):
    return mlflow.MlflowClient(tracking_uri=fake_store[0])


def resolve(checkpoint, client=None):
    return sources.resolve(checkpoint, MODEL_CFG, "smollm2_135m", client)


def test_null_is_the_base_model():
    (source,), notes = resolve(None)
    assert (source.label, source.checkpoint, source.model_path, source.run) == (
        "smollm2_135m", "bundled://smollm2-135m-instruct", None, None) and notes == []


def test_a_hub_model_is_named_after_its_id():
    (source,), _ = sources.resolve(None, OmegaConf.create({"name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"}), "hf", None)
    assert (source.label, source.checkpoint) == ("Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct")


def test_model_folder_and_run_folder(tiny_model_dir):
    (direct,), _ = resolve(str(tiny_model_dir))
    (via_run_dir,), _ = resolve(str(tiny_model_dir.parent))  # a run folder stands for its final_model/
    assert direct.model_path == via_run_dir.model_path == tiny_model_dir.resolve()
    assert direct.label == tiny_model_dir.parent.name


def test_training_run_id(fake_store, client):
    (source,), _ = resolve(fake_store[1]["grpo__none__s0"], client)
    assert source.label == "grpo__none__s0" and source.run_id == fake_store[1]["grpo__none__s0"]
    assert source.model_path.name == "final_model" and (source.model_path / "config.json").is_file()
    assert source.resolved.task.val_size == 4  # the run's own task, for benchmark=held_out


def test_experiment_takes_finished_training_runs_and_skips_those_without_a_model(fake_store, client):
    found, notes = resolve("experiment:study", client)
    assert [s.label for s in found] == ["grpo__none__s0"]
    assert len(notes) == 1 and "hicra__strategic_grams__s0" in notes[0] and "save_final_model=true" in notes[0]


@pytest.mark.parametrize("checkpoint,fragments", [
    ("/no/such/folder", ["checkpoint path '/no/such/folder' does not exist"]),
    ("not-a-run", ["'not-a-run'", "32 hex characters", "experiment:<name>"]),
    ("0" * 32, ["MLflow run '" + "0" * 32 + "' not found"]),
    ("experiment:nope", ["experiment 'nope' not found", "study"]),
    ("experiment:broken", ["experiment 'broken' has no finished training runs"]),
    ("experiment:", ["needs an experiment name"]),
])
def test_bad_checkpoints(checkpoint, fragments, client):
    with pytest.raises(ConfigError) as err:
        resolve(checkpoint, client)
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)


def test_run_without_final_model(fake_store, client):
    with pytest.raises(ConfigError, match="has no final model at .*save_final_model=true"):
        resolve(fake_store[1]["hicra__strategic_grams__s0"], client)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        resolve(str(tmp_path))


def test_run_ids_need_the_store(fake_store):
    with pytest.raises(ConfigError, match="logger=none cannot read"):
        resolve(fake_store[1]["grpo__none__s0"])
