"""SIGTERM and SIGUSR1 the way schedulers mean them (hicra/training/preemption.py): in every phase of a run the
signal stops it at the next safe point with a checkpoint, marks the MLflow run KILLED, exits with 128 + the signal
number, and `ckpt_path=...` continues it to the end of an uninterrupted run's history.

The signal is sent from inside the phase (a wrapped method sends it to this process), so each case is deterministic.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from support import HELD_FILE, HICRA_TRAIN, HOLD_ENV, PROJECT_ROOT, TINY_RUN, cli_env, run_train, with_test_outputs

import hicra.training.run
from hicra.training.checkpointing import AtomicCheckpointIO
from hicra.training.module import PolicyGradientModule

STEPS = 4  # periodic checkpoints at 2 and 4, validation at 0, 3 and 4
BASE = [*TINY_RUN, "task._target_=support.ParityTask", "score_truncated=true", "algorithm=hicra", "planner=random",
        "seed=5", "val_every_n_steps=3"]
RUN = [*BASE, f"trainer.max_steps={STEPS}", "checkpoint_every_n_steps=2"]
HELD = [a.replace("ParityTask", "HeldTask") for a in BASE]  # ParityTask, held in a process given HOLD_ENV


def _signal_on_call(monkeypatch, owner, name: str, signum: int, call: int, counts=lambda *a, **k: True) -> None:
    """Make the `call`-th counted call of `owner.name` send `signum` to this process as it starts."""
    original, seen = getattr(owner, name), []

    def sends_signal(*args, **kwargs):
        if counts(*args, **kwargs):
            seen.append(True)
            if len(seen) == call:
                os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, sends_signal)


def _sampling(self, prompts, group_size, greedy=False) -> bool:
    return not greedy  # a training rollout, not a validation's greedy decoding


def _client(tmp_path: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")


def _only_run(tmp_path: Path):
    client = _client(tmp_path)
    (run,) = client.search_runs([client.get_experiment_by_name("hicra").experiment_id])
    return run


def _steps(tmp_path: Path, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in _client(tmp_path).get_metric_history(run_id, key))


def _saved_step(run_dir: Path) -> int:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]


# (phase, what sends the signal, signal, checkpoint step at the stop, resumed here). Where the stop lands decides the
# resume: after a validation (update at step 3, validation in fit) as in test_a_run_stopped_by_sigterm_resumes_exactly;
# where ModelCheckpoint just saved (checkpoint write) as the periodic checkpoint of test_resume.py's SIGKILL test; at
# the end of a step no periodic checkpoint saves (generation at step 1): resumed here.
PHASES = [
    ("generation", (PolicyGradientModule, "_generate", 1, _sampling), signal.SIGTERM, 1, True),
    ("update", (PolicyGradientModule, "_updates", 3, None), signal.SIGUSR1, 3, False),  # then the validation at 3
    ("validation-in-fit", (PolicyGradientModule, "validation_step", 2, None), signal.SIGUSR1, 3, False),
    ("checkpoint-write", (AtomicCheckpointIO, "save_checkpoint", 1, None), signal.SIGTERM, 2, False),
]


@pytest.mark.slow  # a tiny run per phase (and its resume for one)
@pytest.mark.parametrize(("phase", "sender", "signum", "stop_step", "resume"), PHASES, ids=[p[0] for p in PHASES])
def test_a_signal_in_each_phase_stops_with_a_checkpoint(phase, sender, signum, stop_step, resume, tmp_path,
                                                       monkeypatch):
    owner, name, call, counts = sender
    _signal_on_call(monkeypatch, owner, name, signum, call, counts or (lambda *a, **k: True))
    started = time.monotonic()
    stopped = run_train(RUN, tmp_path)
    assert stopped.returncode == 128 + signum, stopped.stderr[-2000:]
    assert time.monotonic() - started < 120
    assert "Traceback" not in stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1].startswith(f"hicra-train: stopped by {signal.Signals(signum).name}")
    assert _saved_step(tmp_path / "run") == stop_step
    run = _only_run(tmp_path)
    assert run.info.status == "KILLED"
    if not resume:
        return
    monkeypatch.undo()
    resumed = run_train([*RUN, f"hydra.run.dir={tmp_path}/run", "ckpt_path=last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    resumed_run = _only_run(tmp_path)  # the same MLflow run, continued
    assert resumed_run.info.run_id == run.info.run_id and resumed_run.info.status == "FINISHED"
    assert _steps(tmp_path, run.info.run_id, "train/reward_mean") == list(range(STEPS))  # each step once
    assert _steps(tmp_path, run.info.run_id, "val/accuracy") == [0, 3, 4]


def test_a_signal_during_the_step0_validation_stops_before_training(tmp_path, monkeypatch):
    """Lightning resets its SIGTERM flag when `fit` starts: without hicra's watch this run trained to the end."""
    _signal_on_call(monkeypatch, PolicyGradientModule, "validation_step", signal.SIGTERM, 1)
    stopped = run_train(RUN, tmp_path)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
    assert "no checkpoint to continue from" in stopped.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    run = _only_run(tmp_path)
    assert run.info.status == "KILLED"
    assert _steps(tmp_path, run.info.run_id, "train/reward_mean") == []  # no step was trained


