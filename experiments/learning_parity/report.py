"""RESULTS.md, learning_parity.png and results.json of the parity study (hicra GRPO vs TRL GRPOTrainer), from MLflow.

    python experiments/learning_parity/report.py --command "experiments/learning_parity/run.sh"

Arms are told apart by the `framework` tag (hicra | trl); per arm, the newest finished run of each seed. The verdict
compares final held-out accuracy (Welch 95% interval of hicra minus TRL) and wall time per run.
`--has ARM --seed N` exits 0 when that run exists (run.sh skips it), 1 otherwise.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import run_curves as rc

from hicra.metrics.stats import mean_ci, welch_diff_ci

ARMS = {"hicra": "hicra GRPO", "trl": "TRL GRPOTrainer"}
TARGETS = (0.2, 0.3)  # held-out accuracies whose wall time to reach is reported (from 0.12 at step 0)


def arm_runs(client, experiment: str, arm: str) -> dict[int, object]:
    return rc.newest_per_seed(client, experiment, f"tags.framework = '{arm}'")


def verdict(diff: dict, wall_ratio: float) -> str:
    if diff["low"] is None:
        return "too few seeds for an interval."
    speed = f"hicra's runs took {wall_ratio:.2f}x TRL's wall time"
    if diff["low"] > 0:
        return f"hicra learns more than TRL (the interval excludes 0 and favours hicra); {speed}."
    if diff["high"] < 0:
        return (f"**hicra learns less than TRL** (the interval excludes 0): a bug to find, not a result; {speed}.")
    return f"no difference the study can resolve (the interval contains 0); {speed}."


def time_to_reach(runs: dict, target: float) -> dict:
    """Seconds from a run's start to its first held-out evaluation at or above `target`, per seed (None: never
    reached), and the median over the seeds that reached it. Evaluations every 5 steps bound the resolution."""
    seconds = {seed: next((t for t, a in zip(r["seconds"], r["val/accuracy"]) if a >= target), None)
               for seed, r in runs.items()}
    reached = sorted(t for t in seconds.values() if t is not None)
    return {"target": target, "per_seed": seconds, "reached": len(reached), "seeds": len(seconds),
            "median_s": statistics.median(reached) if reached else None}


def collect(client, experiment: str) -> dict:
    arms = {arm: {seed: rc.run_curves(client, run) for seed, run in arm_runs(client, experiment, arm).items()}
            for arm in ARMS}
    missing = [ARMS[a] for a, runs in arms.items() if not runs]
    if missing:
        raise SystemExit(f"no finished runs of {', '.join(missing)} in MLflow experiment '{experiment}'")
    finals = {arm: [r["val/accuracy"][-1] for r in runs.values()] for arm, runs in arms.items()}
    walls = {arm: [r["wall_s"] for r in runs.values()] for arm, runs in arms.items()}
    diff = welch_diff_ci(finals["hicra"], finals["trl"]).__dict__
    wall_ratio = (sum(walls["hicra"]) / len(walls["hicra"])) / (sum(walls["trl"]) / len(walls["trl"]))
    return {
        "experiment": experiment, "arms": arms, "curves": {arm: rc.mean_curve(runs) for arm, runs in arms.items()},
        "final": {arm: mean_ci(v).__dict__ for arm, v in finals.items()},
        "gain": {arm: mean_ci([r["val/accuracy"][-1] - r["val/accuracy"][0] for r in runs.values()]).__dict__
                 for arm, runs in arms.items()},
        "wall_s": {arm: mean_ci(v).__dict__ for arm, v in walls.items()},
        "diff_hicra_minus_trl": diff, "wall_ratio_hicra_over_trl": wall_ratio,
        "verdict": verdict(diff, wall_ratio),
        "time_to_reach": time_to_reach_all(arms),
    }


def time_to_reach_all(arms: dict) -> dict:
    return {arm: [time_to_reach(runs, target) for target in TARGETS] for arm, runs in arms.items()}


def markdown(results: dict, command: str) -> str:
    arms = results["arms"]
    rows = []
    for arm, label in ARMS.items():
        last = results["curves"][arm][-1]
        rows.append(f"| {label} | {len(arms[arm])} | {rc.ci_text(results['curves'][arm][0]['val/accuracy'])} | "
                    f"{rc.ci_text(results['final'][arm])} | {rc.ci_text(results['gain'][arm])} | "
                    f"{last['val/boxed_frac']['mean']:.3f} | {last['val/truncated_frac']['mean']:.3f} | "
                    f"{rc.ci_text(results['wall_s'][arm], 0)} s |")
    per_run = [f"| {ARMS[arm]} | {seed} | `{r['run_id'][:8]}` | {r['val/accuracy'][0]:.3f} | "
               f"{r['val/accuracy'][-1]:.3f} | {r['val/truncated_frac'][-1]:.3f} | {r['wall_s'] / 60:.1f} min |"
               for arm in ARMS for seed, r in arms[arm].items()]
    return "\n".join([
        *rc.report_header("Learning parity: hicra GRPO vs TRL GRPOTrainer on the embedded default",
                          "experiments/learning_parity/report.py", command,
                          {**arms["hicra"], **{-1 - s: r for s, r in arms["trl"].items()}}),
        "",
        "Both arms: `conf/train.yaml` defaults with `algorithm=grpo planner=none` (SmolLM2-135M-Instruct, chain_sum,",
        "reward = correctness + format_reward x boxed, 4 prompts x 8 samples, 64 new tokens, T = 0.7, AdamW 3e-5",
        "constant, clip 0.2/0.28, beta 0, token-mean loss), the same prompt batches in the same order per seed;",
        "TRL's side is `trl_grpo.py` (the mapping: `benchmarks/bench_trl.grpo_config`). Held-out accuracy for both:",
        ("hicra's greedy, strict protocol on the task's held-out questions at steps "
         f"{', '.join(str(row['step']) for row in results['curves']['hicra'])}."),
        "",
        "| arm | seeds | step 0 | final accuracy | gain | final boxed | final truncated | wall time per run |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        (f"**hicra minus TRL, final held-out accuracy: {rc.ci_text(results['diff_hicra_minus_trl'])}** (Welch 95%). "
         f"Verdict: {results['verdict']}"),
        "",
        ("Wall time to a result: seconds from a run's start to its first held-out evaluation at or above the "
         "accuracy (median over the seeds that reached it; evaluations at steps 0, 5, 10, 15)."),
        "",
        "| target accuracy | hicra GRPO | TRL GRPOTrainer | hicra / TRL |",
        "|---|---|---|---|",
        *time_rows(results),
        "",
        "| arm | seed | run | step 0 | final | final truncated | wall time |",
        "|---|---|---|---|---|---|---|",
        *per_run,
        "",
        "![learning parity](learning_parity.png)",
        "",
    ])


def time_rows(results: dict) -> list[str]:
    ttr = results["time_to_reach"]
    rows = []
    for i, target in enumerate(TARGETS):
        h, t = ttr["hicra"][i], ttr["trl"][i]
        cell = lambda x: f"{x['median_s']:.0f} s ({x['reached']}/{x['seeds']} seeds)" if x["median_s"] else \
            f"not reached (0/{x['seeds']})"
        ratio = f"{h['median_s'] / t['median_s']:.2f}x" if h["median_s"] and t["median_s"] else "n/a"
        rows.append(f"| {target:.2f} | {cell(h)} | {cell(t)} | {ratio} |")
    return rows


def main() -> int:
    parser = rc.report_parser(__doc__, "experiments/learning_parity/run.sh", HERE)
    parser.add_argument("--experiment", default="learning_parity")
    parser.add_argument("--has", choices=sorted(ARMS), default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--from-json", type=Path, default=None,
                        help="re-render RESULTS.md from a results.json (no MLflow store needed)")
    args = parser.parse_args()
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text(encoding="utf-8"))
        results["arms"] = {arm: {int(seed): r for seed, r in runs.items()} for arm, runs in results["arms"].items()}
        results["time_to_reach"] = time_to_reach_all(results["arms"])
        (args.out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
        (args.out / "RESULTS.md").write_text(markdown(results, args.command), encoding="utf-8")
        print("\n".join(time_rows(results)))
        return 0
    client = rc.client_for(args.tracking_uri)
    if args.has is not None:
        return 0 if args.seed in arm_runs(client, args.experiment, args.has) else 1
    results = collect(client, args.experiment)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    rc.plot_accuracy({label: results["arms"][arm] for arm, label in ARMS.items()}, args.out / "learning_parity.png")
    (args.out / "RESULTS.md").write_text(markdown(results, args.command), encoding="utf-8")
    print(f"wrote {args.out / 'RESULTS.md'}; hicra - TRL {rc.ci_text(results['diff_hicra_minus_trl'])}; "
          f"{results['verdict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
