"""The numbers of a comparison: per run, per group (mean +- 95% CI over runs), and each group against a baseline.

Which runs a group statistic uses: its finished runs. Unfinished runs (status not FINISHED, or stopped before
trainer.max_steps) still draw their learning curves up to where they got, but a value "at the end" of a run that did
not reach the end is not comparable. A group with no finished run falls back to its unfinished runs and every
number is marked partial.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, replace

import pandas as pd

from hicra.analyze.runs import AnalyzeError, series
from hicra.compare import non_finite
from hicra.compare.collect import EVAL_SCORE, EvalResult, TrainRun, positive_int_param
from hicra.compare.grouping import Group, lookup
from hicra.compare.metric_bounds import bounds
from hicra.compare.paired import paired_comparisons
from hicra.metrics.stats import mean_ci, welch_diff_ci
from hicra.tracking.html_report import md_code, md_text

SEMANTIC_ENTROPY, RESPONSE_LENGTH = "hierarchy/semantic_entropy", "train/response_length"
TAIL_STEPS = 3  # rollout metrics are noisy step to step: "final" = mean of each run's last 3 logged values
CONFIDENCE = 0.95


def _last(s: pd.Series) -> float | None:
    return None if s.empty else float(s.sort_index().iloc[-1])


def _tail_mean(s: pd.Series) -> float | None:
    return None if s.empty else float(s.sort_index().iloc[-TAIL_STEPS:].mean())


def first_step_reaching(s: pd.Series, threshold: float) -> int | None:
    hits = s[s >= threshold]
    return None if hits.empty else int(hits.index.min())


def run_numbers(run: TrainRun, frame: pd.DataFrame, metric: str, threshold: float,
                evals: dict[str, EvalResult], bad: pd.DataFrame) -> dict:
    """One run's row of summary.json; `evals`: benchmark/protocol -> the eval kept for this run; `bad`: the
    non-finite points (non_finite.py). A run whose last value of `metric` is NaN or inf has no final value."""
    m = series(frame, run.info.run_id, metric)
    flagged = non_finite.points_of(bad, run.info.run_id)
    final_non_finite = non_finite.last_is_non_finite(flagged.get(metric, []), m)
    return {
        "run_id": run.info.run_id, "name": run.info.name, "status": run.info.status,
        "seed": lookup(run.info, "seed"),  # the tag, else the param; None: neither (the report shows "?")
        "unfinished": run.unfinished, "unfinished_reason": run.unfinished_reason,
        "last_step": run.last_step, "max_steps": run.max_steps,
        "max_new_tokens": positive_int_param(run.info.params, "rollout.max_new_tokens"),
        "final": None if final_non_finite else _last(m), "final_non_finite": final_non_finite,
        "best": None if m.empty else float(m.max()), "non_finite": flagged,
        "steps_to_threshold": first_step_reaching(m, threshold),
        "semantic_entropy_final": _tail_mean(series(frame, run.info.run_id, SEMANTIC_ENTROPY)),
        "response_length_final": _tail_mean(series(frame, run.info.run_id, RESPONSE_LENGTH)),
        "evals": {key: {"eval_run_id": e.run_id, **e.metrics} for key, e in evals.items()},
    }


def _mean_ci(values: list[float]) -> dict:
    """Mean and 95% interval of `values`, plus their range, which the report shows instead below MIN_CI_RUNS runs."""
    ci = {k: v for k, v in asdict(mean_ci(values, CONFIDENCE)).items() if k != "confidence"}
    return ci | {"min": min(values) if values else None, "max": max(values) if values else None}


def _values(rows: list[dict], field: str) -> list[float]:
    return [r[field] for r in rows if r[field] is not None]


def group_numbers(group: Group, rows: list[dict], eval_keys: list[str], metric: str) -> dict:
    """Group statistics from its finished runs (all runs, marked partial, when none finished)."""
    finished = [r for r in rows if not r["unfinished"]]
    used = finished or rows
    keys = {"final": metric, "best": metric, "semantic_entropy_final": SEMANTIC_ENTROPY,
            "response_length_final": RESPONSE_LENGTH}
    flagged = {field: sum(key in r["non_finite"] for r in used) for field, key in keys.items()}
    steps = _values(used, "steps_to_threshold")
    evals = {}
    for key in eval_keys:
        scores = [r["evals"][key][EVAL_SCORE] for r in used if key in r["evals"]]
        evals[key] = {"evaluated": len(scores), "of": len(used), "score": _mean_ci(scores)}
    return {
        "label": group.label, "keys": group.values, "n_runs": len(rows),
        "n_unfinished": len(rows) - len(finished), "partial": not finished, "n_used": len(used),
        "final": _mean_ci(_values(used, "final")),
        "best": _mean_ci(_values(used, "best")),
        "threshold": {"reached": len(steps), "of": len(used),
                      "median_step": float(statistics.median(steps)) if steps else None},
        "semantic_entropy_final": _mean_ci(_values(used, "semantic_entropy_final")),
        "response_length_final": _mean_ci(_values(used, "response_length_final")),
        "evals": evals,
        "non_finite_runs": {field: n for field, n in flagged.items() if n},  # used runs with NaN/inf there
        "runs": rows,
    }


def pick_baseline(groups: list[dict], requested: str | None) -> tuple[str | None, list[str]]:
    """The baseline group's label and notes. Default: the group with algorithm grpo (most runs if several)."""
    labels = [g["label"] for g in groups]
    if requested is not None:
        exact = [x for x in labels if x == requested]
        matches = exact or [x for x in labels if requested in x]
        if len(matches) == 1:
            return matches[0], []
        what = "matches several groups" if matches else "matches no group"
        raise AnalyzeError(f"--baseline '{requested}' {what}; use one of: " + "; ".join(f"'{x}'" for x in labels))
    grpo = [g for g in groups if g["keys"].get("choice.algorithm") == "grpo"]
    if not grpo:
        return None, ["no baseline: no group has algorithm=grpo and --baseline was not given; differences skipped"]
    best = max(grpo, key=lambda g: g["n_used"])
    note = (f"{len(grpo)} groups have algorithm=grpo; baseline = {md_code(best['label'])} (most runs); choose with "
            "--baseline")
    return best["label"], [] if len(grpo) == 1 else [note]


