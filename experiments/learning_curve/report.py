"""RESULTS.md, learning_curve.png and results.json for the README's learning curve, read from MLflow.

    python experiments/learning_curve/report.py --experiment learning_curve --command "experiments/learning_curve/run.sh"

One finished training run per seed (the newest, if a seed ran twice). The gain is final minus step-0 held-out
accuracy per seed, with a t interval over seeds. `--has-seed N` / `--has-lenient-base` exit 0 when that run exists
(run.sh skips it), 1 otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import run_curves as rc

from hicra.metrics.stats import mean_ci

SETUP_KEYS = ["model.name_or_path", "algorithm.alpha", "task.dataset", "task.min_digits", "task.max_digits",
              "task.val_size", "task.last_number_fallback", "trainer.max_steps", "prompts_per_step",
              "algorithm.group_size", "rollout.max_new_tokens", "rollout.temperature", "optim.lr", "format_reward"]


def lenient_base_runs(client, experiment: str) -> list:
    """Finished eval runs of the base model with the last-number reading on (run.sh's second stage)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], "tags.`hicra.run_kind` = 'eval' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"])
    return [r for r in runs if r.data.params.get("task.last_number_fallback") == "True"]


def collect(client, experiment: str) -> dict:
    runs = rc.newest_per_seed(client, experiment)
    if not runs:
        raise SystemExit(f"no finished training runs in MLflow experiment '{experiment}'")
    per_seed = {seed: rc.run_curves(client, run) for seed, run in runs.items()}
    lenient = lenient_base_runs(client, experiment)
    first = next(iter(runs.values()))
    return {
        "experiment": experiment, "seeds": list(per_seed), "per_seed": per_seed, "curve": rc.mean_curve(per_seed),
        "gain": mean_ci([r["val/accuracy"][-1] - r["val/accuracy"][0] for r in per_seed.values()]).__dict__,
        "wall_s": mean_ci([r["wall_s"] for r in per_seed.values()]).__dict__,
        "setup": {k: first.data.params[k] for k in SETUP_KEYS if k in first.data.params},
        "lenient_base_accuracy": lenient[0].data.metrics.get("eval/score") if lenient else None,
        "lenient_base_run_id": lenient[0].info.run_id if lenient else None,
    }


def markdown(results: dict, command: str) -> str:
    per_seed = results["per_seed"]
    gain = results["gain"]
    lines = [
        *rc.report_header("Learning curve of the embedded default (`make train`)",
                          "experiments/learning_curve/report.py", command, per_seed),
        (f"| wall time per run | {rc.ci_text(results['wall_s'], 0)} s (mean [95% CI] over seeds: model load, "
         "validations, steps) |"),
        "",
        "| setting | value |", "|---|---|",
        *[f"| `{k}` | {v} |" for k, v in results["setup"].items()],
        "",
        ("Held-out accuracy: greedy, strict (only a closed `\\boxed{}` in a finished reply counts; a reply cut at the "
         f"token budget scores 0), mean [95% CI] over seeds {', '.join(map(str, results['seeds']))}:"),
        "",
        "| step | mean wall time | accuracy | boxed | truncated | reply length (tokens) |",
        "|---|---|---|---|---|---|",
        *[f"| {row['step']} | {row['seconds_mean'] / 60:.1f} min | {rc.ci_text(row['val/accuracy'])} | "
          f"{row['val/boxed_frac']['mean']:.3f} | {row['val/truncated_frac']['mean']:.3f} | "
          f"{row['val/response_length']['mean']:.1f} |" for row in results["curve"]],
        "",
        f"**Gain over the base model (final minus step 0): {rc.ci_text(gain)}**"
        + ("; the interval excludes 0." if gain["low"] is not None and gain["low"] > 0 else "."),
        "",
        "| seed | run | step 0 | final | gain | final boxed | final truncated | train truncated (last step) | wall time |",
        "|---|---|---|---|---|---|---|---|---|",
        *[f"| {seed} | `{r['run_id'][:8]}` | {r['val/accuracy'][0]:.3f} | {r['val/accuracy'][-1]:.3f} | "
          f"{r['val/accuracy'][-1] - r['val/accuracy'][0]:+.3f} | {r['val/boxed_frac'][-1]:.3f} | "
          f"{r['val/truncated_frac'][-1]:.3f} | {r['train/truncated_frac_last']:.3f} | {r['wall_s'] / 60:.1f} min |"
          for seed, r in per_seed.items()],
    ]
    if results["lenient_base_accuracy"] is not None:
        lines += ["", (f"Base model on the same questions, its last number read when it writes no box (lenient, "
                   f"`task.last_number_fallback=true`, eval run `{results['lenient_base_run_id'][:8]}`): "
                   f"**{results['lenient_base_accuracy']:.3f}**. That is what the base model can already compute; the "
                   "strict step-0 score is lower because it rarely boxes its answer.")]
    return "\n".join([*lines, "", "![learning curve](learning_curve.png)", ""])


def main() -> int:
    parser = rc.report_parser(__doc__, "experiments/learning_curve/run.sh", HERE)
    parser.add_argument("--experiment", default="learning_curve")
    parser.add_argument("--has-seed", type=int, default=None)
    parser.add_argument("--has-lenient-base", action="store_true")
    args = parser.parse_args()
    client = rc.client_for(args.tracking_uri)
    if args.has_seed is not None:
        return 0 if args.has_seed in rc.newest_per_seed(client, args.experiment) else 1
    if args.has_lenient_base:
        return 0 if lenient_base_runs(client, args.experiment) else 1
    results = collect(client, args.experiment)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    baseline = None
    if results["lenient_base_accuracy"] is not None:
        baseline = ("base model, last number read (lenient)", results["lenient_base_accuracy"])
    rc.plot_accuracy({"HICRA (make train)": results["per_seed"]}, args.out / "learning_curve.png", baseline)
    (args.out / "RESULTS.md").write_text(markdown(results, args.command), encoding="utf-8")
    print(f"wrote {args.out / 'RESULTS.md'}, learning_curve.png, results.json; gain {rc.ci_text(results['gain'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
