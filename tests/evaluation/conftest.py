"""Fixtures for hicra-eval: a saved tiny model, a synthetic MLflow store with training runs, the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from support import PROJECT_ROOT, composer, run_in_process, with_test_outputs

HICRA_EVAL = Path(sys.executable).parent / "hicra-eval"
# A held-out set small enough for seconds-long evals: chain_sum as in training, 4 validation questions.
SMALL_TASK = {"_target_": "hicra.tasks.ReasoningGymTask", "dataset": "chain_sum", "train_size": 64, "val_size": 4,
              "seed": 0, "last_number_fallback": True, "min_terms": 2, "max_terms": 2, "min_digits": 1,
              "max_digits": 1}


def _with_outputs(args: list[str], tmp_path: Path) -> list[str]:
    return with_test_outputs(args, tmp_path, run_folder="eval")


def run_eval(args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real `hicra-eval` console script in a fresh interpreter, outputs and MLflow store under tmp_path."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([str(HICRA_EVAL), *_with_outputs(args, tmp_path)], check=False, cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def run_eval_here(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """`hicra-eval args` in this process (support.run_in_process): the same entry point without a fresh interpreter."""
    from hicra.evaluation.cli import main

    return run_in_process(main, "hicra-eval", _with_outputs(args, tmp_path))


@pytest.fixture(scope="session")
def eval_script():
    """eval_script(args, tmp_path) -> CompletedProcess of the real console script (see run_eval)."""
    return run_eval


@pytest.fixture(scope="session")
def eval_cli():
    """eval_cli(args, tmp_path) -> CompletedProcess of hicra-eval's entry point, run in this process."""
    return run_eval_here


@pytest.fixture
def compose_eval():
    """compose_eval(*overrides) -> DictConfig of conf/eval.yaml."""
    from hydra.core.global_hydra import GlobalHydra

    yield composer("eval")
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-init tiny Llama + the SmolLM2 tokenizer, saved like hicra-train's final_model."""
    from hicra.models.loaders import build_tiny_model

    path = tmp_path_factory.mktemp("tiny") / "final_model"
    bundle = build_tiny_model()
    bundle.model.save_pretrained(path)
    bundle.tokenizer.save_pretrained(path)
    return path


def fake_training_run(client, experiment: str, name: str, run_dir: Path, model_dir: Path | None,
                      status: str = "FINISHED", task: dict | None = None, **resolved_values) -> str:
    """A run logged the way hicra-train logs one (tags, run folder, resolved config), without training."""
    import shutil

    (run_dir / "config").mkdir(parents=True, exist_ok=True)
    resolved = {"task": task or SMALL_TASK, "system_prompt": None, "seed": 0, **resolved_values}
    (run_dir / "config" / "resolved.yaml").write_text(OmegaConf.to_yaml(resolved))
    if model_dir is not None:
        shutil.copytree(model_dir, run_dir / "final_model")
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        experiment, artifact_location=(run_dir.parent / "mlartifacts").as_uri())
    run = client.create_run(exp_id, run_name=name, tags={
        "hicra.run_kind": "train", "hicra.run_dir": str(run_dir), "choice.algorithm": name.split("__")[0],
        "choice.planner": "none", "seed": "0"})
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


@pytest.fixture(scope="session")
def log_training_run():
    """log_training_run(client, experiment, name, run_dir, model_dir, ...) -> run id (see fake_training_run)."""
    return fake_training_run


@pytest.fixture(scope="session")
def fake_store(tmp_path_factory, tiny_model_dir):
    """sqlite store with experiment 'study' (grpo run with a final model, hicra run without one) and
    'broken' (only a FAILED run). Returns (tracking uri, {name: run id})."""
    import mlflow

    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = {
        "grpo__none__s0": fake_training_run(client, "study", "grpo__none__s0", root / "runs" / "a", tiny_model_dir),
        "hicra__strategic_grams__s0": fake_training_run(client, "study", "hicra__strategic_grams__s0",
                                                        root / "runs" / "b", None),
        "failed": fake_training_run(client, "broken", "grpo__none__s1", root / "runs" / "c", tiny_model_dir,
                                    status="FAILED"),
    }
    return uri, runs
