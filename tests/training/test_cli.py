"""End to end through `hicra-train` on the tiny model: runs, multirun, MLflow read-back (the real console script once,
through the shared `trained_run`; the variants in this process)."""

from __future__ import annotations

import mlflow
import pytest
from support import PROJECT_ROOT, TINY_RUN, run_train

REQUIRED_METRICS = [
    "train/reward_mean", "train/accuracy", "train/response_length", "train/frac_zero_std_groups", "loss/policy",
    "loss/kl", "policy/entropy", "policy/clip_frac_low", "policy/clip_frac_high", "policy/approx_kl",
    "hierarchy/planning_token_frac", "hierarchy/adv_planning_mean", "hierarchy/adv_execution_mean", "perf/step_time_s",
    "perf/tokens_per_s", "val/accuracy",
    # hierarchy diagnostics (paper section 4), every step from the step's own rollout
    "hierarchy/semantic_entropy", "hierarchy/cond_entropy_after_gram", "hierarchy/entropy_planning", "hierarchy/entropy_execution",
    "hierarchy/nll_planning", "hierarchy/nll_execution", "hierarchy/rel_ppl_planning", "hierarchy/rel_ppl_execution",
    "hierarchy/planning_in_top_entropy_frac", "hierarchy/top_entropy_in_planning_frac", "train/pass_at_g",
    "hierarchy/gram_reply_frac",
    "perf/diagnostics_s",
]


# Third-party lines a user cannot act on (Lightning's tips and device lines, its ModelCheckpoint sample code, MLflow's
# store creation, setuptools' build chatter): hicra-train silences each at its source.
NOISE = ["litlogger", "Tip:", "ModelCheckpoint", "GPU available:", "Please be careful with folders",
         "Creating initial MLflow database tables"]


def _runs(tmp_path, experiment="hicra"):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


def test_the_real_console_script_logs_a_whole_run_to_mlflow(trained_run):
    """The session's shared run (tests/conftest.py: hicra-train in a fresh interpreter, HICRA, 3 steps)."""
    assert "hicra run summary" in trained_run.result["stdout"]
    assert "mlflow ui --backend-store-uri" in trained_run.result["stdout"]
    assert "hicra-train: training on " in trained_run.result["stdout"]
    output = trained_run.result["stdout"] + trained_run.result["stderr"]
    assert [n for n in NOISE if n in output] == [], trained_run.result["stderr"][-3000:]
    client = mlflow.MlflowClient(tracking_uri=trained_run.tracking_uri)
    run = client.get_run(trained_run.run_id)
    assert run.info.run_name == "s1 hicra grams" and run.info.status == "FINISHED"  # seed first: never cut off
    for name in REQUIRED_METRICS:
        assert name in run.data.metrics, name
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/reward_mean")]
    assert steps == [0, 1, 2]  # step = updates the sampling policy had: one value per step, no gap, no duplicate
    val_steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/accuracy")]
    assert val_steps == [0, 2, 3]  # before training, every val_every_n_steps=2, and at the end

    tags, params = run.data.tags, run.data.params
    assert tags["choice.algorithm"] == "hicra" and tags["choice.planner"] == "strategic_grams"
    assert tags["seed"] == "1" and len(tags["git.sha"]) in (40, len("unknown"))
    assert tags["git.dirty"] in ("true", "false", "unknown")
    assert params["seed"] == "1" and params["algorithm.group_size"] == "4" and params["trainer.max_steps"] == "3"
    assert params["algorithm"] == "hicra" and params["planner"] == "strategic_grams"  # MLflow's compare axes
    assert not [k for k in params if k.endswith(("_target_", "_partial_"))]
    assert "algorithm.alpha" in params and "algorithm.token_advantage_fn.alpha" not in params  # no ${..} copies
    assert "None" not in {v for k, v in tags.items() if k.startswith("choice.")}
    note = tags["mlflow.note.content"]
    assert note.startswith("**s1 hicra grams**") and "Held-out accuracy at step 3: **" in note
    assert "(95% Wilson)" in note and "artifactPath/completions/completions_step" in note
    assert {"val/accuracy_low", "val/accuracy_high"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "config")}
    assert "config/resolved.yaml" in artifacts
    samples = {a.path for a in client.list_artifacts(run.info.run_id, "completions")}
    assert {"completions/completions_step000000.html", "completions/completions_step000000.json"} <= samples
    assert (trained_run.run_dir / "final_model" / "config.json").is_file()