def verdict(name: str, base: str, quantity: str, d) -> str:
    """One honest sentence about a Welch interval `d` (hicra.metrics.stats.DiffCI) of name minus base."""
    n = f"n={d.n_a} vs {d.n_b}"
    if d.diff is None:
        return f"not computable: no {quantity} in {'this group' if d.n_a == 0 else 'the baseline'} ({n})"
    if d.low is None:
        return (f"no CI: a Welch interval needs >= 2 runs in each group ({n}); the difference {d.diff:+.3f} rests "
                "on single runs and is not evidence either way")
    if d.dof is None:
        return (f"no spread: every run in both groups gave the same {quantity}; the difference is exactly "
                f"{d.diff:+.3f} in these runs ({n}), but no interval can be estimated")
    interval = f"difference {d.diff:+.3f}, 95% CI [{d.low:+.3f}, {d.high:+.3f}]"
    if d.excludes_zero:
        return (f"CI excludes 0: {name} is {'higher' if d.diff > 0 else 'lower'} than {base} on {quantity} "
                f"({interval}, {n})")
    return f"CI includes 0: no detectable difference with {n} ({interval}); this does not show that they are equal"


def within_bounds(d, key: str):
    """The Welch interval cut to the differences the metric allows (accuracy: [-1, 1]); still a 95% interval, since
    the true difference lies inside those bounds. With 2 runs a side it would otherwise reach [-1.03, +1.09]."""
    low, high = bounds(key)
    if d.low is None or low is None or high is None:
        return d
    return replace(d, low=max(d.low, low - high), high=min(d.high, high - low))


