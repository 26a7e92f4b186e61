"""`hicra-compare [RUN_ID ...] [--experiment NAME] [--tracking-uri URI] [--out DIR] [--group-by KEYS]
[--metric val/accuracy] [--threshold 0.3] [--baseline LABEL] [--paired [--effect X]] [--no-log]`."""

from __future__ import annotations

import argparse
import json
import math
import re
from datetime import datetime
from pathlib import Path

from hicra.analyze.cli import DEFAULT_URI, run_main
from hicra.analyze.runs import AnalyzeError, first_line
from hicra.tracking.html_report import md_code
from hicra.tracking.metric_names import current_name
from hicra.tracking.store import absolute_tracking_uri, describe_run, ensure_experiment

COMPARE_EXPERIMENT_SUFFIX = "-compare"  # compare runs live apart from the training runs they compare

PROG = "hicra-compare"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        raise AnalyzeError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Compare groups of hicra training runs (arms x seeds): table with 95% CIs, "
                "differences vs a baseline, learning curves; written as Markdown + PNG + JSON and logged to MLflow.")
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="training runs to compare (default: every training "
                   "run of --experiment, whatever its status; unfinished ones are flagged)")
    p.add_argument("--experiment", default="hicra", help="MLflow experiment name (default: hicra)")
    p.add_argument("--tracking-uri", default=DEFAULT_URI, help="MLflow tracking URI (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: outputs/compare/<experiment>-<timestamp>)")
    p.add_argument("--group-by", default=None, metavar="KEYS", help="comma list of tags/params to group by, e.g. "
                   "choice.algorithm,algorithm.alpha (default: algorithm, planner and every swept key)")
    p.add_argument("--metric", default="val/accuracy", help="metric for final/best/threshold (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=0.3, help="steps-to-threshold level (default: %(default)s)")
    p.add_argument("--baseline", default=None, metavar="LABEL", help="group compared against (a label or a unique "
                   "part of one; default: the group with algorithm=grpo)")
    p.add_argument("--paired", action="store_true", help="also pair each arm with the baseline seed by seed: mean "
                   "per-seed difference with its 95%% CI, SD, unpaired seeds, and the detectable difference")
    p.add_argument("--effect", type=float, default=None, metavar="X", help="with --paired: the number of seeds a "
                   "true difference of X (metric units, e.g. 0.05) needs for power 0.8 at the observed SD")
    p.add_argument("--no-log", action="store_true", help="do not log the report to MLflow as a compare run")
    return p


def _group_by(text: str | None) -> list[str] | None:
    if text is None:
        return None
    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys:
        raise AnalyzeError(f"--group-by '{text}' names no key; use a comma list such as choice.algorithm,algorithm.alpha")
    return keys


def _check_effect(args: argparse.Namespace) -> None:
    if args.effect is None:
        return
    if not args.paired:
        raise AnalyzeError(f"--effect {args.effect:g} needs --paired (it sizes a paired-by-seed study)")
    if not (math.isfinite(args.effect) and args.effect > 0):
        raise AnalyzeError(f"--effect={args.effect} is not allowed; use a finite difference > 0 in the metric's "
                           "units, e.g. 0.05")


def _check_metric(frame, metric: str, n_runs: int) -> None:
    if not (frame.key == metric).any():
        logged = sorted(k for k in set(frame.key) if k.startswith(("val/", "train/")))
        raise AnalyzeError(f"--metric '{metric}' is not logged by any of the {n_runs} runs; logged: "
                           f"{', '.join(logged[:10]) or 'no val/ or train/ metric'}")


def _experiment(client, infos) -> tuple[str, str | None, list[str]]:
    """Name and artifact location of the runs' experiment (the first run's if several): the compare run goes to
    `<name>-compare`, its artifacts beside the training runs' (not under the working directory's ./mlruns)."""
    ids = list(dict.fromkeys(i.experiment_id for i in infos))
    exp = client.get_experiment(ids[0])
    note = (f"runs come from {len(ids)} experiments; the report is logged to "
            f"{md_code(exp.name + COMPARE_EXPERIMENT_SUFFIX)}, the first run's")
    return exp.name, exp.artifact_location, [] if len(ids) == 1 else [note]


def _log(client, experiment_id: str, out: Path, stamp: str, summary: dict) -> str:
    from hicra.compare.report import render_markdown

    tags = {"hicra.run_kind": "compare", "hicra.compare.baseline": summary["baseline"] or "",
            "hicra.compare.run_ids": ",".join(r["run_id"] for g in summary["groups"] for r in g["runs"])[:5000]}
    try:
        run_id = client.create_run(experiment_id, run_name=f"compare__{stamp}", tags=tags).info.run_id
    except Exception as err:  # noqa: BLE001 - e.g. a read-only store: the local report is still there
        raise AnalyzeError(f"report written to {out}, but creating the MLflow compare run failed: "
                           f"{first_line(err)}") from None
    try:
        for key, value in {"metric": summary["metric"], "threshold": summary["threshold"],
                           "group_keys": ",".join(summary["group_keys"])[:5000], "n_runs": summary["n_runs"],
                           "n_groups": len(summary["groups"])}.items():
            client.log_param(run_id, key, value)
        for key, value in verdict_metrics(summary).items():
            client.log_metric(run_id, key, value)
        # The run page's description: the verdict tables, as MLflow renders Markdown there (figures: artifacts).
        describe_run(client, run_id, render_markdown(summary, []))
        client.log_artifacts(run_id, str(out), "compare")
    except Exception as err:  # noqa: BLE001 - the local report is done; say why the upload failed
        client.set_terminated(run_id, "FAILED")
        raise AnalyzeError(f"report written to {out}, but logging it to MLflow run {run_id} failed: "
                           f"{first_line(err)}") from None
    client.set_terminated(run_id, "FINISHED")
    return run_id


def metric_name(*parts: str) -> str:
    """A valid MLflow metric name (letters, digits, `_-./ `) from group labels and quantities."""
    return "/".join(re.sub(r"[^\w\-. ]+", "_", p).strip("_ ") for p in parts)


def verdict_metrics(summary: dict) -> dict[str, float]:
    """The comparison as metrics of the compare run: each group's mean final metric and its CI, and each difference
    from the baseline with its Welch CI, so MLflow's charts and run comparison can show them."""
    out = {}
    for group in summary["groups"]:
        for field in ("mean", "low", "high"):
            if group["final"].get(field) is not None:
                out[metric_name(f"final_{field}", group["label"])] = group["final"][field]
    for c in summary["comparisons"]:
        for field, value in (("diff", c["diff"]), ("diff_low", c["ci_low"]), ("diff_high", c["ci_high"])):
            if value is not None:
                out[metric_name(field, c["quantity"], c["group"])] = value
    for arm in (summary.get("paired") or {}).get("arms", []):
        for field in ("mean_diff", "ci_low", "ci_high", "detectable_difference"):
            if arm[field] is not None:
                out[metric_name(f"paired_{field}", arm["group"])] = arm[field]
    return out


def _write(out: Path, frame, summary: dict) -> list[str]:
    """Figures, summary.json and report.md into `out`; returns the figure file names."""
    from hicra.compare.plots import eval_bars, learning_curves
    from hicra.compare.report import render_markdown
    from hicra.tracking.html_report import markdown_page

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AnalyzeError(f"cannot create output folder {out}: {err.strerror}") from None
    figures = []
    if learning_curves(frame, summary["groups"], summary["metric"], summary["threshold"],
                       out / "learning_curves.png"):
        figures.append("learning_curves.png")
    if eval_bars(summary["groups"], summary["eval_keys"], out / "eval_scores.png"):
        figures.append("eval_scores.png")
    summary["figures"] = figures
    (out / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    report = render_markdown(summary, figures)
    (out / "report.md").write_text(report, encoding="utf-8")
    (out / "report.html").write_text(markdown_page(report, out, f"hicra comparison: {summary['experiment']}"),
                                     encoding="utf-8")  # what MLflow displays with its figures
    return figures


def compare(args: argparse.Namespace) -> Path:
    from hicra.analyze.runs import fetch_metric_points, open_client, split_non_finite
    from hicra.compare.collect import completion, eval_results, training_runs

    group_by = _group_by(args.group_by)
    args.metric = current_name(args.metric)  # an old name (hicra/semantic_entropy) reads as the runs now load
    if not math.isfinite(args.threshold):
        raise AnalyzeError(f"--threshold={args.threshold} is not allowed; use a finite number")
    _check_effect(args)
    uri = absolute_tracking_uri(args.tracking_uri)
    client = open_client(uri)
    infos = training_runs(client, args.run_ids, args.experiment)
    # Imported once there is something to compare: they pull in scipy (hicra.metrics.stats) and matplotlib, seconds
    # that a mistyped experiment name should not wait for.
    from hicra.compare.grouping import make_grouping
    from hicra.compare.report import render_stdout
    from hicra.compare.summary import build_summary

    experiment, artifact_location, notes = _experiment(client, infos)
    points = fetch_metric_points(client, infos)
    _check_metric(points, args.metric, len(infos))
    runs = completion(infos, points)  # a step that logged NaN is still a step the run got to
    frame, bad = split_non_finite(points)
    grouping = make_grouping(runs, group_by)
    evals, eval_notes = eval_results(client, [i.run_id for i in infos])
    now = datetime.now()
    stamp = now.strftime("%Y%m%d-%H%M%S")
    meta = {"tool": PROG, "generated": now.isoformat(timespec="seconds"), "tracking_uri": uri,
            "experiment": experiment}
    summary = build_summary(grouping, frame, evals, metric=args.metric, threshold=args.threshold,
                            baseline=args.baseline, meta=meta, notes=[*notes, *eval_notes], bad=bad,
                            paired=args.paired, effect=args.effect)

    out = args.out or PROJECT_ROOT / "outputs" / "compare" / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', experiment)}-{stamp}"
    figures = _write(out, frame, summary)
    print(render_stdout(summary))
    print(f"\n{PROG}: wrote {out}/report.md (+ summary.json, {len(figures)} figure(s))")
    if not args.no_log:
        # Its own experiment: in the training experiment, MLflow's "select all -> compare" picked it up as a run.
        target = f"{experiment}{COMPARE_EXPERIMENT_SUFFIX}"
        run_id = _log(client, ensure_experiment(uri, target, artifact_location), out, stamp, summary)
        print(f"{PROG}: logged to MLflow experiment '{target}' as run compare__{stamp} ({run_id}), "
              "artifacts under compare/")
    return out


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, lambda: compare(build_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
