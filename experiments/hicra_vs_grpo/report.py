"""RESULTS.md, hicra_vs_grpo.png and results.json of the paired HICRA vs GRPO study, read from MLflow.

    python experiments/hicra_vs_grpo/report.py --command "experiments/hicra_vs_grpo/run.sh"

Arms are told apart by the `arm` tag of the study's configs (conf/experiment/hicra_vs_grpo/*.yaml); per arm, the newest
finished training run of each seed. Every arm runs the same seeds, so each arm is compared with GRPO seed by seed
(hicra.metrics.paired): the mean of the per-seed differences with its t interval, the smallest true difference the
seeds would find 80% of the time (exact noncentral t), and for accuracy the seeds a paper-sized difference needs.
The pairing's premise is checked, not assumed: a seed's first training batch (step 0, sampled before any update) must
be the same in every arm, whatever commit each run came from; the report counts the pairs where it is.
Without `--arms`, every arm with finished runs is reported (GRPO always, as the baseline).
`--missing --seed N --arms A B` prints the arms without a finished run of seed N as Hydra's comma list (run.sh trains
them).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import run_curves as rc

from hicra.metrics.paired import METHOD, detectable_difference, pair_by_seed, seeds_needed
from hicra.metrics.stats import mean_ci

EXPERIMENT = "hicra_vs_grpo"
ARMS = {"grpo": "GRPO", "hicra": "HICRA, paper's grams, alpha 0.2", "hicra_mined": "HICRA, mined grams, alpha 0.2",
        "hicra_alpha": "HICRA, paper's grams, alpha 0.5", "placebo": "Placebo HICRA (random n-grams, matched share)",
        "placebo_spans": "Placebo HICRA (random spans)", "entropy_reg": "Entropy-regularised GRPO",
        "high_entropy": "High-Entropy Advantage"}
LAST_STEPS = 5        # a per-step outcome's end-of-run value: its mean over the last 5 training steps
LAST_VALIDATIONS = 2  # held-out accuracy: the mean of the last 2 validations (steps 10 and 15 of the default)
PAPER_EFFECT = 0.05   # the paper's HICRA-over-GRPO gains are +2 to +8 points of pass@1: 0.05 of accuracy
SETUP_KEYS = ["model.name_or_path", "task.dataset", "task.min_terms", "task.max_terms", "task.val_size",
              "trainer.max_steps", "prompts_per_step", "algorithm.group_size", "rollout.max_new_tokens",
              "rollout.temperature", "optim.lr", "format_reward"]


@dataclass(frozen=True)
class Outcome:
    key: str          # the MLflow metric
    label: str
    window: str       # "last_steps": mean of the last LAST_STEPS steps; "last_validations"; "all_steps"


OUTCOMES = {
    # over every step, not the end: a plan both methods adopt in the end can still be adopted sooner under HICRA
    "adoption": Outcome("hierarchy/gram_reply_frac", "plan adoption (replies with a Strategic Gram, mean over steps)",
                        "all_steps"),
    "adoption_end": Outcome("hierarchy/gram_reply_frac", "plan adoption, last 5 steps", "last_steps"),
    "nll_planning": Outcome("hierarchy/nll_planning", "planning tokens' NLL (nats)", "last_steps"),
    "rel_ppl_planning": Outcome("hierarchy/rel_ppl_planning", "planning tokens' perplexity / step 0's",
                                "last_steps"),
    "accuracy": Outcome("val/accuracy", "held-out accuracy (greedy, strict)", "last_validations"),
    "marked": Outcome("hierarchy/planning_token_frac", "tokens the arm's detector marks", "all_steps"),
    "truncated": Outcome("train/truncated_frac", "training replies cut at the budget", "last_steps"),
}
PAIRED = ("adoption", "nll_planning", "rel_ppl_planning", "accuracy")  # primary, mechanism, secondary
# Descriptive, added once the runs showed it: a run ends on one of two routes, its replies all planning or none
# (adoption over the last 5 steps >= 0.98 or <= 0.01 in the first 27 runs), so the midpoint tells them apart.
KEPT_PLAN = 0.5
# the step-0 batch's statistics: equal in two runs of one seed when both sampled the same replies from the same model
FIRST_BATCH_KEYS = ("train/response_length", "train/reward_mean", "train/truncated_frac")


def arm_runs(client, arm: str) -> dict[int, object]:
    return rc.newest_per_seed(client, EXPERIMENT, f"tags.arm = '{arm}'")


def finite_mean(values: list[float]) -> float | None:
    kept = [v for v in values if math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None


def window_value(values: list[float], window: str) -> float | None:
    """One run's value of an outcome from its history (in step order)."""
    if window == "last_steps":
        return finite_mean(values[-LAST_STEPS:])
    if window == "last_validations":
        return finite_mean(values[-LAST_VALIDATIONS:])
    return finite_mean(values)


