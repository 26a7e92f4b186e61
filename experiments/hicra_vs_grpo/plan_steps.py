"""Where planned replies stop: additions written before "The answer is", from hicra-eval's samples.jsonl.

    .venv/bin/hicra-eval checkpoint=<training run id> protocol=greedy hydra.run.dir=/tmp/steps/placebo_s2
    python experiments/hicra_vs_grpo/plan_steps.py placebo_s2=/tmp/steps/placebo_s2 grpo_s2=/tmp/steps/grpo_s2

Each argument is label=folder (or a samples.jsonl file). Four terms need three additions; a reply that answers
after fewer can be right only by luck. The study README reads this for the Placebo HICRA arm, whose marked phrase
("the answer is") is in every reply and so gets HICRA's alpha|A| push in every group.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ADDITION = re.compile(r"(\d+)\s*\+\s*(\d+)\s*=\s*(\d+)")
ANSWER = re.compile(r"the answer is", re.IGNORECASE)
PLAN = "step by step"


def additions_before_answer(reply: str) -> list[tuple[int, int, int]]:
    """The "a + b = c" steps a reply writes before its first "the answer is" (all of them if it never answers)."""
    found = ANSWER.search(reply)
    head = reply[:found.start()] if found else reply
    return [(int(a), int(b), int(c)) for a, b, c in ADDITION.findall(head)]


def summary(records: list[dict]) -> dict[str, float]:
    """Accuracy, the share of replies that plan, and, over the planned ones, additions per reply and wrong sums."""
    planned = [r for r in records if r["completion"].lstrip().lower().startswith(PLAN)]
    steps = [additions_before_answer(r["completion"]) for r in planned]
    written = [s for reply in steps for s in reply]
    return {"replies": len(records), "accuracy": sum(r["correct"] for r in records) / len(records),
            "planned": len(planned) / len(records),
            "additions_per_plan": sum(map(len, steps)) / len(planned) if planned else float("nan"),
            "wrong_additions": sum(a + b != c for a, b, c in written) / len(written) if written else float("nan")}


def samples_file(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(path.rglob("samples.jsonl"))
    if len(found) != 1:
        raise SystemExit(f"plan_steps.py: '{path}' holds {len(found)} samples.jsonl files; allowed: exactly one")
    return found[0]


def main(argv: list[str]) -> int:
    if not argv or any("=" not in a for a in argv):
        raise SystemExit("plan_steps.py: give label=folder pairs, e.g. placebo_s2=/tmp/steps/placebo_s2")
    print("| run | replies | accuracy | planned | additions per plan before the answer | wrong additions |")
    print("|---|---|---|---|---|---|")
    for label, path in (a.split("=", 1) for a in argv):
        lines = samples_file(Path(path)).read_text(encoding="utf-8").splitlines()
        s = summary([json.loads(line) for line in lines])
        print(f"| {label} | {s['replies']} | {s['accuracy']:.3f} | {s['planned']:.3f} | "
              f"{s['additions_per_plan']:.2f} | {s['wrong_additions']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
