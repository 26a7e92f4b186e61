"""NaN and infinite metric values: left out of every number and curve, but never silently.

A run can log NaN (hierarchy/semantic_entropy on a step with no Strategic Gram, a diverged loss) or inf (an overflow;
MLflow's SQL store keeps it as the largest float, read back as inf by hicra.analyze.runs.logged_value). No mean or
interval can include them, so they are dropped from the statistics; each run row of summary.json lists them by metric
(`non_finite`), the group cells count the runs that had some, and a note names run, metric and steps.
"""

from __future__ import annotations

import math

import pandas as pd

from hicra.tracking.html_report import md_text

STEPS_NAMED = 5  # per metric and kind; the rest is counted


def word(value: float) -> str:
    return "NaN" if math.isnan(value) else "inf" if value > 0 else "-inf"


def points_of(bad: pd.DataFrame, run_id: str) -> dict[str, list[list]]:
    """metric -> [[step, "NaN" | "inf" | "-inf"], ...] by step, for one run (JSON-safe: no float NaN)."""
    sel = bad[bad.run_id == run_id].sort_values(["key", "step"])
    out: dict[str, list[list]] = {}
    for key, step, value in zip(sel.key, sel.step, sel.value):
        out.setdefault(key, []).append([int(step), word(value)])
    return out


def last_is_non_finite(points: list[list], finite: pd.Series) -> str | None:
    """The kind of the metric's last logged value when that value is non-finite (the run has no final value)."""
    if points and (finite.empty or points[-1][0] > finite.index.max()):
        return points[-1][1]
    return None


def describe(points: list[list]) -> str:
    """`NaN at steps 2, 3, 5 (+4 more); inf at step 9`."""
    parts = []
    for kind in ("NaN", "inf", "-inf"):
        steps = [str(step) for step, k in points if k == kind]
        if steps:
            more = f" (+{len(steps) - STEPS_NAMED} more)" if len(steps) > STEPS_NAMED else ""
            parts.append(f"{kind} at step{'s' if len(steps) > 1 else ''} {', '.join(steps[:STEPS_NAMED])}{more}")
    return "; ".join(parts)


def notes(rows: list[dict]) -> list[str]:
    """One Markdown note per run that logged non-finite values: which run, which metrics, at which steps."""
    return [f"non-finite values left out of every number and curve: {md_text(r['name'])} ({r['run_id']}): "
            + "; ".join(f"{md_text(key)} {md_text(describe(points))}" for key, points in r["non_finite"].items())
            for r in rows if r["non_finite"]]


def stdout_lines(rows: list[dict]) -> list[str]:
    return [f"{r['name']} ({r['run_id'][:8]}): " + ", ".join(r["non_finite"]) for r in rows if r["non_finite"]]