def run_row(client, run) -> dict:
    """One training run: every outcome's end-of-run value, its adoption curve and its held-out curve."""
    row = rc.run_curves(client, run)  # reads val/* already: those histories are not fetched twice
    # every other metric once, with its steps: an outcome and the first-batch check may read the same one
    logged = {key: rc.history(client, run, key)
              for key in {*(o.key for o in OUTCOMES.values()), *FIRST_BATCH_KEYS} if key not in row}
    values = {key: [v for _, v, _ in rows] for key, rows in logged.items()}
    histories = {name: row[o.key] if o.key in row else values[o.key] for name, o in OUTCOMES.items()}
    row["outcomes"] = {name: window_value(history, OUTCOMES[name].window) for name, history in histories.items()}
    row["adoption_curve"] = histories["adoption"]
    row["first_batch"] = {key: next((v for step, v, _ in logged[key] if step == 0), None) for key in FIRST_BATCH_KEYS}
    return row


def same_first_batch(rows: dict[int, dict], baseline: dict[int, dict]) -> dict:
    """The seeds both arms ran, split by whether their step-0 batches match (the pairing's premise)."""
    seeds = sorted(set(rows) & set(baseline))
    differ = [s for s in seeds if rows[s]["first_batch"] != baseline[s]["first_batch"]
              or None in rows[s]["first_batch"].values()]
    return {"same": [s for s in seeds if s not in differ], "differ": differ}


def paired(rows: dict[int, dict], baseline: dict[int, dict], outcome: str) -> dict:
    """Arm minus GRPO seed by seed: the differences, their mean and t interval, the detectable difference."""
    def values(by_seed: dict[int, dict]) -> dict[str, float]:
        return {str(s): r["outcomes"][outcome] for s, r in by_seed.items() if r["outcomes"][outcome] is not None}

    pairing = pair_by_seed(values(rows), values(baseline))
    diffs = pairing.differences
    ci = mean_ci(diffs)
    entry = {"seeds": list(pairing.pairs), "differences": diffs, "mean": ci.mean, "low": ci.low, "high": ci.high,
             "half_width": ci.half_width, "sd": ci.sd, "unpaired": pairing.only_arm + pairing.only_baseline,
             "detectable": detectable_difference(ci.sd, len(diffs))}
    if outcome == "accuracy":
        entry["seeds_for_paper_effect"] = seeds_needed(PAPER_EFFECT, ci.sd) if ci.sd else None
    return entry


def reported_arms(requested: list[str]) -> list[str]:
    """GRPO first, always (every arm is paired with it), then the requested arms in their order."""
    return ["grpo", *(arm for arm in requested if arm != "grpo")]


def collect(client, arms: list[str]) -> dict:
    runs = {arm: found for arm in arms if (found := arm_runs(client, arm))}
    if "grpo" not in runs:
        raise SystemExit(f"no finished GRPO runs in MLflow experiment '{EXPERIMENT}'")
    rows = {arm: {seed: run_row(client, run) for seed, run in by_seed.items()} for arm, by_seed in runs.items()}
    stats = {arm: {name: mean_ci([v for r in by_seed.values() if (v := r["outcomes"][name]) is not None]).__dict__
                   for name in OUTCOMES} for arm, by_seed in rows.items()}
    comparisons = {arm: {name: paired(by_seed, rows["grpo"], name) for name in PAIRED}
                   for arm, by_seed in rows.items() if arm != "grpo"}
    first_batches = {arm: same_first_batch(by_seed, rows["grpo"]) for arm, by_seed in rows.items() if arm != "grpo"}
    first = next(iter(runs["grpo"].values()))
    return {"experiment": EXPERIMENT, "method": METHOD, "arms": rows, "stats": stats, "paired": comparisons,
            "first_batches": first_batches, "setup": {k: first.data.params[k] for k in SETUP_KEYS if k in first.data.params}}


def num(value: float | None, digits: int = 3, sign: bool = False) -> str:
    return "n/a" if value is None else f"{value:{'+' if sign else ''}.{digits}f}"


def interval(entry: dict, digits: int = 3) -> str:
    if entry.get("half_width") is None:
        return num(entry.get("mean"), digits, sign=True)
    return f"{entry['mean']:+.{digits}f} [{entry['low']:+.{digits}f}, {entry['high']:+.{digits}f}]"


