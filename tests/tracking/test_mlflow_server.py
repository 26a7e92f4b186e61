"""A real MLflow tracking server, as a team shares it: a 2-step run logs over HTTP (metrics, params, tags and
artifacts) and reads back through the MLflow client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support import TINY_RUN, run_train, seed_store


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on 127.0.0.1 with a temporary backend store and artifact root; stopped afterwards."""
    port = _free_port()
    seed_store(tmp_path / "server.db")  # a migrated empty store: the server starts in seconds, not after migrations
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db", "--artifacts-destination", str(tmp_path / "art")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, "mlflow server exited at start-up"
                assert time.monotonic() < deadline, "mlflow server did not answer /health within 120 s"
                time.sleep(0.5)
        yield url, tmp_path / "art"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn workers
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_run_logs_to_a_real_tracking_server(mlflow_server, tmp_path):
    import mlflow

    url, artifact_root = mlflow_server
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
