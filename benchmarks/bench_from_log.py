"""Re-render a step benchmark from its printed step lines, for a run killed before it wrote its JSON.

    .venv/bin/python benchmarks/bench_from_log.py benchmarks/results/<run>.log --out benchmarks/results/<run>

`bench_step.py` prints `[bench]     <arm> step <n>: <seconds> s` as each step ends; those lines hold the step times,
so the medians and the round-by-round paired ratios (bench_report.compare) can be computed from them. Only complete
rounds count (the rounds in which every arm finished its step); the per-step breakdown, token counts and the decoding
floor are not in the lines, so they are absent here.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from bench_report import _overhead_cell, _ratio_cell, _step_cell, compare, summarize

STEP_LINE = re.compile(r"^\[bench\]\s+(?P<arm>\S+) step (?P<step>\d+): (?P<seconds>[0-9.]+) s$")
ARMS = ("grpo", "hicra", "hicra+diag", "trl")


def runs_from_log(text: str) -> dict[str, dict]:
    """{arm: {"step_s": [...]}} cut to the steps every arm completed (a round is paired only when it is whole)."""
    steps: dict[str, dict[int, float]] = {}
    for line in text.splitlines():
        if match := STEP_LINE.match(line.strip()):
            steps.setdefault(match["arm"], {})[int(match["step"])] = float(match["seconds"])
    complete = min((max(s) for s in steps.values()), default=0)
    if any(sorted(s)[:complete] != list(range(1, complete + 1)) for s in steps.values()):
        raise ValueError("the log's step numbers have gaps; it is not one bench_step.py run")
    return {arm: {"step_s": [s[i] for i in range(1, complete + 1)], "tokens": [], "peak_memory_gib": []}
            for arm, s in steps.items()}


def render(runs: dict[str, dict], warmup: int) -> tuple[dict, str]:
    summary = {arm: summarize(run, warmup) for arm, run in runs.items()}
    comparison = compare(runs, summary, warmup)
    table = [("| GRPO s | HICRA s | HICRA+diag s | TRL s | GRPO/TRL | HICRA/TRL | HICRA+diag/TRL | HICRA vs GRPO | "
              "diag vs HICRA |"), "|" + "---|" * 9,
             "| " + " | ".join([*(_step_cell(summary[arm]) if arm in summary else "not run" for arm in ARMS),
                                _ratio_cell(comparison["grpo_over_trl"]), _ratio_cell(comparison["hicra_over_trl"]),
                                _ratio_cell(comparison["hicra_diag_over_trl"]),
                                _overhead_cell(comparison["hicra_overhead"]),
                                _overhead_cell(comparison["diagnostics_overhead"])]) + " |"]
    return {"summary": summary, "compare": comparison}, "\n".join(table) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", type=Path)
    p.add_argument("--warmup", type=int, default=1, help="warm-up rounds at the start of the log (default 1)")
    p.add_argument("--out", type=Path, default=None, help="output stem: <stem>.json and <stem>.md")
    args = p.parse_args(argv)
    runs = runs_from_log(args.log.read_text())
    rounds = len(next(iter(runs.values()))["step_s"]) if runs else 0
    if rounds <= args.warmup:
        p.error(f"{args.log} holds {rounds} complete round(s); more than --warmup={args.warmup} are needed")
    numbers, table = render(runs, args.warmup)
    report = {"source_log": str(args.log), "warmup": args.warmup, "complete_rounds": rounds, "runs": runs, **numbers}
    md = (f"Re-rendered from the step lines of {args.log.name}: {rounds} complete rounds ({args.warmup} warm-up), "
          f"arms {', '.join(runs)}.\n\n{table}")
    if args.out:
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(md)
    print(md, end="")
    return report


if __name__ == "__main__":
    main()
