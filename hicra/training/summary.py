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
        before, after = val[0], val[-1]
        gain = after["val/accuracy"] - before["val/accuracy"]
        interval = (f" [{after['val/accuracy_low']:.3f}, {after['val/accuracy_high']:.3f}]"
                    if "val/accuracy_low" in after else "")
        lines.append(f"  val accuracy     {before['val/accuracy']:.3f} (step {before['step']}) -> "
                     f"{after['val/accuracy']:.3f}{interval} (step {after['step']}), {gain:+.3f}; "
                     f"{after['num_prompts']} held-out prompts, greedy")
        # What an accuracy means: how many replies gave a closed answer, and how many hit the token budget.
        for key, label in (("val/boxed_frac", "val boxed"), ("val/truncated_frac", "val truncated")):
            if key in before and key in after:
                lines.append(f"  {label:<16} {before[key]:.3f} -> {after[key]:.3f}")
    plan = summary.get("memory_plan")  # hicra/training/memory_check.py: checked before the model loaded
    if plan:
        device = f" of {plan['device_bytes'] / 2**30:.1f} GiB" if plan.get("device_bytes") else ""
        lines.append(f"  memory plan      {plan['peak_bytes'] / 2**30:.1f} GiB per device at {plan['peak_phase']}"
                     f"{device} (memory_plan.json)")
    lines.append(f"  run directory    {summary['run_dir']}")
    mlflow = summary.get("mlflow")
    if mlflow:
        uri = mlflow["tracking_uri"]
        lines.append(f"  MLflow run       {mlflow['run_id']} in experiment '{mlflow['experiment']}'")
        lines.append(f"  MLflow store     {uri}")
        # ?workflowType=machine_learning: MLflow 3's UI opens in its GenAI view unless told otherwise
        page = (f"/#/experiments/{mlflow['experiment_id']}/runs/{mlflow['run_id']}?workflowType=machine_learning"
                if mlflow.get("experiment_id") else "")
        if uri.startswith("http"):
            lines.append(f"  run page         {uri.rstrip('/')}{page}")
        else:
            lines.append(f"  open the UI      mlflow ui --backend-store-uri {uri}   # then http://127.0.0.1:5000{page}")
    lines.append("=" * 72)
    return "\n".join(lines)