def comparisons(groups: list[dict], baseline: str | None, metric: str, eval_keys: list[str]) -> list[dict]:
    """Each non-baseline group minus the baseline: final `metric` and every eval score, Welch 95% CI."""
    if baseline is None:
        return []
    base = next(g for g in groups if g["label"] == baseline)
    out = []
    for group in (g for g in groups if g["label"] != baseline):
        quantities = [(f"final {metric}", metric, lambda rows: _values(rows, "final"))]
        quantities += [(f"{EVAL_SCORE} {key}", EVAL_SCORE, lambda rows, k=key: [r["evals"][k][EVAL_SCORE]
                                                                                for r in rows if k in r["evals"]])
                       for key in eval_keys]
        for quantity, metric_key, values in quantities:
            used_g = [r for r in group["runs"] if not r["unfinished"]] or group["runs"]
            used_b = [r for r in base["runs"] if not r["unfinished"]] or base["runs"]
            d = within_bounds(welch_diff_ci(values(used_g), values(used_b), CONFIDENCE), metric_key)
            partial = group["partial"] or base["partial"]
            text = verdict(group["label"], baseline, quantity, d)
            out.append({"group": group["label"], "baseline": baseline, "quantity": quantity, "diff": d.diff,
                        "ci_low": d.low, "ci_high": d.high, "dof": d.dof, "n_group": d.n_a, "n_baseline": d.n_b,
                        "partial": partial,
                        "verdict": text + (" [partial: from unfinished runs]" if partial else "")})
    return out


def unfinished_notes(runs: list[TrainRun]) -> list[str]:
    return [f"unfinished: {md_text(r.info.name)} ({r.info.run_id}): {md_text(r.unfinished_reason)}"
            for r in runs if r.unfinished]


def build_summary(grouping, frame: pd.DataFrame, evals: list[EvalResult], *, metric: str, threshold: float,
                  baseline: str | None, meta: dict, notes: list[str], bad: pd.DataFrame | None = None,
                  paired: bool = False, effect: float | None = None) -> dict:
    """Everything summary.json holds; report.md and stdout are rendered from it. `meta`: experiment, uri, time;
    `frame`: the finite metric points, `bad`: the NaN / inf ones (reported, never averaged). `paired`: add each arm
    minus the baseline paired by seed (compare/paired.py), with the seeds `effect` would need."""
    bad = frame.iloc[:0] if bad is None else bad
    eval_keys = sorted({e.key for e in evals})
    by_run: dict[str, dict[str, EvalResult]] = {}
    for e in evals:
        by_run.setdefault(e.source_run_id, {})[e.key] = e
    groups = [group_numbers(g, [run_numbers(r, frame, metric, threshold, by_run.get(r.info.run_id, {}), bad)
                                for r in g.runs], eval_keys, metric) for g in grouping.groups]
    chosen, baseline_notes = pick_baseline(groups, baseline)
    groups.sort(key=lambda g: (g["label"] != chosen, g["label"]))  # baseline first, then by label
    runs = [r for g in grouping.groups for r in g.runs]
    return {**meta, "metric": metric, "threshold": threshold, "confidence": CONFIDENCE,
            "tail_steps": TAIL_STEPS, "group_keys": grouping.keys, "group_keys_source": grouping.source,
            "n_runs": len(runs), "n_unfinished": sum(r.unfinished for r in runs), "baseline": chosen,
            "eval_keys": eval_keys, "groups": groups,
            "comparisons": comparisons(groups, chosen, metric, eval_keys),
            "paired": paired_comparisons(groups, chosen, metric, CONFIDENCE, effect) if paired else None,
            "notes": [*grouping.notes, *unfinished_notes(runs),
                      *non_finite.notes([r for g in groups for r in g["runs"]]), *baseline_notes, *notes]}
