"""Crash-safe checkpoints: a run killed with SIGKILL resumes into the same MLflow run and ends exactly where an
uninterrupted run with the same seed ends (weights, optimizer state, step count, metric history, the relative
perplexity's first-step reference). A resume cannot corrupt a run: one process per run (a lock), no change to the
experiment (only hicra.training.resume.SAFE_TO_CHANGE), the MLflow run found from the checkpoint itself, and a
damaged checkpoint refused in one line with the run left as it was. Signals: tests/training/test_signals.py."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support import HELD_FILE, HICRA_TRAIN, HOLD_ENV, PROJECT_ROOT, TINY_RUN, cli_env, run_cli, run_train

from hicra.errors import ConfigError, TrainingError
from hicra.training.checkpointing import AtomicCheckpointIO
from hicra.training.find_checkpoint import checkpoint_to_resume, resolve_checkpoint
from hicra.training.resume import RUN_KEY, config_snapshot, resume_point
from hicra.training.run_lock import RunLocks

STEPS = 2  # checkpoints at 1 and 2, validation at 0 and 2: the kill lands mid-run with a step and a validation to replay
RUN = [*TINY_RUN, "task._target_=support.HeldTask", "score_truncated=true", "algorithm=hicra", "planner=random", "seed=5",
       f"trainer.max_steps={STEPS}", "checkpoint_every_n_steps=1", "val_every_n_steps=2"]  # HeldTask: ParityTask


def _store(tmp_path: Path) -> list[str]:
    return [f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db", f"logger.artifact_location={tmp_path}/art"]


def _kill_after_first_checkpoint(args: list[str], run_dir: Path, timeout: float = 300) -> None:
    """Run `hicra-train args` held after its first checkpoint (support.HeldTask), and SIGKILL it there."""
    proc = subprocess.Popen([str(HICRA_TRAIN), *args], cwd=PROJECT_ROOT, env={**cli_env(), HOLD_ENV: "1"},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not (run_dir / HELD_FILE).exists():
        assert proc.poll() is None, "the run ended before it held"
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
    """The uninterrupted reference runs in this process; the killed and the resumed runs are real processes. The
    resume must be a fresh interpreter: what it continues has to come from the checkpoint alone, and this process
    holds the state (RNG, module-level caches) the reference run left, the very state the killed run had."""
    import mlflow

    straight = run_train([*RUN, *_store(tmp_path), f"hydra.run.dir={tmp_path}/straight"], tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]

    _kill_after_first_checkpoint([*RUN, *_store(tmp_path), f"hydra.run.dir={tmp_path}/killed"], tmp_path / "killed")
    killed_step = _state(tmp_path / "killed" / "checkpoints" / "last.ckpt")["global_step"]
    assert killed_step == 1 < STEPS  # held in the step after its first checkpoint

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


def _disk_fills_up(obj, f):
    f.write(b"partial bytes")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io, target = AtomicCheckpointIO(), tmp_path / "ckpt" / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)
    monkeypatch.setattr(torch, "save", _disk_fills_up)
    with pytest.raises(TrainingError, match=rf"^cannot write checkpoint {target} \(No space left on device\); the "
                                            rf"previous checkpoint is intact: .*continue with ckpt_path={target}$"):
        io.save_checkpoint({"step": 2}, target)
    with pytest.raises(TrainingError, match="no checkpoint of this run was written yet"):
        io.save_checkpoint({"step": 1}, tmp_path / "new" / "last.ckpt")
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # the partial temp file is gone (its space too)


@pytest.mark.slow  # a tiny run
def test_a_run_whose_disk_fills_up_stops_in_one_line(tmp_path, monkeypatch):
    saves = []

    def second_save_fails(obj, f):
        saves.append(1)
        return _disk_fills_up(obj, f) if len(saves) == 2 else torch.serialization.save(obj, f)

    monkeypatch.setattr(torch, "save", second_save_fails)
    result = run_train([*FINISHED, "trainer.max_steps=3"], tmp_path)
    monkeypatch.undo()
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert result.stderr.strip().splitlines()[-1] == (
        f"hicra-train: error: cannot write checkpoint {ckpt} (No space left on device); the previous checkpoint is "
        f"intact: free space (or fix the folder) and continue with ckpt_path={ckpt}")
    assert _state(ckpt)["global_step"] == 1


def _checkpoints_oldest_first(*paths: Path) -> None:
    """A stand-in last.ckpt at each path, each one second newer than the one before."""
    for i, path in enumerate(paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))


def _checkpoint(path: Path, step: int, run_id: str | None, config: dict | None) -> Path:
    """A small checkpoint as hicra writes one: its step and run record (the config it was trained with)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {RUN_KEY: {"mlflow_run_id": run_id, "config": config}} if config is not None else {}
    torch.save({"global_step": step, "state_dict": {}, **record}, path)
    os.utime(path, (1_000_000 + step, 1_000_000 + step))
    return path


