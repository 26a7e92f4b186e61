"""The evaluation loop in-process on the tiny model: table files, samples, MLflow eval runs, resuming a study."""

from __future__ import annotations

import json
import shutil

import mlflow
import pytest

from hicra.evaluation.evaluate import evaluate, sample_folder_name

FAST = ["max_new_tokens=8", "batch_size=2"]


@pytest.fixture
def store(fake_store, tmp_path):
    """A private copy of the synthetic store (the runs' folders are shared, read-only)."""
    uri, runs = fake_store
    shutil.copy(uri[len("sqlite:///"):], tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db", runs


def logger_args(uri, tmp_path):
    return [f"logger.tracking_uri={uri}", f"logger.artifact_location={tmp_path}/mlartifacts"]


def test_base_tiny_model_without_logging(compose_eval, tmp_path):
    cfg = compose_eval("model=tiny", "logger=none", "protocol=pass_at_k", "protocol.num_samples=4",
                       "protocol.ks=[1,2,4]", "limit=3", *FAST)
    (row,) = evaluate(cfg, {"model": "tiny"}, tmp_path)
    metrics = row["metrics"]
    assert row["name"] == "tiny" and row["benchmark"] == "held_out" and row["eval_run_id"] is None
    assert metrics["eval/num_problems"] == 3 and metrics["eval/num_samples"] == 12
    assert 0.0 <= metrics["eval/pass_at_1"] <= metrics["eval/pass_at_2"] <= metrics["eval/pass_at_4"] <= 1.0
    samples = [json.loads(line) for line in (tmp_path / "00__tiny" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 12 and {"question", "reference", "completion", "score"} <= set(samples[0])
    assert [(s["problem"], s["sample"]) for s in samples[:5]] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    table = (tmp_path / "eval_results.md").read_text()
    assert "| tiny | held_out | pass_at_k | 3 | 4 |" in table and "pass@4" in table
    assert json.loads((tmp_path / "eval_results.json").read_text())[0]["metrics"] == metrics


def test_study_is_logged_next_to_its_training_runs_and_resumes(compose_eval, store, tmp_path):
    uri, runs = store
    args = ["checkpoint=experiment:study", "protocol=paper", "protocol.num_samples=2", "limit=2", *FAST,
            *logger_args(uri, tmp_path)]
    (row,) = evaluate(compose_eval(*args), {"model": "smollm2_135m"}, tmp_path / "first")
    assert row["source_run_id"] == runs["grpo__none__s0"] and not row["earlier"]

    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(row["eval_run_id"])
    training = client.get_run(runs["grpo__none__s0"])
    assert run.info.experiment_id == training.info.experiment_id  # the study's experiment
    assert run.info.run_name == "eval__grpo__none__s0__held_out__paper"
    tags = run.data.tags
    assert tags["hicra.run_kind"] == "eval" and tags["hicra.source_run_id"] == runs["grpo__none__s0"]
    assert (tags["hicra.benchmark"], tags["hicra.protocol"]) == ("held_out", "paper")
    assert tags["source.choice.algorithm"] == "grpo" and tags["source.seed"] == "0"
    assert tags["hicra.checkpoint"].endswith("final_model") and "git.sha" in tags
    assert run.data.params["protocol.num_samples"] == "2" and run.data.params["limit"] == "2"
    assert run.data.metrics["eval/num_problems"] == 2 and run.data.metrics["eval/num_samples"] == 4
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert artifacts == {"eval/samples.jsonl"}

    # Rerunning the study skips what is done; another setting (limit) is a new evaluation.
    (again,) = evaluate(compose_eval(*args), {}, tmp_path / "second")
    assert again["earlier"] and again["eval_run_id"] == row["eval_run_id"]
    assert again["metrics"]["eval/score"] == pytest.approx(row["metrics"]["eval/score"])
    (other,) = evaluate(compose_eval(*args, "limit=1"), {}, tmp_path / "third")  # the last override wins
    assert not other["earlier"] and other["metrics"]["eval/num_problems"] == 1


def test_held_out_of_a_run_is_its_own_validation_set(compose_eval, store, tmp_path):
    uri, runs = store
    cfg = compose_eval(f"checkpoint={runs['grpo__none__s0']}", "protocol=greedy", *FAST,
                       *logger_args(uri, tmp_path))
    (row,) = evaluate(cfg, {}, tmp_path)
    assert row["metrics"]["eval/num_problems"] == 4  # the run's task.val_size, not eval.yaml's task (32)
    assert row["metrics"]["eval/greedy_accuracy"] == row["metrics"]["eval/score"]


@pytest.mark.parametrize("protocol,strict,samples", [("paper", True, 4), ("greedy", False, 1)])
def test_paper_protocol_scores_strictly_with_its_k_and_budget(compose_eval, protocol, strict, samples):
    from hicra.config.instantiate import build
    from hicra.evaluation.evaluate import plan

    cfg = compose_eval("model=tiny", "logger=none", f"protocol={protocol}", "task.last_number_fallback=true",
                       "base_max_new_tokens=48")
    (job,), _ = plan(cfg, build(cfg.benchmark), build(cfg.protocol), None, {"model": "tiny"}, {})
    assert job.task.last_number_fallback is (not strict)  # the paper: strict \boxed{}, whatever the task says
    assert job.num_samples == samples and job.max_new_tokens == 48  # no training run: base_max_new_tokens


def test_a_run_name_with_a_slash_gives_one_sample_folder():
    """Study run names hold `experiment=hicra_vs_grpo/<arm>`; the samples of each checkpoint stay one folder deep."""
    assert sample_folder_name(0, "s0 hicra placebo experiment=hicra_vs_grpo/placebo") == (
        "00__s0_hicra_placebo_experiment=hicra_vs_grpo_placebo")
    assert sample_folder_name(12, "tiny") == "12__tiny"
