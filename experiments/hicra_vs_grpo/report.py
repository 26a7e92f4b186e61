"""RESULTS.md, hicra_vs_grpo.png and results.json of the HICRA vs GRPO study, read from MLflow.

    python experiments/hicra_vs_grpo/report.py --command "experiments/hicra_vs_grpo/run.sh"

Arms are told apart by the `arm` tag the study's experiment configs set (conf/experiment/hicra_vs_grpo/*.yaml); per
arm, the newest finished training run of each seed, and the newest eval run of that training run. The base model is
the eval run without a source run. Every arm is compared with GRPO: Welch 95% interval of the difference over seeds,
and the smallest true difference the study would find 80% of the time (its detectable difference).
`--missing --seed N --arms A B` prints the arms without a finished run of seed N as Hydra's comma list (run.sh trains
them); `--has-base` exits 0 when the base model's eval run exists, 1 otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import run_curves as rc  # noqa: E402

from hicra.metrics.stats import mean_ci, t_quantile, welch_diff_ci  # noqa: E402

EXPERIMENT = "hicra_vs_grpo"
ARMS = {"grpo": "GRPO", "hicra": "HICRA (paper's grams)", "placebo": "Placebo HICRA (random n-grams)",
        "placebo_spans": "Placebo HICRA (random spans)", "entropy_reg": "Entropy-regularised GRPO",
        "high_entropy": "High-Entropy Advantage"}
EVAL_KEYS = ("eval/pass_at_1", "eval/boxed_frac", "eval/truncated_frac", "eval/response_length")
SETUP_KEYS = ["model.name_or_path", "task.dataset", "task.min_digits", "task.max_digits", "task.val_size",
              "trainer.max_steps", "prompts_per_step", "algorithm.group_size", "rollout.max_new_tokens",
              "rollout.temperature", "optim.lr", "format_reward", "algorithm.alpha"]


def arm_runs(client, arm: str) -> dict[int, object]:
    return rc.newest_per_seed(client, EXPERIMENT, f"tags.arm = '{arm}'")


def eval_runs(client) -> list:
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], "tags.`hicra.run_kind` = 'eval' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=5000)


def base_eval(evals: list):
    return next((r for r in evals if "hicra.source_run_id" not in r.data.tags), None)


def run_row(client, run, evals: list) -> dict:
    """One training run: its validation curves, its eval numbers and its planning-token share."""
    row = rc.run_curves(client, run)
    row["final"] = row["val/accuracy"][-1]  # greedy held-out accuracy after training
    ev = next((r for r in evals if r.data.tags.get("hicra.source_run_id") == run.info.run_id), None)
    row |= {key: ev.data.metrics.get(key) if ev else None for key in EVAL_KEYS}
    row["eval_run_id"] = ev.info.run_id if ev else None
    planning = [v for _, v, _ in rc.history(client, run, "hierarchy/planning_token_frac")]
    row["planning_token_frac"] = sum(planning) / len(planning) if planning else None
    return row


def detectable(a: list[float], b: list[float], power: float = 0.8) -> float | None:
    """Smallest true difference of means a two-sided Welch test at 5% finds with `power`, given these seeds' spread:
    (t_0.975 + t_power) x SE, at the Welch degrees of freedom of the data."""
    ci = welch_diff_ci(a, b)
    if ci.se is None or ci.dof is None:
        return None
    return (t_quantile(0.975, ci.dof) + t_quantile(power, ci.dof)) * ci.se


def present(rows: dict[int, dict], key: str) -> list[float]:
    """One value per seed of `key`, the seeds without it (no eval run yet) left out."""
    return [r[key] for r in rows.values() if r[key] is not None]


def summary(rows: dict[int, dict], key: str) -> dict | None:
    values = present(rows, key)
    return mean_ci(values).__dict__ if values else None


def collect(client) -> dict:
    evals = eval_runs(client)
    runs = {arm: found for arm in ARMS if (found := arm_runs(client, arm))}
    if "grpo" not in runs:
        raise SystemExit(f"no finished GRPO runs in MLflow experiment '{EXPERIMENT}'")
    arms = {arm: {seed: run_row(client, run, evals) for seed, run in by_seed.items()} for arm, by_seed in runs.items()}
    base = base_eval(evals)
    first = next(iter(runs["grpo"].values()))
    stats = {}
    for arm, rows in arms.items():
        stats[arm] = {
            "seeds": list(rows), "step0": mean_ci([r["val/accuracy"][0] for r in rows.values()]).__dict__,
            "gain": mean_ci([r["final"] - r["val/accuracy"][0] for r in rows.values()]).__dict__,
            **{key: summary(rows, key) for key in ("final", *EVAL_KEYS, "planning_token_frac",
                                                    "train/truncated_frac_last", "wall_s")},
        }
        for key, name in (("final", "val"), ("eval/pass_at_1", "eval")) if arm != "grpo" else ():
            a, b = present(rows, key), present(arms["grpo"], key)
            if len(a) >= 2 and len(b) >= 2:
                stats[arm][f"diff_{name}"] = welch_diff_ci(a, b).__dict__
                stats[arm][f"detectable_{name}"] = detectable(a, b)
    return {
        "experiment": EXPERIMENT, "arms": arms, "stats": stats,
        "curves": {arm: rc.mean_curve(rows) for arm, rows in arms.items()},
        "base": {key: base.data.metrics.get(key) for key in EVAL_KEYS} | {"run_id": base.info.run_id} if base else None,
        "setup": {k: first.data.params[k] for k in SETUP_KEYS if k in first.data.params},
    }


def frac(stat: dict | None, digits: int = 3) -> str:
    return "n/a" if stat is None else rc.ci_text(stat, digits)


def number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def mean_only(stat: dict | None, digits: int = 3) -> str:
    return "n/a" if stat is None else f"{stat['mean']:.{digits}f}"


def markdown(results: dict, command: str) -> str:
    arms, stats, base = results["arms"], results["stats"], results["base"]
    table = ["| arm | seeds | greedy step 0 | greedy final | gain | eval pass@1 | eval boxed | eval truncated | "
             "train truncated (last step) | planning tokens | wall time per run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    if base:
        table.append(f"| base model (no training) | - | - | - | - | {base['eval/pass_at_1']:.3f} | "
                     f"{base['eval/boxed_frac']:.3f} | {base['eval/truncated_frac']:.3f} | - | - | - |")
    for arm, s in stats.items():
        table.append(f"| {ARMS[arm]} | {len(s['seeds'])} | {frac(s['step0'])} | {frac(s['final'])} | "
                     f"{frac(s['gain'])} | {frac(s['eval/pass_at_1'])} | {mean_only(s['eval/boxed_frac'])} | "
                     f"{mean_only(s['eval/truncated_frac'])} | {mean_only(s['train/truncated_frac_last'])} | "
                     f"{mean_only(s['planning_token_frac'])} | {rc.ci_text(s['wall_s'], 0)} s |")
    diffs = ["| arm minus GRPO | greedy final: difference | detectable | eval pass@1: difference | detectable |",
             "|---|---|---|---|---|"]
    for arm, s in stats.items():
        if "diff_val" in s:
            diffs.append(f"| {ARMS[arm]} | {rc.ci_text(s['diff_val'])} | {s['detectable_val']:.3f} | "
                         f"{frac(s.get('diff_eval'))} | "
                         f"{number(s.get('detectable_eval'))} |")
    per_run = [f"| {ARMS[arm]} | {seed} | `{r['run_id'][:8]}` | {r['val/accuracy'][0]:.3f} | "
               f"{r['val/accuracy'][-1]:.3f} | {number(r['eval/pass_at_1'])} | {number(r['eval/truncated_frac'])} | "
               f"{r['train/truncated_frac_last']:.3f} | {r['wall_s'] / 60:.1f} min |"
               for arm, rows in arms.items() for seed, r in rows.items()]
    every_run = {f"{arm}{seed}": r for arm, rows in arms.items() for seed, r in rows.items()}
    return "\n".join([
        *rc.report_header("HICRA vs GRPO and baselines on the embedded default", "experiments/hicra_vs_grpo/report.py",
                          command, every_run),
        "",
        "The reading of these numbers (what the study can and cannot detect): `experiments/hicra_vs_grpo/README.md`.",
        "",
        "| setting | value |", "|---|---|", *[f"| `{k}` | {v} |" for k, v in results["setup"].items()],
        "",
        "Two held-out measurements, both strict (only a closed `\\boxed{}` in a finished reply counts; a reply cut at",
        "the token budget scores 0), on the task's 200 held-out questions: **greedy** accuracy, logged by training at",
        "each validation step (step 0 is the base model), and **eval pass@1**, `hicra-eval` after training with the",
        "paper's sampling protocol at this scale (k = 4 samples at T = 0.6, top-p 0.95, 128 new tokens). Mean [95% CI]",
        "over seeds; boxed, truncated and planning-token shares are means. Planning tokens: the share of response",
        "tokens the arm's detector marked (`hierarchy/planning_token_frac`, mean over steps).",
        "",
        *table,
        "",
        "Each arm against GRPO: Welch 95% interval of the difference over seeds; *detectable* is the smallest true",
        "difference this many seeds would find 80% of the time (two-sided, 5%), given the spread the seeds showed.",
        "",
        *diffs,
        "",
        "| arm | seed | run | greedy step 0 | greedy final | eval pass@1 | eval truncated | train truncated | "
        "wall time |",
        "|---|---|---|---|---|---|---|---|---|",
        *per_run,
        "",
        "![HICRA vs GRPO](hicra_vs_grpo.png)",
        "",
    ])


def main() -> int:
    parser = rc.report_parser(__doc__, "experiments/hicra_vs_grpo/run.sh", HERE)
    parser.add_argument("--missing", action="store_true")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    parser.add_argument("--has-base", action="store_true")
    args = parser.parse_args()
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"report.py: arm '{unknown[0]}' is not allowed; allowed: {', '.join(ARMS)}")
    client = rc.client_for(args.tracking_uri)
    if args.missing:
        print(",".join(f"hicra_vs_grpo/{arm}" for arm in args.arms if args.seed not in arm_runs(client, arm)))
        return 0
    if args.has_base:
        return 0 if base_eval(eval_runs(client)) else 1
    results = collect(client)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    base_line = None
    if results["base"]:
        base_line = ("base model, eval pass@1", results["base"]["eval/pass_at_1"])
    rc.plot_accuracy({ARMS[arm]: rows for arm, rows in results["arms"].items()}, args.out / "hicra_vs_grpo.png",
                     base_line)
    (args.out / "RESULTS.md").write_text(markdown(results, args.command), encoding="utf-8")
    print(f"wrote {args.out / 'RESULTS.md'}, hicra_vs_grpo.png, results.json")
    for arm, s in results["stats"].items():
        if "diff_val" in s:
            print(f"{ARMS[arm]} - GRPO: greedy final {rc.ci_text(s['diff_val'])}, eval {frac(s.get('diff_eval'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
