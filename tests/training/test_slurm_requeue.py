"""SLURM time limits, preemption and requeue (conf/hydra/launcher/slurm_gpu.yaml, hicra/training/preemption.py,
`ckpt_path=auto` in hicra/training/find_checkpoint.py), with SLURM simulated: its environment variables, submitit's
real signal handlers in this process (its `scontrol requeue` recorded instead of run), and the signal sent from
inside a training step. The preset asks SLURM for the signal hicra stops on; on it the run stops at the end of the
step with a checkpoint, then submitit requeues the job; the requeued command with `ckpt_path=auto` continues the same
MLflow run, and `ckpt_path=auto` with no checkpoint starts a new one."""

from __future__ import annotations

import os
import signal

import mlflow
import pytest
import torch
from support import CONF_DIR, TINY_RUN, run_train

from hicra.training import preemption
from hicra.training.module import PolicyGradientModule

STEPS = 4
RUN = [*TINY_RUN, "task._target_=support.ParityTask", "score_truncated=true", "algorithm=hicra", "planner=random",
       "seed=5", "val_every_n_steps=3", f"trainer.max_steps={STEPS}", "checkpoint_every_n_steps=2"]
SLURM_JOB = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "hicra-train", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
             "SLURM_NODEID": "0", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1",
             "SLURM_NODELIST": "localhost", "SUBMITIT_EXECUTOR": "slurm"}
HANDLED_BY_SUBMITIT = (signal.SIGUSR2, signal.SIGTERM, signal.SIGCONT)


class Job:
    """A checkpointable submitit job, as hydra-submitit-launcher's is (its `checkpoint` resubmits itself)."""

    def __call__(self) -> None:
        pass

    def checkpoint(self):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)


def _client(tmp_path):
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")


def _only_run(tmp_path):
    client = _client(tmp_path)
    (run,) = client.search_runs([client.get_experiment_by_name("hicra").experiment_id])
    return run


def _steps(tmp_path, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in _client(tmp_path).get_metric_history(run_id, key))


def _send_on_first_training_generation(monkeypatch, signum: int) -> None:
    original, sent = PolicyGradientModule._generate, []

    def generate(self, prompts, group_size, greedy=False):
        if not greedy and not sent:
            sent.append(True)
            os.kill(os.getpid(), signum)
        return original(self, prompts, group_size, greedy)

    monkeypatch.setattr(PolicyGradientModule, "_generate", generate)


def test_the_slurm_preset_asks_for_a_signal_hicra_stops_on_and_hands_on_early_enough(tmp_path):
    """The sbatch script submitit writes from the preset: `--signal=<hicra's stop signal>@<900 s>`, longer than a
    step of the paper recipes; a job that reaches its time limit is requeued (max_num_timeout)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from submitit.slurm.slurm import SlurmJobEnvironment, _make_sbatch_string

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        launcher = compose("train", overrides=["hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu"],
                           return_hydra_config=True).hydra.launcher
    GlobalHydra.instance().clear()
    script = _make_sbatch_string(command="python -m submitit.core._submit x", folder=str(tmp_path),
                                 signal_delay_s=launcher.signal_delay_s)
    (line,) = [line for line in script.splitlines() if line.startswith("#SBATCH --signal=")]
    name, seconds = line.removeprefix("#SBATCH --signal=").split("@")
    signum = getattr(signal, f"SIG{name}")
    assert name == SlurmJobEnvironment.USR_SIG and signum in preemption.STOP_SIGNALS and signum in preemption.HANDED_ON
    assert int(seconds) >= 600 and launcher.max_num_timeout >= 1


@pytest.mark.slow  # a stopped tiny run and its requeued continuation
def test_usr2_under_submitit_checkpoints_requeues_and_auto_continues_the_mlflow_run(tmp_path, monkeypatch):
    from submitit.core.job_environment import JobEnvironment
    from submitit.core.utils import DelayedSubmission

    for key, value in {**SLURM_JOB, "SUBMITIT_FOLDER": str(tmp_path / "submitit")}.items():
        monkeypatch.setenv(key, value)
    env = JobEnvironment()
    requeued = []
    monkeypatch.setattr(type(env), "_requeue", lambda self, countdown: requeued.append(countdown))  # scontrol
    delayed = DelayedSubmission(Job())
    delayed.set_timeout(720, 3)
    env.paths.submitted_pickle.parent.mkdir(parents=True)
    delayed.dump(env.paths.submitted_pickle)  # as the submitting process left it
    submitted = env.paths.submitted_pickle.stat().st_mtime_ns
    previous = {signum: signal.getsignal(signum) for signum in HANDLED_BY_SUBMITIT}
    _send_on_first_training_generation(monkeypatch, signal.SIGUSR2)
    try:
        env._handle_signals(env.paths, delayed)  # what submitit does before it runs the job
        stopped = run_train(RUN, tmp_path)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert stopped.returncode == 128 + signal.SIGUSR2, stopped.stderr[-2000:]
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("hicra-train: stopped by SIGUSR2; checkpoint ") and "Traceback" not in stopped.stderr
    assert "checkpoint_and_try_requeue, which asked to exit (submitit: the job is requeued)" in last, last
    assert requeued == [3]  # preempted, not timed out: submitit's timeout budget is untouched
    assert env.paths.submitted_pickle.stat().st_mtime_ns != submitted  # re-pickled: the job submitit runs again
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"] == 1  # the step it was in
    run = _only_run(tmp_path)
    assert run.info.status == "KILLED"

    monkeypatch.undo()  # the requeued job: the same command, in the same run folder, with ckpt_path=auto
    for key, value in SLURM_JOB.items():
        monkeypatch.setenv(key, value)
    resumed = run_train([*RUN, "ckpt_path=auto"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {checkpoint} at step 1 (MLflow run {run.info.run_id})" in resumed.stdout
    continued = _only_run(tmp_path)
    assert continued.info.run_id == run.info.run_id and continued.info.status == "FINISHED"
    assert _steps(tmp_path, run.info.run_id, "train/reward_mean") == list(range(STEPS))  # each step once
    assert _steps(tmp_path, run.info.run_id, "val/accuracy") == [0, 3, 4]


def test_ckpt_path_auto_without_a_checkpoint_starts_a_new_run(tmp_path):
    started = run_train([*TINY_RUN, "ckpt_path=auto", "checkpoint_every_n_steps=1"], tmp_path)
    assert started.returncode == 0, started.stderr[-2000:]
    assert "resuming" not in started.stdout
    run = _only_run(tmp_path)
    assert run.info.status == "FINISHED" and _steps(tmp_path, run.info.run_id, "train/reward_mean") == [0, 1]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_a_misspelt_ckpt_path_keyword_is_refused_in_one_line(tmp_path):
    refused = run_train([*TINY_RUN, "ckpt_path=latest"], tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].endswith(
        "ckpt_path='latest' is not allowed; allowed: null, last, auto, or a checkpoint file or run folder (a path)")
