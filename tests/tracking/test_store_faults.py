"""Faults of the MLflow store a team meets, through `hicra-train` with the tiny model: a full artifact store, a run or
an experiment deleted in the UI, a tracking server that goes away (for good, or while a SIGTERM comes). Each ends in
one line, no traceback, and nothing already written is lost."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from support import TINY_RUN, run_train

from hicra.training.callbacks import CorrectCompletionsRecorder

RUN = [*TINY_RUN, "seed=7", "trainer.max_steps=2", "checkpoint_every_n_steps=1", "val_every_n_steps=2"]
REFUSED_PAGE = "completions_step000001.html"


def _store(root: Path) -> list[str]:
    """The run's own store under `root` (named whenever a test sets another logger.* key: run_train adds it only
    when none is given)."""
    from support import seed_store

    seed_store(root / "mlflow.db")
    return [f"logger.tracking_uri=sqlite:///{root}/mlflow.db", f"logger.artifact_location={root}/mlartifacts"]


def _client(root: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")


def _the_run(root: Path):
    client = _client(root)
    (run,) = client.search_runs([client.get_experiment_by_name("hicra").experiment_id], run_view_type=3)  # all
    return run


def _one_error_line(result, *fragments: str) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("hicra-train: error: ")]
    assert all(f in line for f in fragments), line
    return line


def _no_model(monkeypatch) -> None:
    def build_module(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("hicra.training.run.build_module", build_module)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, object]:
    """A 2-step run whose artifact store was full when one completions page was uploaded."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("full_store")
    log_artifact = MlflowClient.log_artifact

    def full_for_one_page(self, run_id, local_path, artifact_path=None):
        if Path(local_path).name == REFUSED_PAGE:
            raise OSError(errno.ENOSPC, "No space left on device")
        return log_artifact(self, run_id, local_path, artifact_path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MlflowClient, "log_artifact", full_for_one_page)
        result = run_train(RUN, root)
    return root, result


@pytest.mark.slow
def test_a_full_artifact_store_leaves_a_finished_run_finished_naming_the_artifact(finished_run):
    root, result = finished_run
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if "could not store artifact" in line]
    assert f"completions/{REFUSED_PAGE}" in line and "No space left on device" in line
    run = _the_run(root)
    assert run.info.status == "FINISHED"
    assert run.data.tags["hicra.artifacts_not_stored"] == f"completions/{REFUSED_PAGE}"
    assert f"Not stored in MLflow (the files stay in the run folder): completions/{REFUSED_PAGE}" \
        in run.data.tags["mlflow.note.content"]
    assert (root / "run" / "completions" / REFUSED_PAGE).is_file()


@pytest.mark.slow
def test_resuming_a_run_deleted_in_the_ui_is_refused_before_the_model_loads(finished_run, tmp_path, monkeypatch):
    shutil.copytree(finished_run[0], tmp_path, dirs_exist_ok=True)
    run = _the_run(tmp_path)
    _client(tmp_path).delete_run(run.info.run_id)
    _no_model(monkeypatch)
    result = run_train([*RUN, "trainer.max_steps=3", f"hydra.run.dir={tmp_path}/run", "ckpt_path=last"], tmp_path)
    assert result.returncode == 2
    _one_error_line(result, f"MLflow run {run.info.run_id}, which was deleted", "nothing was changed",
                    f"mlflow runs restore --run-id {run.info.run_id}", "start a new run")
    after = _the_run(tmp_path)
    assert after.info.lifecycle_stage == "deleted" and after.info.status == "FINISHED"
    assert after.data.tags == run.data.tags


def test_training_into_an_experiment_deleted_in_the_ui_is_one_line(tmp_path, monkeypatch):
    store = _store(tmp_path)
    client = _client(tmp_path)
    client.delete_experiment(client.create_experiment("team"))
    _no_model(monkeypatch)
    result = run_train([*RUN, *store, "logger.experiment_name=team"], tmp_path)
    assert result.returncode == 2
    _one_error_line(result, "logger.experiment_name=team names an MLflow experiment that was deleted",
                    "mlflow experiments restore", "choose another logger.experiment_name")


def _on_step_end(monkeypatch, action) -> None:
    """`action(step)` at the end of each training step (after its update and checkpoint), in the training process."""
    recorded = CorrectCompletionsRecorder.on_train_batch_end

    def on_train_batch_end(self, trainer, *args):
        recorded(self, trainer, *args)
        action(trainer.global_step)

    monkeypatch.setattr(CorrectCompletionsRecorder, "on_train_batch_end", on_train_batch_end)


@pytest.mark.slow
def test_a_server_gone_for_good_stops_the_run_with_a_checkpoint_in_seconds(mlflow_server, tmp_path, monkeypatch):
    import torch

    _on_step_end(monkeypatch, lambda step: mlflow_server.stop() if step == 1 else None)
    started = time.monotonic()
    result = run_train([*TINY_RUN, "trainer.max_steps=200", "checkpoint_every_n_steps=50", "val_every_n_steps=100",
                        "completions_every_n_steps=0", f"logger.tracking_uri={mlflow_server.url}",
                        "logger.artifact_location=null", "logger.outage_timeout_s=2",
                        f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert time.monotonic() - started < 300  # a hang guard: MLflow's own retries took over 12 minutes
    assert result.returncode == 2
    assert f"tracking server {mlflow_server.url} does not answer" in result.stderr
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    line = _one_error_line(result, "has not answered for", "(logger.outage_timeout_s=2); stopped at step",
                           f"with checkpoint {ckpt}", f"continue with ckpt_path={ckpt}")
    state = torch.load(ckpt, weights_only=False)
    unsent = next(s["unsent"] for k, s in state["callbacks"].items() if "StopOnOutage" in k)
    stopped_at = int(line.split("stopped at step ")[1].split()[0])
    assert state["global_step"] == stopped_at < 200
    assert {entry[3] for entry in unsent} >= set(range(1, stopped_at))  # every step the server missed is kept


@pytest.mark.slow
def test_sigterm_during_an_outage_stops_with_a_checkpoint_and_the_resume_sends_what_was_kept(tmp_path, monkeypatch,
                                                                                              unreachable):
    from mlflow import MlflowClient

    log_batch = MlflowClient.log_batch

    def at_step_end(step: int) -> None:
        if step == 1:  # the server goes away
            monkeypatch.setattr(MlflowClient, "log_batch", unreachable)
        if step == 2:  # and the scheduler stops the job meanwhile
            os.kill(os.getpid(), signal.SIGTERM)

    _on_step_end(monkeypatch, at_step_end)
    args = [*TINY_RUN, "seed=8", "trainer.max_steps=4", "checkpoint_every_n_steps=4", "val_every_n_steps=4",
            *_store(tmp_path), "logger.outage_timeout_s=600", f"hydra.run.dir={tmp_path}/run"]
    result = run_train(args, tmp_path)
    assert result.returncode == 128 + signal.SIGTERM and "Traceback" not in result.stderr, result.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert f"stopped by SIGTERM; checkpoint {ckpt} (saved at step 2)" in result.stderr
    assert "not marked KILLED: the tracking server does not answer" in result.stderr

    monkeypatch.undo()  # the server is back, no more signals
    assert MlflowClient.log_batch is log_batch
    result = run_train([*args, "ckpt_path=last"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = _the_run(tmp_path)
    assert run.info.status == "FINISHED"
    for key in ("train/reward_mean", "loss/policy"):
        assert sorted(m.step for m in _client(tmp_path).get_metric_history(run.info.run_id, key)) == [0, 1, 2, 3]
