"""The closing summary states the held-out gain and what it rests on (boxed and truncated fractions)."""

from __future__ import annotations

from hicra.training.summary import format_summary


def test_summary_prints_the_gain_with_boxed_and_truncated_fractions():
    val = [{"step": 0, "num_prompts": 200, "val/accuracy": 0.02, "val/boxed_frac": 0.035, "val/truncated_frac": 0.0},
           {"step": 30, "num_prompts": 200, "val/accuracy": 0.41, "val/boxed_frac": 0.99, "val/truncated_frac": 0.01}]
    train = [{"train/reward_mean": 0.1, "train/accuracy": 0.0, "perf/step_time_s": 10.0}] * 4
    text = format_summary({"choices": {"algorithm": "hicra"}, "seed": 0, "steps": 30, "run_dir": "/tmp/run",
                           "train_history": train, "val_history": val, "mlflow": None})
    assert "0.020 (step 0) -> 0.410 (step 30), +0.390; 200 held-out prompts" in text
    assert "val boxed        0.035 -> 0.990" in text
    assert "val truncated    0.000 -> 0.010" in text


def test_summary_gives_the_interval_and_the_run_page_in_the_training_view():
    val = [{"step": 0, "num_prompts": 32, "val/accuracy": 0.25},
           {"step": 10, "num_prompts": 32, "val/accuracy": 0.3125, "val/accuracy_low": 0.18,
            "val/accuracy_high": 0.49}]
    text = format_summary({"choices": {}, "seed": 0, "steps": 10, "run_dir": "/tmp/run", "train_history": [],
                           "val_history": val, "mlflow": {"tracking_uri": "sqlite:////tmp/m.db", "run_id": "abc",
                                                          "experiment": "hicra", "experiment_id": "3"}})
    assert "0.312 [0.180, 0.490] (step 10)" in text
    assert "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning" in text
