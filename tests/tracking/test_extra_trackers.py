"""Trackers beside MLflow (extra_loggers=tensorboard / wandb): the same metric names as the MLflow run, MLflow still
the run's record; and the task's prompts as the MLflow run's dataset inputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import mlflow
import pytest
from support import TINY_RUN, run_train, seed_store

from hicra.tracking.dataset_input import digest


def _mlflow_run(tmp_path: Path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = mlflow.search_runs(experiment_names=["hicra"], output_format="list")
    return run


def _tensorboard_tags(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return set(accumulator.Tags()["scalars"])


def check_final_model_logged(tmp_path, run) -> None:
    """What a run with save_final_model=true logger.log_final_model=true logger.registered_model_name=hicra-smoke
    holds: the pyfunc model of its final_model/, in the Models column and the registry, loading and answering offline."""
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (model,) = client.search_logged_models([run.info.experiment_id])
    assert model.source_run_id == run.info.run_id and model.name == "model"
    (version,) = client.search_model_versions("name='hicra-smoke'")
    assert version.run_id == run.info.run_id
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    replies = mlflow.pyfunc.load_model(f"models:/{model.model_id}").predict(["What is 2 + 3?"],
                                                                            params={"max_new_tokens": 4})
    assert len(replies) == 1 and isinstance(replies[0], str)


@pytest.mark.slow
def test_trackers_beside_mlflow_get_its_metric_names_and_the_run_has_its_dataset_and_model(tmp_path, monkeypatch):
    """One tiny run (its final model logged too: test_model_logging.py) with every tracker installed here beside MLflow (make setup installs both; `make test-compat`
    neither, where this checks MLflow's dataset inputs alone). TensorBoard's event file is read back; what the wandb
    run holds is read from the run itself just before it finishes (wandb has no reader for an offline run's file)."""
    from hicra.tracking import extra_loggers

    trackers = [name for name in ("tensorboard", "wandb") if importlib.util.find_spec(name) is not None]
    monkeypatch.setenv("WANDB_MODE", "offline")  # no network, no login
    monkeypatch.setenv("WANDB_SILENT", "true")
    seen = {}

    def finish(loggers):
        for logger in loggers:
            if type(logger).__name__ == "WandbLogger":
                seen.update(name=logger.experiment.name, keys=set(logger.experiment.summary.keys()))
        real_finish(loggers)

    real_finish = extra_loggers.finish_extra_loggers
    monkeypatch.setattr("hicra.training.run.finish_extra_loggers", finish)
    chosen = [f"extra_loggers=[{','.join(trackers)}]"] if trackers else []
    model_logging = ["save_final_model=true", "logger.log_final_model=true", "logger.registered_model_name=hicra-smoke"]
    seed_store(tmp_path / "mlflow.db")  # logger.* given: run_train leaves the store to the caller
    store = [f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db", f"logger.artifact_location={tmp_path}/mlartifacts"]
    result = run_train([*TINY_RUN, *chosen, *model_logging, *store, "system_metrics_every_s=0"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = _mlflow_run(tmp_path)
    metrics = set(run.data.metrics)
    assert run.info.status == "FINISHED" and {"train/reward_mean", "val/accuracy"} <= metrics
    if "tensorboard" in trackers:
        assert _tensorboard_tags(tmp_path / "run" / "tensorboard") == metrics
    if "wandb" in trackers:  # trainer/global_step: the step axis Lightning's WandbLogger gives every wandb run
        assert {k for k in seen["keys"] if not k.startswith("_")} - {"trainer/global_step"} == metrics
        assert seen["name"] == run.info.run_name
        assert len(list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))) == 1  # for `wandb sync`
    # The task's prompts, train and validation, in the runs table's Dataset column.
    inputs = {tag.value: d.dataset for d in run.inputs.dataset_inputs for tag in d.tags
              if tag.key == "mlflow.data.context"}
    assert set(inputs) == {"training", "validation"}
    assert {d.name for d in inputs.values()} == {"four_term_sum"}  # the task option
    assert inputs["training"].digest != inputs["validation"].digest
    assert '"train_size": 64' in inputs["training"].source
    check_final_model_logged(tmp_path, run)


def test_missing_tracker_package_is_one_line_before_the_model_loads(tmp_path, monkeypatch):
    """Choosing a tracker whose package is absent: exit 2, one line naming the package and how to install it."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    result = run_train([*TINY_RUN, "extra_loggers=wandb"], tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "extra_loggers=wandb needs the wandb package" in lines[0], result.stderr[-2000:]
    assert not (tmp_path / "run" / "final_model").exists()


def test_dataset_digest_follows_the_prompts():
    from hicra.tasks import Example

    a, b = [Example("1 + 1 =", "2")], [Example("1 + 2 =", "3")]
    assert digest(a) == digest(list(a)) and digest(a) != digest(b) and len(digest(a)) == 16


def test_every_option_of_a_list_choice_must_exist():
    """extra_loggers=[tensorboard,tensorbord]: one line naming the unknown option, before Hydra composes anything."""
    from support import CONF_DIR

    from hicra.config.checks import check_group_choices
    from hicra.errors import ConfigError

    check_group_choices(["extra_loggers=[tensorboard,wandb]"], CONF_DIR)
    with pytest.raises(ConfigError, match="unknown extra_loggers 'tensorbord'; allowed: tensorboard, wandb"):
        check_group_choices(["extra_loggers=[tensorboard,tensorbord]"], CONF_DIR)


def test_a_tracker_may_be_added_or_dropped_on_resume():
    """Where the metrics also go is not the experiment: a resume may add TensorBoard or drop wandb."""
    from hicra.training.resume import is_safe_to_change

    assert is_safe_to_change("extra_loggers") and is_safe_to_change("extra_loggers.tensorboard.save_dir")
