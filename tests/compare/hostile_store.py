"""A small MLflow store whose run names, experiment name, override values and completion samples carry markup and
Markdown, as anyone with write access to a shared tracking server can set them (a run renamed in the MLflow UI).

Every payload, if it ever ran in a browser, would set `window.__hicra_xss` and the page title: tests check that
neither happens (tests/tracking/test_browser.py) and that the HTML written holds no such element or attribute
(tests/compare/test_untrusted_text.py).

    run            name                                     choices                 algorithm.alpha
    grpo           <img src=x onerror=...>                  grpo / none             -
    hicra svg      [click](javascript:...) a|b *x*          hicra / strategic_grams <svg onload=...>
    hicra 0.1      plain $\\foo{$ (mathtext for matplotlib)    hicra / strategic_grams 0.1
    legacy         legacy                                   (no choice tags)        -
"""

from __future__ import annotations

import json
from pathlib import Path

TITLE = "pwned"
SET = f"window.__hicra_xss=1;document.title='{TITLE}'"  # what a payload would do if it ran
EXPERIMENT = f"<script>{SET}</script>study"
RUN_NAME = f'<img src=x onerror="{SET}">'
LINK_NAME = f"[click](javascript:{SET}) a|b *x*"
OVERRIDE = f'<svg onload="{SET}">'
MATH_NAME = "plain $\\foo{$"  # matplotlib parsed it as mathtext and raised: the figures (and report) were lost
PROMPT = f"<script>{SET}</script> What is 1 + 1?"
TOKEN = f'<img src=x onerror="{SET}">'
RUNS = [(RUN_NAME, {"choice.algorithm": "grpo", "choice.planner": "none"}, {}),
        (LINK_NAME, {"choice.algorithm": "hicra", "choice.planner": "strategic_grams"}, {"algorithm.alpha": OVERRIDE}),
        (MATH_NAME, {"choice.algorithm": "hicra", "choice.planner": "strategic_grams"}, {"algorithm.alpha": "0.1"}),
        ("legacy", {}, {})]


def completions() -> dict:
    return {"step": 1, "rows": [{"prompt": PROMPT, "pieces": [[TOKEN, False], [" 2", True]],
                                 "token_advantages": [0.5, 0.7], "reward": 1.0, "advantage": 0.5}]}


def make_hostile_store(root: Path, uri: str | None = None) -> tuple[str, list[str]]:
    """The experiment above (each run FINISHED, val/accuracy at steps 0 and 1 of trainer.max_steps 1, a completion
    sample on the first run) in a new store under `root`, or added to the store at `uri`; artifacts under `root`.
    Returns (tracking uri, run ids in the order of RUNS)."""
    import mlflow
    from mlflow.entities import Metric, Param

    root.mkdir(parents=True, exist_ok=True)
    uri = uri or f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(EXPERIMENT, artifact_location=(root / "art").as_uri())
    ids = []
    for k, (name, tags, params) in enumerate(RUNS):
        run = client.create_run(exp, run_name=name, tags={**tags, "seed": "0", "hicra.run_kind": "train"},
                                start_time=1000 + k)
        rid = run.info.run_id
        params = {"seed": "0", "trainer.max_steps": "1", **params}
        client.log_batch(rid, params=[Param(key, value) for key, value in params.items()],
                         metrics=[Metric("val/accuracy", 0.1 * k + 0.1 * step, 1000, step) for step in (0, 1)])
        if k == 0:
            sample = root / "completions" / "completions_step000001.json"
            sample.parent.mkdir(parents=True, exist_ok=True)
            sample.write_text(json.dumps(completions()), encoding="utf-8")
            client.log_artifact(rid, str(sample), "completions")
        client.set_terminated(rid, "FINISHED")
        ids.append(rid)
    return uri, ids