def test_ckpt_path_names_a_file_or_a_run_folder(tmp_path):
    ckpt = _checkpoint(tmp_path / "runs/a/checkpoints/last.ckpt", 2, "r1", {})
    assert resolve_checkpoint(str(ckpt), tmp_path) == ckpt
    assert resolve_checkpoint(str(ckpt.parent), tmp_path) == ckpt
    assert resolve_checkpoint(str(ckpt.parent.parent), tmp_path) == ckpt  # the run folder
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "nope.ckpt"), tmp_path)


def test_a_folder_of_other_files_is_named_as_such(tmp_path):
    """It was reported as "does not exist" though it does."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    with pytest.raises(ConfigError, match=rf"^ckpt_path={tmp_path}/notes is a folder without a checkpoint "
                                          rf"\(no last.ckpt in it or in its checkpoints/\)"):
        resolve_checkpoint(str(tmp_path / "notes"), tmp_path)


def test_ckpt_path_last_takes_only_your_checkpoint_of_this_experiment(compose_cfg, tmp_path, capsys):
    """Under a shared outputs/ folder, the newest last.ckpt may be anyone's, of any experiment: never taken for that.
    A checkpoint of the same run in two folders (a run resumed into a new folder) is one run: the later step."""
    config = config_snapshot(compose_cfg(*TINY_RUN))
    other_seed = config_snapshot(compose_cfg(*TINY_RUN, "seed=9"))
    mine = _checkpoint(tmp_path / "runs/a/checkpoints/last.ckpt", 2, "r1", config)
    _checkpoint(tmp_path / "runs/b/checkpoints/last.ckpt", 5, "r2", other_seed)  # newer, another experiment
    _checkpoint(tmp_path / "runs/c/checkpoints/last.ckpt", 6, None, None)  # newer, no run record: unknown experiment
    (tmp_path / "runs/d/checkpoints").mkdir(parents=True)
    (tmp_path / "runs/d/checkpoints/last.ckpt").write_bytes(b"garbage")  # unreadable: skipped, not fatal
    assert resolve_checkpoint("last", tmp_path, config=config) == mine
    continued = _checkpoint(tmp_path / "multiruns/x/0/checkpoints/last.ckpt", 4, "r1", config)  # r1, resumed
    assert resolve_checkpoint("last", tmp_path, config=config) == continued

    _checkpoint(tmp_path / "runs/e/checkpoints/last.ckpt", 1, "r3", config)  # a second run of this experiment
    with pytest.raises(ConfigError, match=r"^ckpt_path=last is ambiguous: 2 runs under .* were trained with this "
                                          r"experiment \(.*runs/e/checkpoints/last.ckpt at step 1, .*multiruns/x/0/"
                                          r"checkpoints/last.ckpt at step 4\); pass ckpt_path=<one of them>"):
        resolve_checkpoint("last", tmp_path, config=config)


def test_ckpt_path_last_never_opens_another_users_checkpoint(compose_cfg, tmp_path, monkeypatch):
    config = config_snapshot(compose_cfg(*TINY_RUN))
    _checkpoint(tmp_path / "runs/a/checkpoints/last.ckpt", 2, "r1", config)
    _checkpoint(tmp_path / "multiruns/b/1/checkpoints/last.ckpt", 3, "r2", config)
    me = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: me + 1)  # every file now belongs to someone else
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("another user's checkpoint was opened"))
    with pytest.raises(ConfigError, match=r"^ckpt_path=last: none of the 2 checkpoints under .* is yours and trained "
                                          r"with this experiment; 2 belong to other users; pass ckpt_path=<file>"):
        resolve_checkpoint("last", tmp_path, config=config)
    with pytest.raises(ConfigError, match="none of the 0 checkpoints"):
        resolve_checkpoint("last", tmp_path / "empty", config=config)
    # A job of a sweep continued with ckpt_path=last starts when it has no checkpoint of its own
    assert resolve_checkpoint("last", tmp_path, config=config, sweep_job=True) is None


def test_ckpt_path_last_means_the_run_folder_the_command_names(tmp_path):
    named = tmp_path / "runs/mine/checkpoints/last.ckpt"
    newer = tmp_path / "runs/someone_else/checkpoints/last.ckpt"
    _checkpoints_oldest_first(named, newer)
    assert resolve_checkpoint("last", tmp_path, run_dir=named.parent.parent) == named
    with pytest.raises(ConfigError, match=r"ckpt_path=last: no last.ckpt in the run folder the command names"):
        resolve_checkpoint("last", tmp_path, run_dir=tmp_path / "runs/new")
    assert resolve_checkpoint("last", tmp_path, run_dir=tmp_path / "runs/new", sweep_job=True) is None


def test_the_newest_checkpoint_of_a_run_folder_is_the_one_at_the_highest_step(tmp_path):
    """A copied run folder resumed by an older hicra holds `last-v1.ckpt` (Lightning's version counter) beside a
    stale `last.ckpt`; the copy's file times say nothing (cp without -p)."""
    run = tmp_path / "copy"
    newer = _checkpoint(run / "checkpoints/last-v1.ckpt", 3, "r1", {})
    _checkpoint(run / "checkpoints/last.ckpt", 2, "r1", {})
    os.utime(newer, (0, 0))
    assert resolve_checkpoint("last", tmp_path, run_dir=run) == newer
    assert resolve_checkpoint(str(run), tmp_path) == newer
    # continuing it in its own folder overwrites nothing it should not: the run writes last.ckpt there
    assert checkpoint_to_resume("last", run, tmp_path, run, {}, sweep_job=False) == newer


# --- one process per run ----------------------------------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from pathlib import Path
from hicra.training.run_lock import RunLocks
with RunLocks() as locks:
    locks.acquire(Path(sys.argv[1]))
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_process_is_refused_and_a_killed_holders_lock_is_taken_over(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], cwd=PROJECT_ROOT, env=cli_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with RunLocks() as locks, pytest.raises(ConfigError, match=rf"is being trained by another process "
                                                                   rf"\(pid {holder.pid} on "):
            locks.acquire(folder)
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed trainer: its lock file stays behind, its lock does not
        holder.wait()
    assert (folder / "train.lock").is_file()
    with RunLocks() as locks:
        locks.acquire(folder)
        with RunLocks() as other, pytest.raises(ConfigError, match=f"pid {os.getpid()} "):
            other.acquire(folder)  # a lock is a lock within one process too: two train() calls cannot share a run
    with RunLocks() as locks:
        locks.acquire(folder)  # released when the first `with` ended


# --- what a resume may change, and what it may not --------------------------------------------------------------
# One finished tiny run (2 steps, a checkpoint each step); each test works on its own copy of it.

FINISHED = [*TINY_RUN, "seed=3", "trainer.max_steps=2", "checkpoint_every_n_steps=1", "val_every_n_steps=2"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finished")
    result = run_train(FINISHED, root)
    assert result.returncode == 0, result.stderr[-2000:]
    return root


@pytest.fixture
def finished_copy(finished_run, tmp_path) -> Path:
    shutil.copytree(finished_run, tmp_path, dirs_exist_ok=True)
    return tmp_path


def _resume(root: Path, *overrides: str):
    return run_train([*FINISHED, f"hydra.run.dir={root}/run", "ckpt_path=last", *overrides], root)


def _the_run(root: Path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("hicra").experiment_id])
    return client, run


def _refused_in_one_line(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("hicra-train: error: ") and all(f in line for f in fragments), line


@pytest.mark.parametrize(("overrides", "named"), [
    (["algorithm=grpo", "planner=none"], ["algorithm.needs_planning_mask (True -> False)", "planner._target_"]),
    (["algorithm.group_size=8"], ["algorithm.group_size (4 -> 8)"]),
    (["model.hidden_size=32"], ["model.hidden_size (64 -> 32)"]),
    (["seed=4"], ["seed (3 -> 4)"]),
], ids=["algorithm", "group_size", "model", "seed"])
def test_a_resume_that_changes_the_experiment_is_refused(finished_copy, overrides, named):
    _, before = _the_run(finished_copy)
    result = _resume(finished_copy, *overrides)
    _refused_in_one_line(result, "was trained with another experiment", *named)
    _, after = _the_run(finished_copy)
    assert after.info.status == "FINISHED" and after.data.tags == before.data.tags  # nothing re-tagged


@pytest.mark.slow  # a whole training run or a fresh interpreter (make test-fast leaves it out)
def test_a_resume_may_extend_and_change_cadence_and_says_so(finished_copy):
    """Also: the run folder here is a copy (`paths.*` may change on resume), resumed twice. Lightning used to write
    `last-v1.ckpt` beside the copied `last.ckpt` at the first resume, and the second `ckpt_path=last` took the stale
    `last.ckpt`: it retrained the steps since, and MLflow kept their first values."""
    result = _resume(finished_copy, "trainer.max_steps=3", "val_every_n_steps=1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trainer.max_steps (2 -> 3), val_every_n_steps (2 -> 1)" in result.stdout  # and logger.*: a copied store
    client, run = _the_run(finished_copy)  # the same run, continued: still one in the store
    assert "trainer.max_steps (2 -> 3), val_every_n_steps (2 -> 1)" in run.data.tags["hicra.resume_changes"]
    assert run.data.params["algorithm.group_size"] == "4"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/reward_mean")) == [0, 1, 2]

    second = _resume(finished_copy, "trainer.max_steps=4")
    assert second.returncode == 0, second.stderr[-2000:]
    folder = finished_copy / "run" / "checkpoints"
    assert f"resuming {folder / 'last.ckpt'} at step 3 " in second.stdout
    assert sorted(p.name for p in folder.glob("*.ckpt")) == ["last.ckpt"]  # one checkpoint, not one per resume
    assert _state(folder / "last.ckpt")["global_step"] == 4
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/reward_mean")) == [0, 1, 2, 3]
    assert "dirpath has changed" not in result.stderr + second.stderr  # Lightning's warning about the move


@pytest.mark.parametrize("damage", ["deleted", "garbage"])
def test_a_lost_run_json_is_recovered_from_the_checkpoint(finished_copy, damage):
    record = finished_copy / "run" / "checkpoints" / "run.json"
    record.unlink() if damage == "deleted" else record.write_text("{not json")
    result = _resume(finished_copy, "trainer.max_steps=3")
    assert result.returncode == 0, result.stderr[-2000:]
    client, run = _the_run(finished_copy)  # continued, not forked into a new param-less run
    assert run.data.params["seed"] == "3"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/reward_mean")) == [0, 1, 2]


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_checkpoint_stops_in_one_line_and_leaves_the_run_finished(finished_copy, damage):
    ckpt = finished_copy / "run" / "checkpoints" / "last.ckpt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    result = _resume(finished_copy, "trainer.max_steps=3")
    _refused_in_one_line(result, f"ckpt_path={ckpt} is damaged", "nothing was changed")
    assert _the_run(finished_copy)[1].info.status == "FINISHED"


def test_a_model_of_another_size_is_refused_for_a_checkpoint_without_its_config(finished_copy):
    """Checkpoints written before they carried their config: the weights' shapes still tell."""
    ckpt = finished_copy / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    del state[RUN_KEY]
    torch.save(state, ckpt)
    result = _resume(finished_copy, "model.hidden_size=32", "model.intermediate_size=64")
    _refused_in_one_line(result, f"ckpt_path={ckpt} holds another model", "in the checkpoint")
    assert _the_run(finished_copy)[1].info.status == "FINISHED"


def test_a_checkpoint_that_cannot_name_its_mlflow_run_is_refused_not_forked(compose_cfg, tmp_path):
    cfg = compose_cfg(*TINY_RUN)  # MLflow on
    no_mlflow, no_record = tmp_path / "a" / "last.ckpt", tmp_path / "b" / "last.ckpt"
    for path, state in ((no_mlflow, {RUN_KEY: {"mlflow_run_id": None, "config": config_snapshot(cfg)}}),
                        (no_record, {})):  # a checkpoint from before run records, its run.json lost
        path.parent.mkdir()
        torch.save({"state_dict": {}, "global_step": 2, **state}, path)
    with pytest.raises(ConfigError, match=r"was trained without MLflow \(logger=none\); resume it with logger=none"):
        resume_point(no_mlflow, cfg, run_json=None)
    with pytest.raises(ConfigError, match="cannot tell which MLflow run it belongs to"):
        resume_point(no_record, cfg, run_json=None)


def test_a_key_newer_than_the_checkpoint_is_no_change_while_its_feature_is_off():
    """Every new option ships off (lr_schedule null, device_memory_gib null, a 0 buffer, 'none'): a checkpoint written
    before it existed was trained with the feature off, so it still resumes; switched on, it is an experiment change."""
    from hicra.training.resume import config_changes

    before = {"seed": 1, "algorithm.alpha": 0.2}
    off = {"lr_schedule": None, "device_memory_gib": None, "algorithm.overlong_buffer": 0,
           "algorithm.sampler_correction": "none", "algorithm.exclude_x": False}
    assert config_changes(before, {**before, **off}) == ({}, {})
    unsafe, _ = config_changes(before, {**before, "algorithm.overlong_buffer": 64, "lr_schedule.decay": "cosine"})
    assert unsafe == {"algorithm.overlong_buffer": ("(absent)", 64), "lr_schedule.decay": ("(absent)", "cosine")}
    assert config_changes({**before, "lr_schedule": None}, before)[0] == {"lr_schedule": (None, "(absent)")}