def arm_table(results: dict) -> list[str]:
    names = list(OUTCOMES)
    lines = ["| arm | seeds | " + " | ".join(OUTCOMES[n].label for n in names) + " | wall time per run, median |",
             "|---|---|" + "---|" * len(names) + "---|"]
    for arm, by_seed in results["arms"].items():
        cells = [rc.ci_text(results["stats"][arm][n]) if results["stats"][arm][n]["n"] else "n/a" for n in names]
        # Median: wall time is MLflow's start to end, so a run resumed after a stop counts the pause.
        wall = statistics.median(r["wall_s"] / 60 for r in by_seed.values())
        lines.append(f"| {ARMS[arm]} | {len(by_seed)} | " + " | ".join(cells) + f" | {wall:.1f} min |")
    return lines


def paired_table(results: dict) -> list[str]:
    lines = [("| arm minus GRPO | outcome | pairs | mean difference [95% CI] | detectable (power 0.8) | "
              "per-seed differences |"), "|---|---|---|---|---|---|"]
    for arm, by_outcome in results["paired"].items():
        for name, entry in by_outcome.items():
            diffs = ", ".join(f"{d:+.3f}" for d in entry["differences"])
            lines.append(f"| {ARMS[arm]} | {OUTCOMES[name].label} | {len(entry['differences'])} | {interval(entry)} | "
                         f"{num(entry['detectable'])} | {diffs} |")
    return lines


def per_run_table(results: dict) -> list[str]:
    lines = [("| arm | seed | run | adoption (mean over steps) | planning NLL | accuracy (last 2 validations) | "
              "marked tokens | truncated | wall time |"), "|---|---|---|---|---|---|---|---|---|"]
    for arm, by_seed in results["arms"].items():
        for seed, r in by_seed.items():
            o = r["outcomes"]
            lines.append(f"| {ARMS[arm]} | {seed} | `{r['run_id'][:8]}` | {num(o['adoption'])} | "
                         f"{num(o['nll_planning'])} | {num(o['accuracy'])} | {num(o['marked'])} | "
                         f"{num(o['truncated'])} | {r['wall_s'] / 60:.1f} min |")
    return lines


def routes(results: dict) -> dict[str, dict[str, list[int]]]:
    """Per arm, the seeds whose replies still plan at the end of the run, and those that dropped the plan."""
    found = {}
    for arm, by_seed in results["arms"].items():
        ends = {int(seed): r["outcomes"]["adoption_end"] for seed, r in by_seed.items()}
        found[arm] = {"kept": sorted(s for s, v in ends.items() if v is not None and v > KEPT_PLAN),
                      "dropped": sorted(s for s, v in ends.items() if v is not None and v <= KEPT_PLAN)}
    return found


def route_lines(results: dict) -> list[str]:
    found = routes(results)
    grpo_kept, grpo_seeds = set(found["grpo"]["kept"]), {*found["grpo"]["kept"], *found["grpo"]["dropped"]}
    lines = []
    for arm, route in found.items():
        seeds = len(route["kept"]) + len(route["dropped"])
        line = f"- {ARMS[arm]}: kept the plan in {len(route['kept'])} of {seeds} seeds"
        if route["dropped"]:
            line += f" (dropped it in seed {', '.join(map(str, route['dropped']))})"
        if arm != "grpo":
            other = sorted(s for s in (*route["kept"], *route["dropped"])
                           if s in grpo_seeds and (s in route["kept"]) != (s in grpo_kept))
            line += f"; another route than GRPO's in seed {', '.join(map(str, other))}" if other else \
                "; GRPO's route in every seed"
        lines.append(line)
    return lines


def first_batch_lines(results: dict) -> list[str]:
    lines = []
    for arm, check in results["first_batches"].items():
        pairs = len(check["same"]) + len(check["differ"])
        differ = f"; differs in seed {', '.join(map(str, check['differ']))}" if check["differ"] else ""
        lines.append(f"- {ARMS[arm]}: the same as GRPO's in {len(check['same'])} of {pairs} pairs{differ}")
    return lines


def paper_effect_lines(results: dict) -> list[str]:
    lines = []
    for arm, by_outcome in results["paired"].items():
        needed = by_outcome["accuracy"].get("seeds_for_paper_effect")
        if needed is not None:
            lines.append(f"- {ARMS[arm]}: {needed} paired seeds for a true accuracy difference of {PAPER_EFFECT} "
                         f"(the SD of its per-seed differences, {by_outcome['accuracy']['sd']:.3f}).")
    return lines


