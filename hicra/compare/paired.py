"""`--paired`: each arm minus the baseline seed by seed, on the final metric (hicra.metrics.paired does the maths).

A study runs every arm with the same seeds, so seed s of an arm and seed s of the baseline share their prompts'
order and initial sampling noise; the per-seed difference cancels what they share. The seed is the run's `seed` tag
(else its param). Which runs pair: the ones the group statistics use (finished runs; all of them, marked partial,
when a group has none finished) that have a seed and a final value. A run left out says why (unfinished, no seed,
no final value, a seed repeated in its arm: which run to pair would be a guess); a seed found in one arm only is
listed as unpaired. Nothing is dropped silently.
"""

from __future__ import annotations

import math
from dataclasses import replace

from hicra.analyze.runs import AnalyzeError
from hicra.compare.metric_bounds import bounds
from hicra.metrics.paired import ALPHA, METHOD, POWER, detectable_difference, pair_by_seed, seed_order, seeds_needed
from hicra.metrics.stats import mean_ci


def _left_out(row: dict, reason: str) -> dict:
    return {"run_id": row["run_id"], "name": row["name"], "seed": row["seed"], "reason": reason}


def values_by_seed(group: dict) -> tuple[dict[str, float], list[dict]]:
    """seed -> final value of the group's used runs, and the runs left out with why."""
    used = [r for r in group["runs"] if not r["unfinished"]] or group["runs"]
    left = [_left_out(r, f"unfinished ({r['unfinished_reason']})") for r in group["runs"] if r not in used]
    seeds = [r["seed"] for r in used]
    values = {}
    for row in used:
        if row["seed"] is None:
            left.append(_left_out(row, "no seed tag or param"))
        elif seeds.count(row["seed"]) > 1:
            left.append(_left_out(row, f"seed {row['seed']} is used by {seeds.count(row['seed'])} runs of this arm"))
        elif row["final"] is None:
            left.append(_left_out(row, "no final value" + (f" (last value {row['final_non_finite']})"
                                                           if row.get("final_non_finite") else "")))
        else:
            values[row["seed"]] = row["final"]
    return values, left


def _clipped(low: float | None, high: float | None, metric: str) -> tuple[float | None, float | None]:
    """A difference of values in [lo, hi] lies in [lo - hi, hi - lo]: cut the interval there, as the Welch rows are."""
    lo, hi = bounds(metric)
    if low is None or lo is None or hi is None:
        return low, high
    return max(low, lo - hi), min(high, hi - lo)


def verdict(name: str, base: str, entry: dict) -> str:
    n, diff = entry["n_pairs"], entry["mean_diff"]
    if n == 0:
        return "not computable: no seed has a run in both arms"
    if n == 1:
        return (f"no CI: one pair (seed {entry['pairs'][0]['seed']}); the difference {diff:+.3f} rests on a single "
                "seed and is not evidence either way")
    if entry["sd_diff"] == 0:
        return (f"no spread: every seed gave the same difference {diff:+.3f} ({n} pairs); no interval can be "
                "estimated")
    interval = f"mean paired difference {diff:+.3f}, 95% CI [{entry['ci_low']:+.3f}, {entry['ci_high']:+.3f}]"
    if entry["ci_low"] > 0 or entry["ci_high"] < 0:
        return (f"CI excludes 0: {name} is {'higher' if diff > 0 else 'lower'} than {base} seed for seed "
                f"({interval}, {n} pairs)")
    return (f"CI includes 0: no detectable difference with {n} pairs ({interval}); this does not show that they are "
            "equal")


def paired_arm(group: dict, base: dict, metric: str, confidence: float, effect: float | None) -> dict:
    """One arm minus the baseline, paired by seed: the pairs, the unpaired seeds, the runs left out, and the numbers."""
    arm_values, arm_left = values_by_seed(group)
    base_values, base_left = values_by_seed(base)
    pairing = pair_by_seed(arm_values, base_values)
    # Two finite values past 1e308 apart (a diverged loss) differ by inf: no mean or JSON can hold it; named instead.
    overflow = [s for s, (a, b) in pairing.pairs.items() if not math.isfinite(a - b)]
    pairing = replace(pairing, pairs={s: v for s, v in pairing.pairs.items() if s not in overflow})
    ci = mean_ci(pairing.differences, confidence)
    low, high = _clipped(ci.low, ci.high, metric)
    entry = {
        "group": group["label"], "baseline": base["label"], "quantity": f"final {metric}", "n_pairs": ci.n,
        "mean_diff": ci.mean, "sd_diff": ci.sd, "dof": ci.n - 1 if ci.sd is not None else None,
        "half_width": ci.half_width, "ci_low": low, "ci_high": high,
        "detectable_difference": detectable_difference(ci.sd, ci.n),
        "effect": effect, "seeds_needed": None if effect is None else seeds_needed(effect, ci.sd),
        "pairs": [{"seed": s, "value": a, "baseline_value": b, "diff": a - b} for s, (a, b) in pairing.pairs.items()],
        "unpaired": {"group_only": pairing.only_arm, "baseline_only": pairing.only_baseline},
        "left_out": {"group": arm_left, "baseline": base_left},
        "overflowed_seeds": overflow,  # paired, but their difference is past float range: left out
        "partial": group["partial"] or base["partial"],
    }
    entry["verdict"] = (verdict(group["label"], base["label"], entry)
                        + (" [partial: from unfinished runs]" if entry["partial"] else ""))
    return entry


def _seeds(values: dict) -> str:
    return ", ".join(sorted(values, key=seed_order)) or "none"


def paired_comparisons(groups: list[dict], baseline: str | None, metric: str, confidence: float,
                       effect: float | None) -> dict:
    """The "Paired by seed" part of summary.json. Raises AnalyzeError (one line) when nothing can be paired."""
    labels = "; ".join(f"'{g['label']}'" for g in groups)
    if baseline is None:
        raise AnalyzeError(f"--paired needs a baseline arm: no group has algorithm=grpo; name one with --baseline "
                           f"(groups: {labels})")
    if len(groups) < 2:
        raise AnalyzeError(f"--paired needs at least one arm beside the baseline; the runs form one group: {labels}")
    base = next(g for g in groups if g["label"] == baseline)
    arms = [paired_arm(g, base, metric, confidence, effect) for g in groups if g["label"] != baseline]
    if not any(a["n_pairs"] for a in arms):
        seeds = "; ".join(f"'{g['label']}': {_seeds(values_by_seed(g)[0])}" for g in groups)
        raise AnalyzeError(f"--paired: no seed has a usable run in both the baseline and another arm (seeds with a "
                           f"counted run and a final {metric}, per group: {seeds})")
    return {"baseline": baseline, "quantity": f"final {metric}", "confidence": confidence, "alpha": ALPHA,
            "power": POWER, "power_method": METHOD, "effect": effect, "arms": arms}
