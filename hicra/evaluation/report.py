"""The results table: printed at the end, and written as eval_results.md / eval_results.json."""

from __future__ import annotations

import json
from pathlib import Path


def _cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def format_table(rows: list[dict], ks: tuple[int, ...], greedy: bool) -> str:
    """One markdown row per evaluated checkpoint: its headline number (pass@1 / accuracy) and pass@k columns."""
    headline = "accuracy" if greedy else "pass@1"
    extra = [k for k in ks if k != 1]
    header = ["checkpoint", "benchmark", "protocol", "problems", "samples", headline,
              *(f"pass@{k}" for k in extra), "eval run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        m = row["metrics"]
        cells = [row["name"], row["benchmark"], row["protocol"], int(m["eval/num_problems"]),
                 int(m["eval/samples_per_problem"]), m["eval/score"],
                 *(m.get(f"eval/pass_at_{k}", "") for k in extra),
                 (row["eval_run_id"] or "-")[:8] + (" (earlier)" if row["earlier"] else "")]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def write_results(rows: list[dict], table: str, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "eval_results.md", out_dir / "eval_results.json"
    md.write_text(table + "\n", encoding="utf-8")
    js.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return md, js
