"""Ranks fail together (hicra/training/fail_together.py): an out-of-memory error on rank 1 of two gloo ranks ends
rank 0 within seconds, with one line naming rank 1, instead of rank 0 waiting in its next collective for as long as
rank 1's process lives (until the process group's 30-minute timeout when that exit hangs, as NCCL's can)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import mlflow
import pytest
from support import HICRA_TRAIN, PROJECT_ROOT, TINY_RUN, cli_env, with_test_outputs

pytestmark = pytest.mark.slow  # two real ranks

TWO_RANKS = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
             "prompts_per_step=2", "trainer.max_steps=3", "rollout._target_=failing_rank.OutOfMemoryOnOneRank"]
LINGER_S = 40  # how long the failing rank stays alive, connections open, after its error
BOUND_S = 15  # from rank 1's failure to rank 0's end; without the watch rank 0 waits until rank 1 is gone


def test_an_exception_on_rank_1_ends_rank_0_within_seconds_naming_rank_1(tmp_path):
    env = dict(cli_env(), HICRA_TEST_FAILING_RANK="1", HICRA_TEST_FAILING_CALL="2", HICRA_TEST_LINGER_S=str(LINGER_S),
               HICRA_TEST_FAILED_AT=str(tmp_path / "failed_at"))
    command = [str(HICRA_TRAIN), *with_test_outputs([*TINY_RUN, *TWO_RANKS], tmp_path)]
    with open(tmp_path / "stderr", "w") as stderr:  # rank 1, Lightning's child of rank 0, writes here too
        rank0 = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        rank0.wait(timeout=300)
        seconds = time.time() - float((tmp_path / "failed_at").read_text())
    finally:
        os.killpg(rank0.pid, signal.SIGKILL)  # rank 1, still lingering (and rank 0 if the test failed)
    err = (tmp_path / "stderr").read_text()
    assert rank0.returncode == 1, err[-3000:]
    assert seconds < BOUND_S, err[-3000:]
    lines = [line for line in err.splitlines() if "rank 1 of 2 failed" in line]
    assert len(lines) == 1, err[-3000:]  # one line for the job, from the lowest surviving rank
    assert lines[0].startswith("hicra-train: error: rank 1 of 2 failed: TrainingError: out of GPU memory generating "
                               "1 prompts x 4 responses"), lines[0]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FAILED"  # rank 0, which owns the MLflow run, ended it on its way out
