"""A real MLflow tracking server, as a team shares it, and what MLflow raises once one is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import seed_store

from hicra.browser import free_port, server_env


@dataclass
class Server:
    url: str
    artifact_root: Path
    process: subprocess.Popen

    def stop(self) -> None:
        """The server and its uvicorn workers, gone (a crash, a host taken down): connections are refused."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on 127.0.0.1 with a temporary backend store and artifact root; stopped afterwards."""
    port = free_port()
    seed_store(tmp_path / "server.db")  # a migrated empty store: the server starts in seconds, not after migrations
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db", "--artifacts-destination", str(tmp_path / "art")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True,
        env=server_env())
    server = Server(f"http://127.0.0.1:{port}", tmp_path / "art", proc)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(server.url + "/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, "mlflow server exited at start-up"
                assert time.monotonic() < deadline, "mlflow server did not answer /health within 120 s"
                time.sleep(0.5)
        yield server
    finally:
        server.stop()


def _unreachable(*args, **kwargs):
    from mlflow.exceptions import MlflowException
    from requests import ConnectionError

    try:
        raise ConnectionError("[Errno 111] Connection refused")
    except ConnectionError as err:
        raise MlflowException(f"API request to http://team:5000/api/2.0/mlflow/runs/log-batch failed with "
                              f"exception {err}") from None


@pytest.fixture
def unreachable():
    """A stand-in for an MlflowClient method: raises what MLflow's HTTP client raises once it gives up on a server
    that is gone (it wraps the network error)."""
    return _unreachable
