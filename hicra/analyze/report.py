"""`report.md`: the index of an analysis folder (runs, figures, token viewer, skipped panels)."""

from __future__ import annotations

from datetime import datetime

from hicra.analyze.figures import FigureResult
from hicra.analyze.runs import RunInfo, final_value
from hicra.tracking.html_report import md_code, md_text


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def render_report(runs: list[RunInfo], frame, figures: FigureResult, viewer: str | None, tracking_uri: str) -> str:
    lines = ["# hicra analysis", "",
             (f"Generated {datetime.now().isoformat(timespec='seconds')} by `hicra-analyze` from "
             f"{md_code(tracking_uri)}."), "",
             "## Runs", "",
             "| run | run id | algorithm | planner | seed | status | final val/accuracy | final train/accuracy |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        # run-derived text (renamable in MLflow's UI) escaped: it renders as text, never as markup
        lines.append(f"| {md_text(r.name)} | {md_code(r.run_id)} | {md_text(r.algorithm)} | {md_text(r.planner)} "
                     f"| {md_text(r.seed)} | {md_text(r.status)} "
                     f"| {_fmt(final_value(frame, r.run_id, 'val/accuracy'))} "
                     f"| {_fmt(final_value(frame, r.run_id, 'train/accuracy'))} |")
    lines += ["", "## Figures", "", "Colour = algorithm (`choice.algorithm`), line style = seed, x = policy updates.", ""]
    for spec, path in figures.written:
        lines += [f"### {spec.title}", "", f"`{path.name}`: {spec.description}.", "", f"![{spec.title}]({path.name})",
                  ""]
    if not figures.written:
        lines += ["No figure: none of the plotted metrics was logged.", ""]
    lines += ["## Token viewer", ""]
    lines += [f"[`{viewer}`]({viewer}): sampled completions, tokens coloured by token advantage, planning tokens "
              "outlined." if viewer else "Not written: no run logged completion samples (`completions/*.json`)."]
    lines += ["", "## Skipped panels", ""]
    lines += [f"- {s}" for s in figures.skipped] or ["None: every panel had its metrics."]
    return "\n".join(lines) + "\n"
