"""Ctrl-C (SIGINT) ends a run KILLED in every phase, as SIGTERM does: it was stopped from outside, nothing failed.

Inside fit, Lightning catches the KeyboardInterrupt itself and finalizes its loggers with "failed" before exiting
with status 1; outside fit the interrupt reaches hicra's own handler. Both must leave the same status.
"""

from __future__ import annotations

import pytest
from support import TINY_RUN, run_train

from hicra.training.module import PolicyGradientModule


def _interrupt_on_first_call(monkeypatch, name: str) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # what Python raises on SIGINT, wherever the main thread is

    monkeypatch.setattr(PolicyGradientModule, name, interrupted)


def _only_run(tmp_path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("hicra").experiment_id])
    return run


@pytest.mark.slow  # a tiny run up to its first rollout
@pytest.mark.parametrize("phase", ["_generate", "validation_step"])
def test_ctrl_c_inside_fit_ends_the_run_killed_not_failed(monkeypatch, tmp_path, phase):
    _interrupt_on_first_call(monkeypatch, phase)
    result = run_train([*TINY_RUN, "trainer.max_steps=2"], tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert _only_run(tmp_path).info.status == "KILLED"
