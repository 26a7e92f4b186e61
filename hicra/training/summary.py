"""What a finished run reports: the summary numbers `train(cfg)` returns and prints as a block (where it started,
where it ended, where to look), the MLflow run page's title and description, and the sweepers' objective."""

from __future__ import annotations

from hicra.errors import ConfigError
from hicra.tracking.store import run_description
from hicra.training.hydra_job import task_overrides


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


def run_summary(run, trainer, module, logger) -> dict:
    """The numbers `train(cfg)` returns: choices, seed, steps, run folder, both histories, MLflow run, memory plan."""
    return {"choices": run.choices, "seed": run.cfg.seed, "steps": trainer.global_step, "run_dir": str(run.out_dir),
            "train_history": module.train_history, "val_history": module.val_history,
            "mlflow": {"tracking_uri": logger._tracking_uri, "run_id": logger.run_id,
                       "experiment": run.cfg.logger.experiment_name, "experiment_id": logger.experiment_id}
            if logger is not None else None, "memory_plan": run.memory.record if run.memory is not None else None}


def run_title(logger, name: str | None, choices: dict[str, str], seed: int) -> str:
    """How pages name the run: `s1 hicra grams (run 1d42f3a3)`, or its choices when nothing is logged."""
    if logger is None:
        return " ".join(f"{k}={choices[k]}" for k in ("algorithm", "planner") if k in choices) + f" seed={seed}"
    return f"{name} (algorithm {choices.get('algorithm', '?')}, run {logger.run_id[:8]})"


def description(run, logger, name: str, steps: int, val_history: list[dict]) -> str:
    """The MLflow run page's description of a finished run (hicra.tracking.store.run_description)."""
    pages = sorted((run.out_dir / "completions").glob("completions_step*.html"))
    return run_description(name, run.choices, run.cfg.seed, task_overrides(), steps, val_history,
                           f"completions/{pages[-1].name}" if pages else None,
                           f"#/experiments/{logger.experiment_id}/runs/{logger.run_id}")  # in-app link


def objective(summary: dict, metric: str | None) -> float | None:
    """The number a sweeper optimises: `metric` at the last validation, else at the last training step."""
    if not metric:
        return None
    for history in (summary["val_history"], summary["train_history"]):
        if history and metric in history[-1]:
            return float(history[-1][metric])
    logged = sorted({k for h in (summary["val_history"], summary["train_history"]) if h for k in h[-1]} - {"step"})
    raise ConfigError(f"optimized_metric={metric!r} was not logged; allowed: {', '.join(logged)}")
