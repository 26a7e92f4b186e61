"""A tracking store that stops answering, in-process and without a model: the logger keeps every metric value and sends
it once the store answers (a short outage loses nothing), a checkpoint carries what is still unsent, an absent server
costs seconds instead of MLflow's minutes of retries, and the end of a run waits only `logger.outage_timeout_s`."""

from __future__ import annotations

import errno
import os
import socket
import time

import pytest
from support import seed_store

from hicra.tracking.outage import HTTP_LIMITS, StopOnOutage, TrackingUnavailable
from hicra.tracking.resumable_logger import ResumableMLFlowLogger


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path) -> str:
    seed_store(tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db"


def _logger(store: str, clock: Clock, run_id: str | None = None) -> ResumableMLFlowLogger:
    logger = ResumableMLFlowLogger(experiment_name="hicra", tracking_uri=store, run_id=run_id, outage_timeout_s=60)
    logger.outage.clock = clock
    _ = logger.experiment  # the run exists before the outage, as in hicra-train
    return logger


def _steps(logger, key: str) -> list[int]:
    return sorted(m.step for m in logger.experiment.get_metric_history(logger.run_id, key))


def _log(logger, steps) -> None:
    for step in steps:
        logger.log_metrics({"train/reward_mean": step / 10, "loss/policy": -step}, step=step)


def test_a_short_outage_loses_no_metric_and_says_when_it_starts_and_ends(store, unreachable, monkeypatch, capsys):
    from mlflow import MlflowClient

    clock = Clock()
    logger = _logger(store, clock)
    _log(logger, [0])
    real_log_batch = MlflowClient.log_batch
    monkeypatch.setattr(MlflowClient, "log_batch", unreachable)
    _log(logger, [1, 2, 3])  # the server is away: training goes on, nothing raised
    assert len(logger.unsent) == 6
    monkeypatch.setattr(MlflowClient, "log_batch", real_log_batch)
    _log(logger, [4])  # too soon after the failed try: kept, not tried
    assert len(logger.unsent) == 8
    clock.now += 10
    _log(logger, [5])
    assert logger.unsent == [] and not logger.outage.active
    assert _steps(logger, "train/reward_mean") == _steps(logger, "loss/policy") == [0, 1, 2, 3, 4, 5]
    err = capsys.readouterr().err
    assert err.count("does not answer") == 1 and "stops with a checkpoint if it stays away 60 s" in err
    assert "answers again after 10 s; 10 kept metric values sent" in err


def test_a_checkpoint_keeps_the_unsent_values_and_a_resume_sends_each_once(store, unreachable, monkeypatch):
    from mlflow import MlflowClient

    clock = Clock()
    logger = _logger(store, clock)
    _log(logger, [0, 1])
    monkeypatch.setattr(MlflowClient, "log_batch", unreachable)
    _log(logger, [2, 3])
    state = StopOnOutage(logger, None, None).state_dict()  # what the checkpoint at step 3 holds
    assert [entry[3] for entry in state["unsent"]] == [2, 2, 3, 3]
    monkeypatch.undo()

    resumed = _logger(store, Clock(), run_id=logger.run_id)  # a new process, the server back
    StopOnOutage(resumed, None, None).load_state_dict(state)
    _log(resumed, [3, 4])  # replayed step 3, then a new step
    assert _steps(resumed, "train/reward_mean") == [0, 1, 2, 3, 4]


def test_an_absent_server_costs_seconds_not_minutes_of_retries(monkeypatch, capsys):
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k not in HTTP_LIMITS})
    with socket.socket() as sock:  # a port where nothing listens: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    logger = ResumableMLFlowLogger(tracking_uri=f"http://127.0.0.1:{port}", run_id="0" * 32, outage_timeout_s=60)
    started = time.monotonic()
    logger.log_metrics({"train/reward_mean": 0.5}, step=7)  # MLflow alone: ~4 minutes of retries, then a raise
    assert time.monotonic() - started < 60  # a hang guard: it takes well under a second
    assert logger.outage.active and len(logger.unsent) == 1
    assert "does not answer" in capsys.readouterr().err


def test_the_end_of_a_run_waits_for_the_store_only_as_long_as_the_setting_says(store, unreachable, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    clock = Clock()
    logger = _logger(store, clock)
    monkeypatch.setattr(MlflowClient, "log_batch", unreachable)
    _log(logger, [0, 1])
    monkeypatch.setattr(time, "sleep", lambda s: setattr(clock, "now", clock.now + 15))  # 15 s a wait
    with pytest.raises(TrackingUnavailable, match=r"has not answered for 60 s \(logger.outage_timeout_s=60\): MLflow "
                                                   r"run \w+ stays RUNNING and its 4 unsent metric values \(steps 0-1\)"):
        logger.deliver(lambda: None, tmp_path / "run")
    kept = (tmp_path / "run" / "unsent_metrics.jsonl").read_text().splitlines()
    assert len(kept) == 4 and '"step": 1' in kept[-1]

    def signalled():
        raise KeyboardInterrupt  # stands for the watch's Preempted: a stop signal ends the wait at once

    again = _logger(store, clock, run_id=logger.run_id)
    _log(again, [2])  # the store still away
    with pytest.raises(KeyboardInterrupt):
        again.deliver(signalled, tmp_path / "run")


def test_an_artifact_the_store_refuses_is_said_and_named_not_raised(store, tmp_path, capsys):
    from hicra.tracking.artifacts import log_artifacts

    logger = _logger(store, Clock())
    page = tmp_path / "completions_step000001.html"
    page.write_text("<html></html>")

    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    logger.experiment.log_artifact = disk_full
    log_artifacts([logger], [page], "completions")
    assert logger.not_stored == ["completions/completions_step000001.html"]
    assert not logger.outage.active  # a refusal, not an absent server: metrics go on as usual
    line = capsys.readouterr().err.strip()
    assert line.startswith("hicra-train: could not store artifact completions/completions_step000001.html")
    assert "No space left on device" in line and "training goes on" in line


def test_a_store_lock_on_a_filesystem_without_flock_warns_and_goes_on(tmp_path, monkeypatch, capsys):
    import fcntl

    from hicra.tracking.store import store_lock

    def no_flock(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with store_lock(f"sqlite:///{tmp_path}/mlflow.db"):
        entered = True
    assert entered and "cannot be locked (No locks available); going on without the lock" in capsys.readouterr().err
