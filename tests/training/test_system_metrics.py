"""MLflow system metrics on a run that Lightning's MLFlowLogger created (hicra/training/system_metrics.py)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import mlflow


def test_system_metrics_are_logged_to_the_logger_run(tmp_path):
    from hicra.training.system_metrics import SystemMetrics

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    logger = SimpleNamespace(run_id=run_id, _tracking_uri=uri)
    callback = SystemMetrics(every_s=0.2)
    callback.on_fit_start(SimpleNamespace(loggers=[logger]), None)
    time.sleep(1.5)
    callback.on_fit_end(None, None)
    logged = client.get_run(run_id).data.metrics
    assert "system/cpu_utilization_percentage" in logged and "system/system_memory_usage_megabytes" in logged
    steps = [m.step for m in client.get_metric_history(run_id, "system/cpu_utilization_percentage")]
    assert steps == list(range(len(steps))) and len(steps) >= 2


def test_off_or_without_an_mlflow_run_nothing_starts():
    from hicra.training.system_metrics import SystemMetrics

    callback = SystemMetrics(every_s=0)
    callback.on_fit_start(SimpleNamespace(loggers=[SimpleNamespace(run_id="x", _tracking_uri="sqlite:///x")]), None)
    assert callback._monitor is None
    callback = SystemMetrics(every_s=10)
    callback.on_fit_start(SimpleNamespace(loggers=[]), None)
    assert callback._monitor is None
