"""`hicra-eval`: offline runs on the tiny model, one-line errors, train -> eval. The real console script runs in a
fresh interpreter twice (an offline local-file eval, one bad option); the other cases call its entry point here."""

from __future__ import annotations

import json

import mlflow
import pytest

FAST = ["max_new_tokens=8", "batch_size=4"]


def one_error_line(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("hicra-eval: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


@pytest.mark.slow
def test_tiny_model_on_a_local_file_offline(eval_script, tmp_path, monkeypatch):
    """The real console script: HF_HUB_OFFLINE is read when transformers is imported, so a fresh interpreter."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may come from a hub
    data = tmp_path / "aime.jsonl"
    data.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(5)))
    result = eval_script(["model=tiny", "benchmark=local_file", f"benchmark.task.path={data}", "protocol=greedy",
                       "limit=3", *FAST], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| tiny | aime | greedy | 3 | 1 |" in result.stdout
    (run,) = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db").search_runs(
        [mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db").get_experiment_by_name("hicra")
         .experiment_id])
    assert run.info.run_name == "eval__tiny__aime__greedy" and run.data.tags["hicra.run_kind"] == "eval"
    assert "hicra.source_run_id" not in run.data.tags  # a base model has no training run
    assert (tmp_path / "eval" / "eval_results.md").is_file() and (tmp_path / "eval" / "eval_results.json").is_file()


CASES = [
    (["checkpoint=/no/such/model"], ["checkpoint path '/no/such/model' does not exist"]),
    (["checkpoint=0123456789abcdef0123456789abcdef", "logger.tracking_uri={uri}"],
     ["MLflow run '0123456789abcdef0123456789abcdef' not found"]),
    (["checkpoint=0123456789abcdef0123456789abcdef", "logger.tracking_uri=sqlite:///{tmp}/none.db"],
     ["no MLflow store at", "none.db"]),
    (["checkpoint={no_model_run}", "logger.tracking_uri={uri}"], ["has no final model", "save_final_model=true"]),
    (["checkpoint=experiment:broken", "logger.tracking_uri={uri}"], ["experiment 'broken' has no finished training"]),
    (["benchmark=local_file", "benchmark.task.path={tmp}/no_answer.jsonl"],
     ["no_answer.jsonl", "line 1", "'answer'", "keys found: problem"]),
    (["benchmark=local_file", "benchmark.task.path={tmp}/nan_answer.jsonl"],
     ["nan_answer.jsonl' line 1: key 'answer' holds NaN, which is not an answer"]),
    (["benchmark=local_file"], ["benchmark.task.path"]),
    (["protocol=foo"], ["unknown protocol 'foo'", "greedy, paper, pass_at_k"]),
    (["benchmark=bar"], ["unknown benchmark 'bar'", "champ", "held_out", "local_file"]),
    (["limit=0"], ["limit=0 is not allowed", "integer >= 1"]),
    (["limit=-3"], ["limit=-3 is not allowed"]),
    (["protocol=greedy", "protocol.num_samples=4"], ["protocol.num_samples=4", "greedy"]),
    # a model that would not load as saved: scored half-random before, a traceback for a cut weights file
    (["checkpoint={damaged}/more_layers"], ["{damaged}/more_layers' does not load as saved",
                                            "weights missing from its weights files"]),
    (["checkpoint={damaged}/truncated"], ["{damaged}/truncated'", "not a complete safetensors file"]),
]


@pytest.fixture(scope="module")
def damaged(tiny_model_dir, tmp_path_factory):
    """Copies of the tiny model: more_layers/ (config.json says 3 layers, the weights hold 2), truncated/ (half of
    model.safetensors)."""
    import shutil

    root = tmp_path_factory.mktemp("damaged")
    for name in ("more_layers", "truncated"):
        shutil.copytree(tiny_model_dir, root / name)
    config = json.loads((root / "more_layers" / "config.json").read_text())
    (root / "more_layers" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    weights = root / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return root


@pytest.mark.parametrize("args,expected", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_fails_in_one_line(args, expected, eval_cli, fake_store, damaged, tmp_path):
    uri, runs = fake_store
    (tmp_path / "no_answer.jsonl").write_text('{"problem": "1+1?"}\n')
    (tmp_path / "nan_answer.jsonl").write_text('{"problem": "1+1?", "answer": NaN}\n')
    values = {"uri": uri, "tmp": tmp_path, "no_model_run": runs["hicra__strategic_grams__s0"], "damaged": damaged}
    args = [a.format(**values) for a in args]
    if not any(a.startswith("logger") for a in args):
        args.append("logger=none")
    error = one_error_line(eval_cli(["model=tiny", *args], tmp_path))
    for fragment in expected:
        assert fragment.format(**values) in error, error


@pytest.mark.slow
def test_a_bad_option_through_the_real_console_script(eval_script, tmp_path):
    error = one_error_line(eval_script(["protocol=foo", "logger=none"], tmp_path, timeout=300))
    assert "unknown protocol 'foo'" in error and "greedy, paper, pass_at_k" in error


@pytest.mark.slow
def test_train_then_evaluate_the_run(eval_cli, trained_run, tmp_path):
    """The session's real training run (tests/conftest.py), evaluated by MLflow run id and as a whole experiment."""
    run_id = trained_run.run_id
    client = mlflow.MlflowClient(tracking_uri=trained_run.tracking_uri)
    store = trained_run.store_args()
    greedy = eval_cli([f"checkpoint={run_id}", "protocol=greedy", "limit=4", *FAST, *store], tmp_path / "greedy")
    assert greedy.returncode == 0, greedy.stderr[-3000:]
    # no max_new_tokens: the paper protocol generates within the run's own rollout budget
    paper = eval_cli([f"checkpoint={run_id}", "protocol=paper", "protocol.num_samples=2", "limit=4", "batch_size=4",
                      *store], tmp_path / "paper")
    assert paper.returncode == 0, paper.stderr[-3000:]

    training = client.get_run(run_id)
    evals = client.search_runs([training.info.experiment_id], "tags.`hicra.run_kind` = 'eval'")
    by_protocol = {r.data.tags["hicra.protocol"]: r for r in evals}
    assert set(by_protocol) == {"greedy", "paper"}
    for protocol, run in by_protocol.items():
        tags, metrics = run.data.tags, run.data.metrics
        assert tags["hicra.source_run_id"] == run_id and tags["hicra.benchmark"] == "held_out"
        assert tags["source.choice.algorithm"] == training.data.tags["choice.algorithm"]
        assert tags["hicra.checkpoint"] == f"{training.data.tags['hicra.run_dir']}/final_model"
        assert run.info.run_name == f"eval__{training.info.run_name}__held_out__{protocol}"
        for key in ("eval/score", "eval/pass_at_1", "eval/truncated_frac", "eval/boxed_frac"):
            assert 0.0 <= metrics[key] <= 1.0, key
        assert metrics["eval/num_problems"] == 4 and metrics["perf/eval_seconds"] > 0
        assert [a.path for a in client.list_artifacts(run.info.run_id, "eval")] == ["eval/samples.jsonl"]
    greedy_metrics = by_protocol["greedy"].data.metrics
    assert greedy_metrics["eval/greedy_accuracy"] == greedy_metrics["eval/score"]
    assert by_protocol["paper"].data.metrics["eval/num_samples"] == 8
    assert by_protocol["paper"].data.metrics["eval/max_new_tokens"] == float(training.data.params["rollout.max_new_tokens"])
    assert greedy_metrics["eval/max_new_tokens"] == 8.0

    # The whole experiment, as a study would be evaluated: the greedy result exists, so it is skipped.
    study = eval_cli(["checkpoint=experiment:hicra", "protocol=greedy", "limit=4", *FAST, *store], tmp_path / "study")
    assert study.returncode == 0, study.stderr[-3000:]
    assert "already evaluated" in study.stdout and "(earlier)" in study.stdout
