"""RESULTS.md, learning_curve.png and results.json for the README's learning curve, read from MLflow.

    python experiments/learning_curve/report.py --experiment learning_curve --command "experiments/learning_curve/run.sh"

One finished training run per seed (the newest, if a seed ran twice). Held-out accuracy is `val/accuracy`: greedy,
strict (only a closed \\boxed{} counts, a truncated reply scores 0), on the task's held-out questions. The gain is
final minus step 0 per seed; its interval is a t interval over seeds (hicra.metrics.stats.mean_ci).
`--has-seed N` / `--has-lenient-base` exit 0 when that run exists (run.sh skips it), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VAL_KEYS = ("val/accuracy", "val/boxed_frac", "val/truncated_frac", "val/response_length")
SETUP_KEYS = ["model.name_or_path", "algorithm.alpha", "task.dataset", "task.min_digits", "task.max_digits",
              "task.val_size", "task.last_number_fallback", "trainer.max_steps", "prompts_per_step",
              "algorithm.group_size", "rollout.max_new_tokens", "rollout.temperature", "optim.lr", "format_reward"]


def client_for(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


def training_runs(client, experiment: str) -> dict[int, object]:
    """seed -> newest finished training run of the experiment."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    runs = client.search_runs([exp.experiment_id], "tags.`hicra.run_kind` = 'train' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"])
    newest: dict[int, object] = {}
    for run in runs:
        newest.setdefault(int(run.data.tags["seed"]), run)
    return dict(sorted(newest.items()))