def test_a_signal_while_the_model_loads_stops_before_any_mlflow_run(tmp_path, monkeypatch):
    _signal_on_call(monkeypatch, hicra.training.run, "build_module", signal.SIGUSR1, 1)
    stopped = run_train(RUN, tmp_path)
    assert stopped.returncode == 128 + signal.SIGUSR1, stopped.stderr[-2000:]
    assert stopped.stderr.strip().splitlines()[-1].startswith("hicra-train: stopped by SIGUSR1")
    client = _client(tmp_path)
    experiment = client.get_experiment_by_name("hicra")
    assert experiment is None or not client.search_runs([experiment.experiment_id])  # no run to leave RUNNING


@pytest.mark.slow  # three tiny runs
def test_a_run_stopped_by_sigterm_resumes_exactly(tmp_path, monkeypatch):
    """Weights, AdamW moments and every metric equal those of an uninterrupted run of the same seed (on CPU)."""
    straight = run_train([*RUN, f"hydra.run.dir={tmp_path}/straight"], tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]
    _signal_on_call(monkeypatch, PolicyGradientModule, "_updates", signal.SIGTERM, 3)
    stopped = run_train([*RUN, f"hydra.run.dir={tmp_path}/stopped"], tmp_path)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
    monkeypatch.undo()
    resumed = run_train([*RUN, f"hydra.run.dir={tmp_path}/stopped", "ckpt_path=last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a, b = (torch.load(tmp_path / d / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
            for d in ("straight", "stopped"))
    assert a["global_step"] == b["global_step"] == STEPS
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    opt_a, opt_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert all(torch.equal(opt_a[i][k], opt_b[i][k]) for i in opt_a for k in opt_a[i])
    client = _client(tmp_path)
    runs = {Path(r.data.tags["hicra.run_dir"]).name: r.info.run_id
            for r in client.search_runs([client.get_experiment_by_name("hicra").experiment_id])}
    for key in ("train/reward_mean", "loss/policy", "val/accuracy", "hierarchy/rel_ppl_execution"):
        history = [sorted((m.step, m.value) for m in client.get_metric_history(runs[d], key))
                   for d in ("straight", "stopped")]
        assert history[0] == history[1], key


@pytest.mark.slow  # one real process, and its resume
def test_cli_sigterm_and_a_second_process_on_the_same_run(tmp_path):
    """Through the real console script: while a run trains, a second process resuming it is refused in one line;
    SIGTERM stops the first with exit 143 and the run KILLED; `ckpt_path=last` with its run folder continues it.

    The first process holds after its first checkpoint (step 1) until the SIGTERM (support.HeldTask): it is still
    training, whatever the machine's speed, when the second process and the signal come, and stops at step 2."""
    common, run_dir = [*HELD, "checkpoint_every_n_steps=1"], f"hydra.run.dir={tmp_path}/run"
    with open(tmp_path / "first.stderr", "w") as stderr:
        command = [str(HICRA_TRAIN), *with_test_outputs([*common, "trainer.max_steps=3", run_dir], tmp_path)]
        first = subprocess.Popen(command, cwd=PROJECT_ROOT, env={**cli_env(), HOLD_ENV: "1"},
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "run" / HELD_FILE).exists():
            assert first.poll() is None and time.monotonic() < deadline, "the run ended before it held"
            time.sleep(0.05)
        second = run_train([*common, "trainer.max_steps=3", f"hydra.run.dir={tmp_path}/second",
                            f"ckpt_path={tmp_path}/run/checkpoints"], tmp_path)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"is being trained by another process (pid {first.pid} " in second.stderr.strip().splitlines()[-1]
        assert first.poll() is None, "the run ended before SIGTERM"
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    stderr = (tmp_path / "first.stderr").read_text()
    assert first.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "Traceback" not in stderr and "stopped by SIGTERM" in stderr.strip().splitlines()[-1]
    run = _only_run(tmp_path)
    assert run.info.status == "KILLED"
    assert _saved_step(tmp_path / "run") == 2  # the step in progress at the signal ended, then the stop
    resumed = run_train([*common, "trainer.max_steps=3", run_dir, "ckpt_path=last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _only_run(tmp_path).info.status == "FINISHED"
    assert _steps(tmp_path, run.info.run_id, "train/reward_mean") == [0, 1, 2]


def _watched_stop(signum: int):
    """The Preempted that leaving a SignalWatch raises after `signum` arrived inside it."""
    from hicra.errors import Preempted
    from hicra.training.preemption import SignalWatch

    with pytest.raises(Preempted) as stop, SignalWatch() as watch:
        os.kill(os.getpid(), signum)
        watch.raise_if_signalled()
    return stop.value


@pytest.mark.parametrize(("outcome", "said"), [
    (SystemExit(-1), "which asked to exit (submitit: the job is requeued)"),  # global rank 0: requeued
    (RuntimeError("Job not requeued because: timed-out too many times.\nmore"),
     "which failed: Job not requeued because: timed-out too many times."),
    (None, "handed on to"),  # another rank: submitit returns
])
def test_sigusr2_is_handed_on_to_the_handler_it_replaced_after_the_stop(outcome, said):
    """SIGUSR2 is submitit's requeue signal: hicra stops first, then the replaced handler runs once, and the stop's
    line says what it did; SIGTERM's replaced handler is left alone (a sweep's own handling learns from the exit)."""
    calls = []

    def previous_handler(signum, frame):
        calls.append(signum)
        if outcome is not None:
            raise outcome

    saved = {s: signal.signal(s, previous_handler) for s in (signal.SIGUSR2, signal.SIGTERM)}
    try:
        stop = _watched_stop(signal.SIGUSR2)
        assert stop.signum == signal.SIGUSR2 and calls == [signal.SIGUSR2]
        assert str(stop).startswith("stopped by SIGUSR2; no checkpoint") and said in str(stop), str(stop)
        assert signal.getsignal(signal.SIGUSR2) is previous_handler  # restored on leaving
        calls.clear()
        assert "handed on" not in str(_watched_stop(signal.SIGTERM)) and calls == []
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@pytest.mark.parametrize("sharded", [False, True])
def test_a_stops_line_names_the_checkpoint_whether_a_file_or_a_sharded_folder(tmp_path, sharded):
    """trainer=fsdp saves `last.ckpt` as a folder of shards: the stop's line must still name it (it used to say
    'no checkpoint to continue from' for a folder)."""
    from hicra.training.preemption import SignalWatch

    checkpoint = tmp_path / "last.ckpt"
    checkpoint.mkdir() if sharded else checkpoint.write_bytes(b"saved")
    watch = SignalWatch()
    watch.checkpoint, watch.step = checkpoint, 3
    assert watch.describe(signal.SIGTERM) == (f"stopped by SIGTERM; checkpoint {checkpoint} (saved at step 3); "
                                              f"continue with ckpt_path={checkpoint}")
    watch.checkpoint = tmp_path / "missing.ckpt"
    assert "no checkpoint to continue from" in watch.describe(signal.SIGTERM)
