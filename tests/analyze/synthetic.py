"""A temporary MLflow store with synthetic hicra runs, logged with the client directly (no training)."""

from __future__ import annotations

import json
import math
from pathlib import Path

BASE_METRICS = ["train/reward_mean", "train/accuracy", "train/response_length", "policy/entropy",
                "hierarchy/planning_token_frac", "hierarchy/adv_planning_mean", "hierarchy/adv_execution_mean",
                "val/accuracy", "val/response_length"]
NEW_METRICS = ["hierarchy/semantic_entropy", "hierarchy/entropy_planning", "hierarchy/entropy_execution",
               "hierarchy/rel_ppl_planning", "hierarchy/rel_ppl_execution", "hierarchy/nll_planning", "hierarchy/nll_execution",
               "train/pass_at_g"]

TRICKY = "<b>&\"x\"</b>"  # must come out escaped in the viewer


def completions(step: int, sign: float) -> dict:
    pieces = [["Let's", False], [" try", True], [" a", True], [" different", True], [" angle", True],
              [TRICKY, False], ["\n", False], [" 42", False]]
    adv = [sign * 0.5, sign * 0.6, sign * 0.6, sign * 0.6, sign * 0.6, sign * 0.5, sign * 0.5, sign * 0.5]
    return {"step": step, "rows": [
        {"prompt": "What is 40 + 2? <answer>", "pieces": pieces, "token_advantages": adv, "reward": 1.0,
         "advantage": sign * 0.5},
        {"prompt": "What is 40 + 2? <answer>", "pieces": [["no", False], [" idea", False]],
         "token_advantages": [-1.25, -1.25], "reward": 0.0, "advantage": -1.25}]}


def value(key: str, step: int, k: int) -> float:
    base = {"rel_ppl": 1.0, "length": 80.0, "entropy": 1.2, "semantic": 5.0, "nll": 2.0}
    for word, start in base.items():
        if word in key:
            return start * (1 + (0.1 if k else -0.1) * step) + 0.01 * k
    return min(1.0, 0.2 + 0.15 * step + 0.05 * k) if "accuracy" in key or "frac" in key or "pass" in key \
        else math.sin(step + k)


def make_store(root: Path, with_new_metrics: bool = True, experiment: str = "hicra") -> tuple[str, list[str]]:
    """Two finished runs (hicra seed 0, grpo seed 1) with metrics at steps 0-2 and completion JSON artifacts.

    Call again on the same root with another experiment name to add runs to the same store (one migration).
    """
    import mlflow

    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(experiment, artifact_location=(root / "art" / experiment).as_uri())
    keys = BASE_METRICS + (NEW_METRICS if with_new_metrics else [])
    run_ids = []
    for k, (algo, planner, seed) in enumerate([("hicra", "strategic_grams", 0), ("grpo", "none", 1)]):
        run = client.create_run(exp_id, run_name=f"{algo}__{planner}__s{seed}",
                                tags={"choice.algorithm": algo, "choice.planner": planner, "seed": str(seed),
                                      "git.sha": "abc123"})
        rid = run.info.run_id
        for step in range(3):
            for key in keys:
                if key.startswith("val/") and step == 1:
                    continue  # validation every other step
                client.log_metric(rid, key, value(key, step, k), step=step)
        for step in (0, 2):
            path = root / experiment / f"c{k}" / f"completions_step{step:06d}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(completions(step, 1.0 if k == 0 else -1.0)))
            client.log_artifact(rid, str(path), "completions")
        client.set_terminated(rid, "FINISHED")
        run_ids.append(rid)
    return uri, run_ids