@pytest.mark.parametrize("algorithm,planner", [("grpo", "none"), ("entropy_reg", "none")])
def test_two_steps_of_the_other_algorithms_logged_to_mlflow(algorithm, planner, tmp_path):
    result = run_train([*TINY_RUN, f"algorithm={algorithm}", f"planner={planner}", "seed=1"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = _runs(tmp_path)
    assert run.info.run_name == f"s1 {algorithm}" and run.info.status == "FINISHED"  # planner=none: not named
    for name in REQUIRED_METRICS:
        assert name in run.data.metrics, name
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "train/reward_mean")]
    assert steps == [0, 1]
    assert run.data.tags["choice.algorithm"] == algorithm and run.data.params["trainer.max_steps"] == "2"
    if algorithm == "entropy_reg":
        assert run.data.params["algorithm.entropy_coef"] == "0.001" and run.data.metrics["loss/entropy_bonus"] > 0


@pytest.mark.slow
def test_multirun_2x2_lands_in_one_experiment(tmp_path):
    result = run_train(["-m", *TINY_RUN, "algorithm=grpo,hicra", "seed=0,1", "trainer.max_steps=1",
                        "logger.experiment_name=sweep",
                        f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                        f"logger.artifact_location={tmp_path}/mlartifacts"], tmp_path)  # not the project's outputs/
    assert result.returncode == 0, result.stderr[-3000:]
    runs = _runs(tmp_path, "sweep")
    # GRPO reads no planning mask: its name does not mention the planner it was given
    assert sorted(r.info.run_name for r in runs) == ["s0 grpo", "s0 hicra grams", "s1 grpo", "s1 hicra grams"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all("val/accuracy" in r.data.metrics for r in runs)


def test_high_entropy_planner_runs_with_hicra(compose_cfg, tmp_path):
    """planner=high_entropy needs the old log-prob pass's entropies: it marks ceil(0.3 n) tokens of each reply, and
    with two updates per batch the second one sees the moved policy (ratio != 1)."""
    from hicra.training.run import train

    cfg = compose_cfg(*TINY_RUN, "algorithm=hicra", "planner=high_entropy", "logger=none", "trainer.max_steps=4",
                      "algorithm.num_iterations=2", f"paths.output_dir={tmp_path}", "task._target_=support.ParityTask",
                      "score_truncated=true")  # mixed rewards on a random model: the updates move the policy
    history = train(cfg, choices={"algorithm": "hicra", "planner": "high_entropy"})["train_history"]
    assert len(history) == 2
    for row in history:  # rho = 0.3 of each reply's tokens, rounded up: a little over 0.3 of the batch
        assert 0.3 <= row["hierarchy/planning_token_frac"] <= 0.4
        assert row["policy/ratio_max"] != 1.0


def test_planner_short_names_are_keyed_by_real_planner_options():
    from hicra.tracking.store import PLANNER_SHORT

    options = {p.stem for p in (PROJECT_ROOT / "conf" / "planner").glob("*.yaml")}
    assert set(PLANNER_SHORT) <= options, set(PLANNER_SHORT) - options


def test_run_names_put_the_seed_first_and_name_the_swept_keys(monkeypatch):
    from hicra.config.sweep import is_sweep
    from hicra.tracking.store import default_run_name

    choices = {"algorithm": "hicra", "planner": "placebo_grams"}
    assert default_run_name(choices, 2) == "s2 hicra placebo"
    assert default_run_name({"algorithm": "hicra", "planner": "random"}, 2) == "s2 hicra placebo_spans"
    assert default_run_name(choices, 0, {"algorithm.alpha": "0.1", "seed": "0", "algorithm": "hicra"}) == \
        "s0 hicra placebo alpha=0.1"
    assert default_run_name({"algorithm": "grpo", "planner": "none"}, 1) == "s1 grpo"
    grpo = {"algorithm": "grpo", "planner": "strategic_grams"}
    assert default_run_name(grpo, 1, uses_planner=False) == "s1 grpo"  # the planner changes nothing in training
    assert default_run_name(grpo, 1, {"planner": "strategic_grams"}, uses_planner=False) == "s1 grpo grams"  # swept
    assert is_sweep("0.1,0.2") and is_sweep("range(0,3)") and is_sweep("choice(a,b)")
    assert not is_sweep("[1,2]") and not is_sweep("'a, b'") and not is_sweep("0.1")
