"""The block printed at the end of a run: where it started, where it ended, and where to look."""

from __future__ import annotations


def _mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def format_summary(summary: dict) -> str:
    """Train reward/accuracy averaged over the first and last few steps (single steps are noisy), val at ends."""
    train, val = summary["train_history"], summary["val_history"]
    choices = " ".join(f"{g}={o}" for g, o in summary["choices"].items() if g in
                       ("algorithm", "planner", "model", "task", "experiment") and o != "None")
    lines = ["", "=" * 72, f"hicra run summary: {choices} seed={summary['seed']} steps={summary['steps']}"]
    if train:
        k = max(1, min(3, len(train) // 2))
        first, last = train[:k], train[-k:]
        for key, label in (("train/reward_mean", "train reward"), ("train/accuracy", "train accuracy")):
            lines.append(f"  {label:<16} {_mean(first, key):.3f} (first {k} steps) -> {_mean(last, key):.3f} "
                         f"(last {k} steps)")
        lines.append(f"  step time        {_mean(train, 'perf/step_time_s'):.1f} s mean")
    if val:
        lines.append(f"  val accuracy     {val[0]['val/accuracy']:.3f} (step {val[0]['step']}) -> "
                     f"{val[-1]['val/accuracy']:.3f} (step {val[-1]['step']}), {val[-1]['num_prompts']} held-out "
                     "prompts, greedy")
    lines.append(f"  run directory    {summary['run_dir']}")
    mlflow = summary.get("mlflow")
    if mlflow:
        uri = mlflow["tracking_uri"]
        lines.append(f"  MLflow run       {mlflow['run_id']} in experiment '{mlflow['experiment']}'")
        lines.append(f"  MLflow store     {uri}")
        if not uri.startswith("http"):
            lines.append(f"  open the UI      mlflow ui --backend-store-uri {uri}   # then http://127.0.0.1:5000")
    lines.append("=" * 72)
    return "\n".join(lines)
