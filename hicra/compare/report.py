"""report.md and the table printed on stdout, from the summary dict (the same numbers as summary.json)."""

from __future__ import annotations

from hicra.compare import non_finite
from hicra.compare.metric_bounds import MIN_CI_RUNS
from hicra.compare.paired_report import markdown_section, stdout_block
from hicra.tracking.html_report import md_code, md_text


def fmt_ci(ci: dict, digits: int = 3) -> str:
    """`0.433 ± 0.124` (3+ values); two values: their range, `0.300 [range 0.180, 0.420]`, as the plots draw it (a
    t-interval on 1 degree of freedom is 12.7 standard errors wide: ± 1.5 on an accuracy); one value: `0.500 ± n/a`;
    none: `n/a`. Never prints NaN."""
    if ci["mean"] is None:
        return "n/a"
    if ci["n"] < MIN_CI_RUNS and ci["half_width"] is not None and ci.get("min") is not None:
        return f"{ci['mean']:.{digits}f} [range {ci['min']:.{digits}f}, {ci['max']:.{digits}f}]"
    half = "n/a" if ci["half_width"] is None else f"{ci['half_width']:.{digits}f}"
    return f"{ci['mean']:.{digits}f} ± {half}"


def _stat_cell(group: dict, field: str, digits: int = 3) -> str:
    ci = group[field]
    text = fmt_ci(ci, digits)
    if ci["mean"] is not None and ci["n"] < group["n_used"]:
        text += f" [{ci['n']} of {group['n_used']} runs]"  # some runs never logged this metric
    if group.get("non_finite_runs", {}).get(field):
        text += f" [NaN/inf in {group['non_finite_runs'][field]} run(s), left out]"
    return text + (" (partial)" if group["partial"] and ci["mean"] is not None else "")


def _seeds_cell(group: dict) -> str:
    return f"{group['n_runs']}" + (f" ({group['n_unfinished']} unfinished)" if group["n_unfinished"] else "")


def _threshold_cell(group: dict) -> str:
    t = group["threshold"]
    step = "never" if t["median_step"] is None else f"{t['median_step']:g}"
    return f"{step} ({t['reached']}/{t['of']} reached)" + (" (partial)" if group["partial"] else "")


def main_table(summary: dict, text=str) -> tuple[list[str], list[list[str]]]:
    """Headers and rows; `text` renders what came from the runs (labels, metric names): as is on stdout, escaped
    (md_text) in Markdown."""
    metric, threshold = text(summary["metric"]), summary["threshold"]
    headers = ["group", "seeds", f"final {metric}", f"best {metric}", f"steps to {metric} >= {threshold:g}",
               "semantic entropy (final)", "response length (final)"]
    rows = [[text(g["label"]), _seeds_cell(g), _stat_cell(g, "final"), _stat_cell(g, "best"), _threshold_cell(g),
             _stat_cell(g, "semantic_entropy_final"), _stat_cell(g, "response_length_final", 1)]
            for g in summary["groups"]]
    return headers, rows


def eval_table(summary: dict, text=str) -> tuple[list[str], list[list[str]]]:
    keys = summary["eval_keys"]
    rows = []
    for g in summary["groups"]:
        cells = [f"{fmt_ci(g['evals'][k]['score'])} ({g['evals'][k]['evaluated']}/{g['evals'][k]['of']} evaluated)"
                 + (" (partial)" if g["partial"] else "") for k in keys]
        rows.append([text(g["label"]), *cells])
    return ["group", *[f"eval/score {text(k)}" for k in keys]], rows


def _diff_rows(summary: dict, text=str) -> list[list[str]]:
    rows = []
    for c in summary["comparisons"]:
        diff = "n/a" if c["diff"] is None else f"{c['diff']:+.3f}"
        ci = "n/a" if c["ci_low"] is None else f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
        rows.append([text(c["group"]), text(c["quantity"]), diff, ci, f"{c['n_group']} vs {c['n_baseline']}",
                     text(c["verdict"])])
    return rows


def _or_dash(value) -> str:
    return "-" if value is None else str(value)


