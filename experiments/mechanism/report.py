"""Summarise a results JSON of experiments/mechanism/run.py as a Markdown table: per arm, the mean first-order
change of the held-out decision log-prob per unit learning rate over the batches (95% t-interval), its paired
difference from GRPO's (95% t-interval over batches), and the ratio of summed changes HICRA/GRPO (95% bootstrap)
next to the prediction 1 + alpha(1 - p).

    python experiments/mechanism/report.py experiments/mechanism/results_default.json
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import bootstrap_ratio


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def table(result: dict) -> str:
    rows, summary = result["batches"], result["summary"]
    grpo = [r["grpo"] for r in rows]
    header = ("| arm | mean change per lr [95% CI] | minus GRPO's, paired [95% CI] | ratio to GRPO [95% bootstrap] | "
              "predicted 1 + alpha(1 - p) |")
    lines = [header, "|---|---|---|---|---|"]
    m, lo, hi = mean_ci(grpo)
    lines.append(f"| GRPO | {m:+.1f} [{lo:+.1f}, {hi:+.1f}] | - | 1 | 1 |")
    for arm, info in summary["arms"].items():
        values = [r[arm] for r in rows]
        m, lo, hi = mean_ci(values)
        d, dlo, dhi = mean_ci([v - g for v, g in zip(values, grpo)])
        low, high = bootstrap_ratio(values, grpo)
        name = arm.replace("hicra_", "HICRA alpha ").replace("placebo_", "placebo alpha ")
        lines.append(f"| {name} | {m:+.1f} [{lo:+.1f}, {hi:+.1f}] | {d:+.1f} [{dlo:+.1f}, {dhi:+.1f}] | "
                     f"{info['ratio_to_grpo']:.2f} [{low:.2f}, {high:.2f}] | "
                     f"{info['predicted_1_plus_alpha_1_minus_p']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    result = json.loads(Path(sys.argv[1]).read_text())
    s = result["summary"]
    print(f"{s['batches']} batches of {s['prompts_per_batch']} prompts x {s['group_size']}; held-out prompts "
          f"{s['heldout_prompts']}, decision probability (geometric mean) {s['heldout_decision_prob']:.3f}; sampled replies that plan "
          f"p = {s['sampled_plan_frac']:.3f}; marked tokens {s['marked_token_frac']:.3f}\n")
    print(table(result))
    checks = result["checks"]
    if checks:
        print(f"\nReal SGD steps (lr {result['settings']['lr']:g}) vs first order:")
        for c in checks:
            print(f"- batch {c['batch']} {c['arm']}: measured {c['measured']:+.4f}, first order {c['first_order']:+.4f}")


if __name__ == "__main__":
    main()
