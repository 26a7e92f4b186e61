"""A real MLflow tracking server, as a team shares it (the `mlflow_server` fixture, conftest.py): a 2-step run logs
over HTTP (metrics, params, tags and artifacts) and reads back through the MLflow client."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import TINY_RUN, run_train


@pytest.mark.slow
def test_a_run_logs_to_a_real_tracking_server(mlflow_server, tmp_path):
    import mlflow

    url, artifact_root = mlflow_server.url, mlflow_server.artifact_root
    result = run_train([*TINY_RUN, "trainer.max_steps=2", f"logger.tracking_uri={url}", "logger.artifact_location=null",
                      "logger.experiment_name=team", f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]

    client = mlflow.MlflowClient(tracking_uri=url)
    (run,) = client.search_runs([client.get_experiment_by_name("team").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.max_steps"] == "2" and run.data.tags["choice.algorithm"] == "hicra"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/reward_mean"))
    assert steps == [0, 1]
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id, "config")}
    assert "config/resolved.yaml" in artifacts
    local = client.download_artifacts(run.info.run_id, "config/resolved.yaml", str(tmp_path / "download"))
    assert "max_steps: 2" in Path(local).read_text()
    assert any(artifact_root.rglob("resolved.yaml"))  # stored by the server, under its artifact root


@pytest.mark.parametrize("setting,expected", [(None, "false"), ("true", "true")])
def test_the_browser_server_starts_without_mlflows_job_runner_unless_asked(setting, expected, tmp_path, monkeypatch):
    """hicra.browser.mlflow_server (screenshots, browser tests): MLflow 3's job runner is eight more interpreters that
    tracking never uses; an explicit MLFLOW_SERVER_ENABLE_JOB_EXECUTION wins."""
    from hicra import browser

    class Started(Exception):
        pass

    def popen(command, **kwargs):
        raise Started(kwargs["env"].get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION"))

    if setting is None:
        monkeypatch.delenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", setting)
    monkeypatch.setattr(browser.subprocess, "Popen", popen)
    with pytest.raises(Started, match=f"^{expected}$"), browser.mlflow_server("sqlite:///unused.db", tmp_path / "log"):
        pass
