"""Sweeps and launchers: the Optuna search (conf/hparams_search/), joblib in parallel, submitit for SLURM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import mlflow
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf
from support import CONF_DIR, HELD_FILE, HICRA_TRAIN, HOLD_ENV, PROJECT_ROOT, TINY_RUN, cli_env, run_cli, run_train

from hicra.algorithms import Algorithm
from hicra.config.checks import check_group_choices
from hicra.config.instantiate import build
from hicra.errors import ConfigError
from hicra.training.summary import objective


def compose_with_hydra(*overrides: str):
    """The composed config with its `hydra` node (what `hicra-train ... --cfg hydra` prints)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def _runs(tmp_path, experiment="hicra"):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


# --- the objective a sweeper optimises ---

def test_objective_reads_the_last_validation_then_the_last_train_step():
    summary = {"val_history": [{"step": 0, "val/accuracy": 0.1}, {"step": 4, "val/accuracy": 0.3}],
               "train_history": [{"step": 0, "train/accuracy": 0.2}, {"step": 3, "train/accuracy": 0.5}]}
    assert objective(summary, "val/accuracy") == 0.3
    assert objective(summary, "train/accuracy") == 0.5
    assert objective(summary, None) is None
    with pytest.raises(ConfigError, match="optimized_metric='val/acc' was not logged; allowed: .*val/accuracy"):
        objective(summary, "val/acc")


def test_root_config_names_the_optimized_metric(compose_cfg):
    assert compose_cfg().optimized_metric == "val/accuracy"


# --- conf/hparams_search/hicra_optuna.yaml ---

def _search_space(cfg) -> dict[str, list]:
    """hydra.sweeper.params parsed with Hydra's override grammar: {key: values to try (interval: its ends)}."""
    space = {}
    for key, spec in cfg.hydra.sweeper.params.items():
        (override,) = OverridesParser.create().parse_overrides([f"{key}={spec}"])
        sweep = override.value()
        space[key] = list(sweep.list) if hasattr(sweep, "list") else [sweep.start, sweep.end - 1e-9]
    return space


def test_optuna_search_composes_with_tpe_maximising(compose_cfg):
    cfg = compose_with_hydra("hparams_search=hicra_optuna")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.direction == "maximize" and sweeper.n_trials == 20 and sweeper.n_jobs == 1
    assert sweeper.sampler.seed is not None and cfg.hydra.mode == RunMode.MULTIRUN
    assert set(sweeper.params) == {"algorithm.alpha", "algorithm.clip_high", "algorithm.aggregation"}


@pytest.mark.parametrize("experiment", [None, "paper/qwen3_4b_base"])
def test_every_value_of_the_search_space_builds_an_algorithm(experiment, compose_cfg):
    """Each key exists in the composed config and every value Optuna may pick passes Algorithm's own checks."""
    extra = [f"experiment={experiment}"] if experiment else []
    extra += ["task.path=unused.jsonl"] if experiment and experiment.startswith("paper/") else []
    space = _search_space(compose_with_hydra("hparams_search=hicra_optuna", *extra))
    assert space["algorithm.aggregation"] == ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"]
    assert space["algorithm.clip_high"] == [0.2, 0.28, 0.35]
    for key, values in space.items():
        for value in values:
            cfg = compose_cfg("hparams_search=hicra_optuna", *extra, f"{key}={value}")
            assert OmegaConf.select(cfg, key) == value
            assert isinstance(build(cfg.algorithm), Algorithm)


def test_unknown_search_or_launcher_is_one_line():
    with pytest.raises(ConfigError, match="^unknown hparams_search 'nope'; allowed: hicra_optuna$"):
        check_group_choices(["-m", "hparams_search=nope"], CONF_DIR)
    check_group_choices(["-m", "hparams_search=hicra_optuna", "hydra/launcher=joblib"], CONF_DIR)
    check_group_choices(["-m", "hydra/launcher=submitit_slurm", "hydra/sweeper=optuna"], CONF_DIR)