def _md(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table of cells that are Markdown already (run-derived text in them went through md_text, which
    escapes `|`)."""
    return [f"| {' | '.join(headers)} |", "|" + "---|" * len(headers),
            *[f"| {' | '.join(map(str, r))} |" for r in rows]]


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    def line(row: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, rows)])


FOOTNOTES = [
    ("Cells are mean ± half-width of the 95% confidence interval over runs (Student t, n - 1 degrees of freedom) "
     f"from {MIN_CI_RUNS} runs on; with 2 runs, mean [range min, max] of the two (as in the figures); `± n/a`: one "
     "run, so no interval."),
    ("**Final, best, steps, entropy, length and eval columns use finished runs only.** A run is unfinished when its "
     "MLflow status is not FINISHED or its last logged step is below its `trainer.max_steps`; unfinished runs count "
     "in the learning curves up to where they got. `(partial)`: the group has no finished run, so its numbers come "
     "from unfinished runs and are not comparable with the others."),
    ("final = the metric at the run's last logged step; best = its maximum over all logged steps (step 0, the "
     "untrained model, included); steps to threshold = median over the runs that reached it of the first step where "
     "the metric >= threshold (k/n reached)."),
    ("Semantic entropy (`hierarchy/semantic_entropy`, bits) and response length (`train/response_length`, tokens) are "
     "each run's mean over its last 3 logged steps (rollout metrics are noisy from step to step)."),
    "`[m of n runs]`: only m of the n runs logged that metric.",
    ("`[NaN/inf in k run(s), left out]`: k runs logged non-finite values of that metric; those points are left out "
     "of every number and curve (which run, metric and steps: Notes). A run whose last value is non-finite has no "
     "final value."),
]


def _final_cell(run: dict) -> str:
    if run.get("final_non_finite"):
        return f"{run['final_non_finite']} (last logged value)"
    return "n/a" if run["final"] is None else f"{run['final']:.3f}"


def _run_rows(group: dict) -> list[list[str]]:
    return [[md_text(r["name"]), md_code(r["run_id"]), md_text("?" if r["seed"] is None else r["seed"]),
             md_text(r["status"]),
             f"{_or_dash(r['last_step'])} / {_or_dash(r['max_steps'])}",
             _final_cell(r), "n/a" if r["best"] is None else f"{r['best']:.3f}",
             "never" if r["steps_to_threshold"] is None else str(r["steps_to_threshold"]),
             md_text(r["unfinished_reason"] or "-")] for r in group["runs"]]


def render_markdown(summary: dict, figures: list[str]) -> str:
    """report.md. Everything a run carries (names, tags, params, the experiment's name) is escaped where it enters
    (md_text, md_code): a run renamed `<img src=x onerror=...>` in the MLflow UI is shown, not run. The notes are
    Markdown already, escaped where they are written."""
    keys = ", ".join(md_code(k) for k in summary["group_keys"])
    lines = [f"# hicra comparison: {md_text(summary['experiment'])}", "",
             (f"Generated {summary['generated']} by `hicra-compare` from {md_code(summary['tracking_uri'])}: "
              f"{summary['n_runs']} training run(s) in {len(summary['groups'])} group(s), grouped by {keys} "
              f"({summary['group_keys_source']})."), "", "## Summary", "", *_md(*main_table(summary, md_text)), ""]
    lines += [f"- {f}" for f in FOOTNOTES] + [""]
    if summary["eval_keys"]:
        lines += ["## Evaluation", "", ("`eval/score` of the eval runs linked to each training run (tag "
                                         "`hicra.source_run_id`), the latest per benchmark/protocol; m/n = finished "
                                         "runs evaluated."), "",
                  *_md(*eval_table(summary, md_text)), ""]
    lines += ["## Differences vs baseline", ""]
    if summary["baseline"] is None:
        lines += ["No baseline group (see notes).", ""]
    else:
        lines += [(f"Baseline: {md_code(summary['baseline'])}. Each row is group mean minus baseline mean over "
                   "finished runs, with a Welch 95% CI (unequal variances and sizes). Each interval is a separate 95% "
                   "interval, not corrected for the number of comparisons in this table."), "",
                  *_md(["group", "quantity", "difference", "95% CI (Welch)", "n (group vs baseline)", "verdict"],
                       _diff_rows(summary, md_text)), ""]
    if summary.get("paired"):
        lines += markdown_section(summary)
    if figures:
        lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    lines += ["## Notes", ""] + ([f"- {n}" for n in summary["notes"]] or ["None."]) + [""]
    lines += ["## Runs per group", ""]
    for g in summary["groups"]:
        lines += [f"### {md_text(g['label'])}", "", *_md(
            ["run", "run id", "seed", "status", "last step / max", "final", "best", "first step >= threshold",
             "unfinished because"], _run_rows(g)), ""]
    return "\n".join(lines)


def render_stdout(summary: dict) -> str:
    parts = [text_table(*main_table(summary))]
    if summary["eval_keys"]:
        parts.append(text_table(*eval_table(summary)))
    if summary["n_unfinished"]:
        parts.append(f"{summary['n_unfinished']} unfinished run(s): counted in curves only; statistics use finished "
                     "runs (see report.md)")
    flagged = non_finite.stdout_lines([r for g in summary["groups"] for r in g["runs"]])
    if flagged:
        parts.append("\n".join(["NaN/inf values left out of every number (steps: notes of report.md):", *flagged]))
    if summary["comparisons"]:
        parts.append("\n".join([f"Differences vs baseline `{summary['baseline']}` (Welch 95% CI):"] +
                               [f"- {c['group']}, {c['quantity']}: {c['verdict']}" for c in summary["comparisons"]]))
    if summary.get("paired"):
        parts.append(stdout_block(summary))
    return "\n\n".join(parts)
