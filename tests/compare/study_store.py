"""A temporary MLflow store laid out like a hicra study, with hand-picked metric values (no training).

Experiment "study" (trainer.max_steps = 4, val/accuracy at steps 0, 2, 4; train/* at steps 0-3):

    group                                          runs                      final val/accuracy
    algorithm=grpo planner=none                    s0 s1 s2                  0.1 0.2 0.3
    algorithm=hicra ... algorithm.alpha=0.2        s0 s1 (+ s2 RUNNING)      0.5 0.6 (s2 stopped at step 2 on 0.9)
    algorithm=hicra ... algorithm.alpha=0.1        s0                        0.4
    algorithm=entropy_reg planner=none             s0 KILLED at step 2       0.1 (partial)

Experiment "evals": hicra-eval runs (benchmark gsm8k, protocol greedy) linked by `hicra.source_run_id` to grpo s0,
s1 (0.1, 0.3), hicra alpha 0.2 s0, s1 (0.4, 0.5; s0 also has an older eval at 0.99 that must be ignored) and the
RUNNING run (0.95, must not count). Experiment "legacy": one run with Hydra choices and one old run without.
Experiment "empty": no run.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

VAL = {  # (algorithm, alpha, seed) -> {step: val/accuracy}
    ("grpo", None, 0): {0: 0.0, 2: 0.05, 4: 0.1},
    ("grpo", None, 1): {0: 0.0, 2: 0.25, 4: 0.2},
    ("grpo", None, 2): {0: 0.0, 2: 0.3, 4: 0.3},
    ("hicra", "0.2", 0): {0: 0.0, 2: 0.3, 4: 0.5},
    ("hicra", "0.2", 1): {0: 0.0, 2: 0.4, 4: 0.6},
    ("hicra", "0.2", 2): {0: 0.0, 2: 0.9},            # RUNNING
    ("hicra", "0.1", 0): {0: 0.0, 2: 0.2, 4: 0.4},
    ("entropy_reg", None, 0): {0: 0.0, 2: 0.1},       # KILLED
}
LENGTH = {("grpo", None, 0): [100, 90, 80, 70], ("grpo", None, 1): [100, 80, 60, 40],
          ("grpo", None, 2): [100, 100, 100, 100]}     # others: 50 at every step
ENTROPY = {("grpo", None, 0): 2.0, ("grpo", None, 1): 2.5, ("grpo", None, 2): 3.0}  # others: 1.0
STATUS = {("hicra", "0.2", 2): "RUNNING", ("entropy_reg", None, 0): "KILLED"}
EVALS = [  # (training run key, score, age): age orders the eval runs (larger = older)
    (("grpo", None, 0), 0.1, 0), (("grpo", None, 1), 0.3, 0), (("hicra", "0.2", 0), 0.4, 0),
    (("hicra", "0.2", 0), 0.99, 1), (("hicra", "0.2", 1), 0.5, 0), (("hicra", "0.2", 2), 0.95, 0)]
PLANNER = {"grpo": "none", "hicra": "strategic_grams", "entropy_reg": "none"}


def _params(algo: str, alpha: str | None, seed: int) -> dict[str, str]:
    params = {"seed": str(seed), "trainer.max_steps": "4", "optim.lr": "2e-05", "task.seed": "0",
              "logger.run_name": f"{algo}_{seed}_{alpha}", "paths.output_dir": f"/tmp/{algo}{seed}",
              "algorithm.token_advantage_fn._target_": "hicra.algorithms." + (
                  "hicra_token_advantages" if algo == "hicra" else "identity_token_advantages"),
              "planner._target_": "hicra.planning." + ("StrategicGramDetector" if algo == "hicra" else "NullDetector")}
    if alpha is not None:  # only hicra's config has alpha (and its interpolated copy)
        params |= {"algorithm.alpha": alpha, "algorithm.token_advantage_fn.alpha": alpha, "planner.seed": str(seed)}
    if algo == "entropy_reg":
        params["algorithm.entropy_coef"] = "0.001"
    return params


def _train_run(client, exp_id: str, key: tuple, start: int) -> str:
    from mlflow.entities import Metric, Param

    algo, _, seed = key
    tags = {"choice.algorithm": algo, "choice.planner": PLANNER[algo], "choice.experiment": "None",
            "choice.logger": "mlflow", "seed": str(seed), "git.sha": f"sha{start}", "hicra.run_kind": "train",
            "hicra.run_dir": f"/tmp/run{start}"}
    run = client.create_run(exp_id, run_name=f"{algo}__{PLANNER[algo]}__s{seed}", tags=tags, start_time=start)
    rid = run.info.run_id
    client.log_batch(rid, params=[Param(k, v) for k, v in _params(*key).items()])
    val = VAL[key]
    last_val = max(val)
    metrics = [Metric("val/accuracy", v, start, s) for s, v in val.items()]
    for step in range(min(4, last_val)):  # train/* at steps 0..3 (0..1 for runs that stopped at step 2)
        entropy = ENTROPY.get(key, 1.0)
        if key == ("grpo", None, 0) and step == 3:
            entropy = math.nan  # a step with no gram: NaN, dropped by fetch_metrics
        metrics += [Metric("train/response_length", LENGTH.get(key, [50] * 4)[step], start, step),
                    Metric("train/accuracy", 0.1 * step, start, step),
                    Metric("hierarchy/semantic_entropy", entropy, start, step)]
    client.log_batch(rid, metrics=metrics)
    status = STATUS.get(key, "FINISHED")
    if status != "RUNNING":
        client.set_terminated(rid, status)
    return rid


def make_study(root: Path) -> tuple[str, dict[tuple, str]]:
    """The store above; returns (tracking uri, {(algorithm, alpha, seed): run id})."""
    import mlflow

    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    now = int(time.time() * 1000)
    exp_id = client.create_experiment("study", artifact_location=(root / "art" / "study").as_uri())
    ids = {key: _train_run(client, exp_id, key, now + i) for i, key in enumerate(VAL)}

    eval_exp = client.create_experiment("evals", artifact_location=(root / "art" / "evals").as_uri())
    for key, score, age in EVALS:
        run = client.create_run(eval_exp, run_name=f"eval__{ids[key][:6]}", start_time=now + 100 - age * 50,
                                tags={"hicra.run_kind": "eval", "hicra.source_run_id": ids[key],
                                      "hicra.benchmark": "gsm8k", "hicra.protocol": "greedy"})
        client.log_metric(run.info.run_id, "eval/score", score)
        client.log_metric(run.info.run_id, "eval/pass_at_1", score)
        client.set_terminated(run.info.run_id, "FINISHED")

    legacy = client.create_experiment("legacy", artifact_location=(root / "art" / "legacy").as_uri())
    for i, tags in enumerate([{"choice.algorithm": "grpo", "choice.planner": "none"}, {}]):  # {}: an old run
        run = client.create_run(legacy, run_name=f"legacy{i}", tags=tags, start_time=now + i)
        client.log_metric(run.info.run_id, "val/accuracy", 0.25, step=0)
        client.set_terminated(run.info.run_id, "FINISHED")
    client.create_experiment("empty", artifact_location=(root / "art" / "empty").as_uri())
    return uri, ids


PAIRED_FINAL = {  # (algorithm, seed) -> final val/accuracy of experiment "paired"; None: RUNNING, stopped at step 2
    ("grpo", 0): 0.2, ("grpo", 1): 0.3, ("grpo", 2): 0.4, ("grpo", 3): 0.5,   # seed 3: baseline only
    ("hicra", 0): 0.3, ("hicra", 1): 0.5, ("hicra", 2): 0.7,  # differences 0.1 0.2 0.3
    ("hicra", 4): 0.6,                                         # hicra only
    ("hicra", 5): None,
}


def make_paired_study(root: Path) -> tuple[str, dict[tuple, str]]:
    """Experiment "paired": the same seeds per arm except seed 3 (grpo only), seed 4 (hicra only) and a RUNNING
    hicra seed 5. Returns (tracking uri, {(algorithm, seed): run id})."""
    import mlflow
    from mlflow.entities import Metric

    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("paired", artifact_location=(root / "art" / "paired").as_uri())
    ids = {}
    for (algo, seed), final in PAIRED_FINAL.items():
        run = client.create_run(exp_id, run_name=f"{algo}__s{seed}", tags={
            "choice.algorithm": algo, "choice.planner": PLANNER[algo], "seed": str(seed), "hicra.run_kind": "train"})
        rid = ids[(algo, seed)] = run.info.run_id
        client.log_param(rid, "trainer.max_steps", "4")
        points = {0: 0.0, 2: 0.9} if final is None else {0: 0.0, 4: final}
        client.log_batch(rid, metrics=[Metric("val/accuracy", v, 0, step) for step, v in points.items()])
        if final is not None:
            client.set_terminated(rid, "FINISHED")
    return uri, ids
