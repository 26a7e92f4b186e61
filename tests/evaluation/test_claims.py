"""Two hicra-eval processes on one study evaluate each training run once: a run another process has claimed is
skipped with a line, and a result another process logged after this one planned is reused, not repeated."""

from __future__ import annotations

import fcntl
import shutil

import mlflow
import pytest
from omegaconf import OmegaConf

from hicra.config.instantiate import build
from hicra.evaluation import evaluate as evaluation
from hicra.evaluation.claims import claim
from hicra.tracking.store import flatten

ARGS = ["checkpoint=experiment:study", "protocol=greedy", "limit=1", "max_new_tokens=4", "batch_size=1"]


@pytest.fixture
def study(fake_store, compose_eval, tmp_path):
    """(cfg, uri, training run id) for experiment:study in a private copy of the synthetic store."""
    uri, runs = fake_store
    shutil.copy(uri[len("sqlite:///"):], tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = compose_eval(*ARGS, f"logger.tracking_uri={uri}", f"logger.artifact_location={tmp_path}/mlartifacts")
    return cfg, uri, runs["grpo__none__s0"]


def _eval_runs(uri: str) -> list:
    client = mlflow.MlflowClient(tracking_uri=uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.`hicra.run_kind` = 'eval'")


def test_a_run_another_process_is_evaluating_is_skipped(study, tmp_path, capsys):
    cfg, uri, _ = study
    params = flatten(OmegaConf.to_container(cfg, resolve=True))
    (job,), _ = evaluation.plan(cfg, build(cfg.benchmark), build(cfg.protocol), mlflow.MlflowClient(uri), {}, params)
    assert job.claim.parent.parent == job.source.model_path.parent  # in the training run's folder
    with claim(job.claim) as held:  # the other process, mid-evaluation
        assert held
        assert evaluation.evaluate(cfg, {}, tmp_path / "eval") == []
    assert "grpo__none__s0: being evaluated by another hicra-eval" in capsys.readouterr().out
    assert _eval_runs(uri) == []
    with job.claim.open() as handle:  # released: nothing of this process holds it any more
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_result_logged_after_planning_is_reused(study, tmp_path, monkeypatch, capsys):
    cfg, uri, _ = study
    (first,) = evaluation.evaluate(cfg, {}, tmp_path / "first")  # the other process, done first

    # This process planned before that result existed, then took the claim once the other let go of it.
    real, calls = evaluation.finished_eval_runs, []

    def seen_at_planning_then_now(*args):
        calls.append(args)
        return [] if len(calls) == 1 else real(*args)

    monkeypatch.setattr(evaluation, "finished_eval_runs", seen_at_planning_then_now)
    (second,) = evaluation.evaluate(cfg, {}, tmp_path / "second")
    assert second["earlier"] and second["eval_run_id"] == first["eval_run_id"]
    assert "already evaluated" in capsys.readouterr().out
    assert len(_eval_runs(uri)) == 1