def lenient_base_runs(client, experiment: str) -> list:
    """Finished eval runs of the base model (no source training run) with the last-number reading on."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], "tags.`hicra.run_kind` = 'eval' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"])
    return [r for r in runs if r.data.params.get("task.last_number_fallback") == "True"]


def history(client, run, key: str) -> list[tuple[int, float, float]]:
    """[(step, value, seconds since the run started)] of one metric, by step."""
    start = run.info.start_time
    rows = client.get_metric_history(run.info.run_id, key)
    return sorted((m.step, m.value, (m.timestamp - start) / 1000) for m in rows)


def collect(client, experiment: str) -> dict:
    from hicra.metrics.stats import mean_ci

    runs = training_runs(client, experiment)
    if not runs:
        raise SystemExit(f"no finished training runs in MLflow experiment '{experiment}'")
    per_seed = {}
    for seed, run in runs.items():
        curves = {key: history(client, run, key) for key in VAL_KEYS}
        train_trunc = history(client, run, "train/truncated_frac")
        per_seed[seed] = {
            "run_id": run.info.run_id,
            "git_sha": run.data.tags.get("git.sha"), "git_dirty": run.data.tags.get("git.dirty"),
            "machine": run.data.tags.get("machine", "not recorded"),
            "wall_s": (run.info.end_time - run.info.start_time) / 1000,
            "steps": [s for s, _, _ in curves["val/accuracy"]],
            "seconds": [t for _, _, t in curves["val/accuracy"]],
            **{key: [v for _, v, _ in rows] for key, rows in curves.items()},
            "train/truncated_frac_last": train_trunc[-1][1] if train_trunc else None,
            "train/truncated_frac_last5": sum(v for _, v, _ in train_trunc[-5:]) / max(len(train_trunc[-5:]), 1),
        }
    steps = per_seed[next(iter(per_seed))]["steps"]
    if any(p["steps"] != steps for p in per_seed.values()):
        raise SystemExit("the seeds' validation steps differ; were they run with the same settings?")
    curve = [{"step": step, **{k: mean_ci([p[k][i] for p in per_seed.values()]).__dict__ for k in VAL_KEYS},
              "seconds_mean": sum(p["seconds"][i] for p in per_seed.values()) / len(per_seed)}
             for i, step in enumerate(steps)]
    gains = [p["val/accuracy"][-1] - p["val/accuracy"][0] for p in per_seed.values()]
    lenient = lenient_base_runs(client, experiment)
    first = runs[next(iter(runs))]
    return {
        "experiment": experiment,
        "seeds": list(per_seed),
        "per_seed": per_seed,
        "curve": curve,
        "gain": mean_ci(gains).__dict__,
        "wall_s": mean_ci([p["wall_s"] for p in per_seed.values()]).__dict__,
        "setup": {k: first.data.params[k] for k in SETUP_KEYS if k in first.data.params},
        "lenient_base_accuracy": lenient[0].data.metrics.get("eval/score") if lenient else None,
        "lenient_base_run_id": lenient[0].info.run_id if lenient else None,
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = results["curve"]
    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    steps = [row["step"] for row in curve]
    mean = [row["val/accuracy"]["mean"] for row in curve]
    low = [row["val/accuracy"]["low"] if row["val/accuracy"]["low"] is not None else m for row, m in zip(curve, mean)]
    high = [row["val/accuracy"]["high"] if row["val/accuracy"]["high"] is not None else m
            for row, m in zip(curve, mean)]
    n = len(results["seeds"])
    by_step.fill_between(steps, low, high, alpha=0.25, label=f"95% CI over {n} seeds")
    by_step.plot(steps, mean, marker="o", label="mean")
    for seed, run in results["per_seed"].items():
        by_step.plot(run["steps"], run["val/accuracy"], lw=0.8, alpha=0.5, ls="--", label=f"seed {seed}")
        by_time.plot([t / 60 for t in run["seconds"]], run["val/accuracy"], marker=".", alpha=0.8, label=f"seed {seed}")
    if results["lenient_base_accuracy"] is not None:
        for ax in (by_step, by_time):
            ax.axhline(results["lenient_base_accuracy"], color="grey", ls=":", lw=1,
                       label="base model, last number read (lenient)")
    by_step.set(xlabel="training step (updates)", ylabel="held-out accuracy (greedy, strict \\boxed{})",
                title="Held-out accuracy vs steps")
    by_time.set(xlabel="wall time since the run started (min)", title="Held-out accuracy vs wall time")
    for ax in (by_step, by_time):
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _ci(stat: dict, digits: int = 3) -> str:
    if stat["half_width"] is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]"


def markdown(results: dict, command: str) -> str:
    per_seed = results["per_seed"]
    first = per_seed[results["seeds"][0]]
    shas = sorted({f"{p['git_sha']}{' (dirty)' if p['git_dirty'] == 'true' else ''}" for p in per_seed.values()})
    lines = [
        "# Learning curve of the embedded default (`make train`)",
        "",
        "Generated by `experiments/learning_curve/report.py` from the MLflow runs (do not edit by hand).",
        "",
        "| | |", "|---|---|",
        f"| command | `{command}` |",
        f"| commit | {', '.join(f'`{s}`' for s in shas)} |",
        f"| machine | {first['machine']} |",
        f"| written | {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} |",
        f"| wall time per run | {_ci(results['wall_s'], 0)} s (mean [95% CI] over seeds; load, 3+ validations, steps) |",
        "",
        "| setting | value |", "|---|---|",
        *[f"| `{k}` | {v} |" for k, v in results["setup"].items()],
        "",
        f"Held-out accuracy: greedy, strict (only a closed `\\boxed{{}}` counts; a truncated reply scores 0), "
        f"mean [95% CI] over seeds {', '.join(map(str, results['seeds']))}:",
        "",
        "| step | mean wall time | accuracy | boxed | truncated | reply length (tokens) |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["curve"]:
        lines.append(f"| {row['step']} | {row['seconds_mean'] / 60:.1f} min | {_ci(row['val/accuracy'])} | "
                     f"{row['val/boxed_frac']['mean']:.3f} | {row['val/truncated_frac']['mean']:.3f} | "
                     f"{row['val/response_length']['mean']:.1f} |")
    gain = results["gain"]
    lines += [
        "",
        f"**Gain over the base model (final minus step 0): {_ci(gain)}**"
        + (f"; the interval excludes 0." if gain["low"] is not None and gain["low"] > 0 else "."),
        "",
        "| seed | run | step 0 | final | gain | final boxed | final truncated | train truncated (last step) | wall time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for seed, p in per_seed.items():
        lines.append(f"| {seed} | `{p['run_id'][:8]}` | {p['val/accuracy'][0]:.3f} | {p['val/accuracy'][-1]:.3f} | "
                     f"{p['val/accuracy'][-1] - p['val/accuracy'][0]:+.3f} | {p['val/boxed_frac'][-1]:.3f} | "
                     f"{p['val/truncated_frac'][-1]:.3f} | {p['train/truncated_frac_last']:.3f} | "
                     f"{p['wall_s'] / 60:.1f} min |")
    if results["lenient_base_accuracy"] is not None:
        lines += ["", f"Base model on the same questions with its last number read when it writes no box (lenient, "
                  f"`task.last_number_fallback=true`, run `{results['lenient_base_run_id'][:8]}`): "
                  f"**{results['lenient_base_accuracy']:.3f}**. This is what the base model can already compute; "
                  f"the strict step-0 score is lower because it does not box its answers."]
    lines += ["", "![learning curve](learning_curve.png)", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="learning_curve")
    parser.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'outputs' / 'mlflow.db'}")
    parser.add_argument("--command", default="experiments/learning_curve/run.sh")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--has-seed", type=int, default=None)
    parser.add_argument("--has-lenient-base", action="store_true")
    args = parser.parse_args()
    client = client_for(args.tracking_uri)
    if args.has_seed is not None:
        return 0 if args.has_seed in training_runs(client, args.experiment) else 1
    if args.has_lenient_base:
        return 0 if lenient_base_runs(client, args.experiment) else 1
    results = collect(client, args.experiment)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    plot(results, args.out / "learning_curve.png")
    (args.out / "RESULTS.md").write_text(markdown(results, args.command), encoding="utf-8")
    print(f"wrote {args.out / 'RESULTS.md'}, learning_curve.png, results.json; gain {_ci(results['gain'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
