"""Sweeps and launchers: the Optuna search (conf/hparams_search/), joblib in parallel, submitit for SLURM."""

from __future__ import annotations

import mlflow
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf
from support import CONF_DIR, TINY_RUN, run_cli, run_train

from hicra.algorithms import Algorithm
from hicra.config.checks import check_group_choices
from hicra.config.instantiate import build
from hicra.errors import ConfigError
from hicra.training.run import objective


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


@pytest.mark.slow
def test_joblib_runs_two_jobs_at_once_into_one_sqlite_store(tmp_path):
    """Two processes open a fresh sqlite store at the same time: the store lock keeps its creation serial (the real
    console script: joblib's worker processes are the point)."""
    result = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY_RUN, "seed=3",
                      "algorithm.alpha=0.1,0.3", "trainer.max_steps=1"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = _runs(tmp_path)
    # the swept key in the names, though joblib's workers never saw the command line (hicra-train passes it on)
    assert sorted(r.info.run_name for r in runs) == ["s3 hicra grams alpha=0.1", "s3 hicra grams alpha=0.3"]
    assert all(r.info.status == "FINISHED" for r in runs)