def markdown(results: dict, command: str) -> str:
    every_run = {f"{arm}{seed}": r for arm, rows in results["arms"].items() for seed, r in rows.items()}
    return "\n".join([
        *rc.report_header("HICRA vs GRPO, paired by seed, on the embedded default",
                          "experiments/hicra_vs_grpo/report.py", command, every_run),
        "",
        "The reading of these numbers (what the study can and cannot detect): `experiments/hicra_vs_grpo/README.md`.",
        "",
        "| setting | value |", "|---|---|", *[f"| `{k}` | {v} |" for k, v in results["setup"].items()],
        "",
        "Outcomes, one value per run: plan adoption and marked tokens as their mean over every training step (how soon",
        f"as well as how much); the planning tokens' NLL and perplexity and truncation over the last {LAST_STEPS} steps;",
        f"held-out accuracy as the mean of the last {LAST_VALIDATIONS} validations (greedy, strict, the task's held-out",
        "questions). Plan adoption, the planning tokens' NLL and their",
        "relative perplexity use the paper's Strategic Grams in every arm (`diagnostics.grams_path`), whichever planner",
        "drove the advantage, so the arms are measured with one ruler. Mean [95% CI] over seeds:",
        "",
        *arm_table(results),
        "",
        "Routes (descriptive): a run ends with every reply planning or none, so a seed kept the plan when its plan",
        f"adoption over the last {LAST_STEPS} steps is above {KEPT_PLAN}:",
        "",
        *route_lines(results),
        "",
        "Each arm minus GRPO, seed by seed (the same seed: the same prompts and the same first samples). Interval: t over",
        f"the per-seed differences; detectable: the smallest true difference these pairs find 80% of the time ({METHOD}).",
        "",
        *paired_table(results),
        "",
        "The pairing's premise, checked: each seed's first training batch (step 0, sampled before any update; its",
        f"{', '.join(f'`{k}`' for k in FIRST_BATCH_KEYS)}) is the same in both runs of a pair:",
        "",
        *first_batch_lines(results),
        "",
        f"Seeds a paper-sized accuracy difference ({PAPER_EFFECT}) needs at this spread (same test):",
        "",
        *(paper_effect_lines(results) or ["- not computable yet (fewer than 2 pairs, or no spread)"]),
        "",
        "Wall time is the MLflow run's start to end: a run stopped and resumed, or run beside other work, counts that.",
        "",
        *per_run_table(results),
        "",
        "![HICRA vs GRPO](hicra_vs_grpo.png)",
        "",
    ])


def plot(results: dict, path: Path) -> None:
    """Plan adoption per training step and held-out accuracy per validation: mean over seeds, one colour per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (adoption, accuracy) = plt.subplots(1, 2, figsize=(11, 4))
    for arm, by_seed in results["arms"].items():
        curves = [r["adoption_curve"] for r in by_seed.values() if r["adoption_curve"]]
        steps = min(map(len, curves)) if curves else 0
        if steps:
            adoption.plot(range(steps), [sum(c[i] for c in curves) / len(curves) for i in range(steps)],
                          label=ARMS[arm])
        runs = list(by_seed.values())
        points = min(len(r["val/accuracy"]) for r in runs)
        accuracy.plot(runs[0]["steps"][:points],
                      [sum(r["val/accuracy"][i] for r in runs) / len(runs) for i in range(points)], marker="o",
                      label=ARMS[arm])
    adoption.set(xlabel="training step", ylabel="replies with a Strategic Gram", title="Plan adoption (mean of seeds)")
    accuracy.set(xlabel="training step", ylabel="val/accuracy", title="Held-out accuracy (mean of seeds)")
    for axis in (adoption, accuracy):
        axis.grid(alpha=0.3)
        axis.set_ylim(0, 1)
    adoption.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = rc.report_parser(__doc__, "experiments/hicra_vs_grpo/run.sh", HERE)
    parser.add_argument("--missing", action="store_true")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    args = parser.parse_args()
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"report.py: arm '{unknown[0]}' is not allowed; allowed: {', '.join(ARMS)}")
    client = rc.client_for(args.tracking_uri)
    if args.missing:
        print(",".join(f"hicra_vs_grpo/{arm}" for arm in args.arms if args.seed not in arm_runs(client, arm)))
        return 0
    results = collect(client, reported_arms(args.arms))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    plot(results, args.out / "hicra_vs_grpo.png")
    (args.out / "RESULTS.md").write_text(markdown(results, args.command), encoding="utf-8")
    print(f"wrote {args.out / 'RESULTS.md'}, hicra_vs_grpo.png, results.json")
    for arm, by_outcome in results["paired"].items():
        print(f"{ARMS[arm]} - GRPO: adoption {interval(by_outcome['adoption'])}, "
              f"accuracy {interval(by_outcome['accuracy'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