@pytest.mark.slow
def test_optuna_search_runs_two_trials_into_mlflow(tmp_path):
    result = run_train(["-m", "hparams_search=hicra_optuna", *TINY_RUN, "hydra.sweeper.n_trials=2",
                        "trainer.max_steps=1"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = _runs(tmp_path)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    alphas = {r.data.params["algorithm.alpha"] for r in runs}
    assert len(alphas) == 2 and all(0.0 <= float(a) <= 0.5 for a in alphas)
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and isinstance(results["best_value"], float)
    assert set(results["best_params"]) == {"algorithm.alpha", "algorithm.clip_high", "algorithm.aggregation"}


# --- launchers ---

@pytest.mark.parametrize("launcher,target", [("joblib", "JoblibLauncher"), ("submitit_slurm", "SlurmLauncher")])
def test_launchers_compose(launcher, target):
    cfg = compose_with_hydra(f"hydra/launcher={launcher}", "hydra.launcher.timeout=60" if launcher == "joblib" else
                             "hydra.launcher.partition=gpu")
    assert cfg.hydra.launcher._target_.endswith(target)
    assert cfg.hydra.runtime.choices["hydra/launcher"] == launcher


def test_submitit_slurm_shows_in_cfg_hydra(tmp_path):
    """Through the CLI's entry point (its checks included): no SLURM here, so print the config instead of submitting."""
    result = run_train(["--cfg", "hydra", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
                      "hydra.launcher.gpus_per_node=1"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    launcher = yaml.safe_load(result.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["partition"] == "gpu" and launcher["gpus_per_node"] == 1


JOBLIB_SWEEP = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY_RUN, "seed=3", "algorithm.alpha=0.1,0.2,0.3",
                "trainer.max_steps=3", "checkpoint_every_n_steps=1", "val_every_n_steps=3",
                "task._target_=support.HeldTask", "score_truncated=true"]  # score_truncated: the held score is called


def _session_processes(sid: int) -> list[str]:
    import psutil

    alive = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getsid(process.pid) == sid:
                alive.append(" ".join(process.info["cmdline"] or [])[:120])
        except (ProcessLookupError, PermissionError):
            pass
    return alive


@pytest.mark.slow
def test_ctrl_c_on_a_joblib_sweep_then_the_same_command_continues_it(tmp_path):
    """The real console script, joblib's worker processes being the point. Two jobs train at once (into one fresh
    sqlite store: the store lock keeps its creation serial), the third waits. Ctrl-C (SIGINT to the whole process
    group, as a terminal sends it) used to print a KeyboardInterrupt traceback, SIGKILL the workers and leave their
    runs RUNNING; now each job stops at a safe point with a checkpoint, KILLED, the third never starts, one line ends
    the sweep and no process is left. The same command with ckpt_path=last then continues jobs 0 and 1 and starts
    job 2 (it used to be refused at job 2, after job 1 had trained): three runs, each step logged once.

    Each job holds after its first checkpoint until its worker gets the SIGTERM the launcher turns Ctrl-C into
    (support.HeldTask), so Ctrl-C always finds both jobs in progress with a checkpoint, however fast or loaded the
    machine, and each stops at step 2. The continued sweep runs without the hold. Its launcher stays a real process
    too: in this one, loky's pool would outlive the sweep, and a later sweep here would take its idle workers for
    its own."""
    store = [f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db", f"logger.artifact_location={tmp_path}/art"]
    command = [str(HICRA_TRAIN), *JOBLIB_SWEEP, f"hydra.sweep.dir={tmp_path}/sweep", *store]
    with open(tmp_path / "stderr", "w") as stderr:
        sweep = subprocess.Popen(command, cwd=PROJECT_ROOT, env={**cli_env(), HOLD_ENV: "1"}, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not all((tmp_path / f"sweep/{job}/{HELD_FILE}").exists() for job in (0, 1)):
            assert sweep.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr").read_text()[-3000:]
            time.sleep(0.1)
        os.killpg(sweep.pid, signal.SIGINT)
        sweep.wait(timeout=300)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    stderr = (tmp_path / "stderr").read_text()
    assert sweep.returncode == 128 + signal.SIGINT, stderr[-3000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("hicra-train: sweep stopped by SIGINT: the jobs in progress "
                                                      "stopped at a safe point")
    deadline = time.monotonic() + 60  # joblib's resource tracker leaves as its parent's pipe closes
    while _session_processes(sweep.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _session_processes(sweep.pid) == []  # no orphaned worker
    runs = _runs(tmp_path)
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [("s3 hicra grams alpha=0.1", "KILLED"),
                                                                        ("s3 hicra grams alpha=0.2", "KILLED")]

    resumed = run_cli([*JOBLIB_SWEEP, f"hydra.sweep.dir={tmp_path}/sweep", *store, "ckpt_path=last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert re.search(r"ckpt_path=last: job 0 continues step 2, job 1 continues step 2, job 2 starts$",
                     resumed.stdout, re.MULTILINE), resumed.stdout[-3000:]
    runs = _runs(tmp_path)
    assert sorted(r.info.run_name for r in runs) == [f"s3 hicra grams alpha=0.{i}" for i in (1, 2, 3)]  # no duplicate
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    for run in runs:
        assert run.info.status == "FINISHED"
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/reward_mean")) == [0, 1, 2]


# --- continuing a sweep: which job resumes and which starts, decided for every job before the first starts ---

def test_a_continued_sweep_checks_every_job_before_the_first_starts(tmp_path):
    """Job 1's checkpoint is unusable: refused in one line naming the job, before job 0 (no checkpoint: it would
    start) runs; it used to be refused only after job 0 had trained."""
    damaged = tmp_path / "sweep" / "1" / "checkpoints" / "last.ckpt"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not a checkpoint")
    result = run_train(["-m", *TINY_RUN, "algorithm.alpha=0.1,0.3", "ckpt_path=last"], tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"hicra-train: error: job 1 of 2 (algorithm.alpha=0.3): ckpt_path={damaged} is not a hicra checkpoint (not a "
        f"file torch.save writes); it was not loaded and nothing was changed")
    assert not (tmp_path / "sweep" / "0").exists()  # job 0 never started
    assert _runs(tmp_path) == []


def test_two_jobs_of_a_continued_sweep_may_not_continue_one_run(tmp_path, compose_cfg):
    """Jobs that differ only in keys a resume may change find the same checkpoint: one run would be trained twice."""
    import torch

    from hicra.training.resume import RUN_KEY, config_snapshot

    ckpt = tmp_path / "outputs" / "runs" / "a" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"global_step": 1, "state_dict": {},
                RUN_KEY: {"mlflow_run_id": "r1", "config": config_snapshot(compose_cfg(*TINY_RUN))}}, ckpt)
    result = run_train(["-m", *TINY_RUN, "trainer.max_steps=3,4", "ckpt_path=last", f"paths.output_dir={tmp_path}/outputs",
                        f"hydra.run.dir={tmp_path}/unused"], tmp_path)  # the sweep folder is not named: a search
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"hicra-train: error: job 1 of 2 (trainer.max_steps=4) and job 0 of 2 (trainer.max_steps=3) would both continue "
        f"{ckpt} (they differ only in keys a resume may change); sweep those keys in separate commands")
