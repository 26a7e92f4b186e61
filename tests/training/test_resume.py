"""Crash-safe checkpoints: a run killed with SIGKILL resumes into the same MLflow run and ends exactly where an
uninterrupted run with the same seed ends (weights, optimizer state, step count, metric history, the relative
perplexity's first-step reference)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from support import HICRA_TRAIN, PROJECT_ROOT, TINY_RUN, cli_env, run_cli, run_train

from hicra.errors import ConfigError
from hicra.training.checkpointing import AtomicCheckpointIO, resolve_checkpoint

STEPS = 4  # checkpoints at 2 and 4, validation at 0, 3, 4: the kill lands mid-run with steps left to replay
RUN = [*TINY_RUN, "task._target_=support.ParityTask", "score_truncated=true", "algorithm=hicra", "planner=random", "seed=5",
       f"trainer.max_steps={STEPS}", "checkpoint_every_n_steps=2", "val_every_n_steps=3"]


def _store(tmp_path: Path) -> list[str]:
    return [f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db", f"logger.artifact_location={tmp_path}/art"]


def _kill_after_first_checkpoint(args: list[str], run_dir: Path, timeout: float = 300) -> None:
    proc = subprocess.Popen([str(HICRA_TRAIN), *args], cwd=PROJECT_ROOT, env=cli_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not (run_dir / "checkpoints" / "last.ckpt").exists():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _state(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=False)


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    import mlflow

    # The uninterrupted reference runs in this process; the killed and the resumed runs are real processes.
    straight = run_train([*RUN, *_store(tmp_path), f"hydra.run.dir={tmp_path}/straight"], tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]

    _kill_after_first_checkpoint([*RUN, *_store(tmp_path), f"hydra.run.dir={tmp_path}/killed"], tmp_path / "killed")
    killed_step = _state(tmp_path / "killed" / "checkpoints" / "last.ckpt")["global_step"]
    assert 2 <= killed_step < STEPS

    resumed = run_cli([*RUN, *_store(tmp_path), f"hydra.run.dir={tmp_path}/resumed",
                       f"ckpt_path={tmp_path}/killed/checkpoints/last.ckpt"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a, b = _state(tmp_path / "straight/checkpoints/last.ckpt"), _state(tmp_path / "resumed/checkpoints/last.ckpt")
    assert a["global_step"] == b["global_step"] == STEPS
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    opt_a, opt_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert opt_a.keys() == opt_b.keys()
    assert all(torch.equal(opt_a[i][k], opt_b[i][k]) for i in opt_a for k in opt_a[i])

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("hicra").experiment_id])
    assert len(runs) == 2  # the resumed run continued the killed one instead of starting a third
    by_dir = {Path(r.data.tags["hicra.run_dir"]).name: r for r in runs}
    resumed_run, straight_run = by_dir["resumed"], by_dir["straight"]
    assert resumed_run.info.status == "FINISHED"
    # rel_ppl_execution divides by the first step's NLL, which only the checkpoint carries across the kill
    for key in ("train/reward_mean", "loss/policy", "val/accuracy", "faults/skipped_updates",
                "hierarchy/rel_ppl_execution"):
        assert _history(client, resumed_run.info.run_id, key) == _history(client, straight_run.info.run_id, key)
    steps = [s for s, _ in _history(client, resumed_run.info.run_id, "train/reward_mean")]
    assert steps == list(range(STEPS))  # every step once: no gap, no duplicate


def test_an_interrupted_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    io, target = AtomicCheckpointIO(), tmp_path / "ckpt" / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)

    def dies_halfway(obj, f):
        f.write(b"partial bytes")
        raise KeyboardInterrupt  # stands for a kill in the middle of the write

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=False) == {"step": 1}
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # no temp file left behind


def test_ckpt_path_last_finds_the_newest_checkpoint(tmp_path):
    old = tmp_path / "runs/2026-01-01/10-00-00/checkpoints/last.ckpt"
    new = tmp_path / "multiruns/2026-01-02/09-00-00/3/checkpoints/last.ckpt"
    for i, path in enumerate((old, new)):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    assert resolve_checkpoint("last", tmp_path) == new
    assert resolve_checkpoint(str(old.parent), tmp_path) == old
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "nope.ckpt"), tmp_path)
    with pytest.raises(ConfigError, match="no last.ckpt"):
        resolve_checkpoint("last", tmp_path / "empty")
