"""The run page's description puts the outcome where MLflow shows it: MLflow 3 folds a long description behind
"Show more" after a few lines, and a sweep's overrides (output paths, tracking URIs) alone fill those lines."""

from __future__ import annotations

from hicra.tracking.store import run_description

VAL = [{"step": 0, "val/accuracy": 0.12, "num_prompts": 100},
       {"step": 10, "val/accuracy": 0.42, "val/accuracy_low": 0.328, "val/accuracy_high": 0.518,
        "val/boxed_frac": 1.0, "val/truncated_frac": 0.0, "num_prompts": 100}]
SWEEP_OVERRIDES = ["algorithm=grpo", "seed=1", "trainer.max_steps=10", "paths.output_dir=/scratch/outputs",
                   "logger.tracking_uri=sqlite:////scratch/mlflow.db", "logger.artifact_location=/scratch/art"]


def test_the_outcome_and_the_completions_come_before_the_overrides():
    text = run_description("s1 grpo grams", {"algorithm": "grpo", "planner": "strategic_grams"}, 1, SWEEP_OVERRIDES,
                           10, VAL, "completions/completions_step000009.html", "#/experiments/1/runs/abc")
    paragraphs = text.split("\n\n")
    assert paragraphs[0].startswith("**s1 grpo grams**: algorithm `grpo`")
    assert paragraphs[1].startswith("Held-out accuracy at step 10: **0.420** [0.328, 0.518] (95% Wilson) on 100")
    assert paragraphs[2] == ("Last completions: [completions/completions_step000009.html]"
                             "(#/experiments/1/runs/abc/artifactPath/completions/completions_step000009.html)")
    assert paragraphs[3] == f"Overrides: `{' '.join(SWEEP_OVERRIDES)}`" and len(paragraphs) == 4


def test_a_run_without_validation_or_overrides_says_so():
    text = run_description("s0 grpo", {"algorithm": "grpo"}, 0, [], 3, [], None, "#/x")
    assert text.split("\n\n") == ["**s0 grpo**: algorithm `grpo`, seed 0, 3 policy updates.",
                                  "Overrides: none (the defaults)."]
