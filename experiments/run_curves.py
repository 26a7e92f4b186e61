"""What the study reports share: finished training runs read back from MLflow, their held-out curves per seed,
mean and 95% CI per validation step, and the accuracy-vs-steps / accuracy-vs-wall-time figure.

Held-out accuracy is `val/accuracy` as the runs logged it: greedy, strict (only a closed \\boxed{} in a finished reply
counts), on the task's held-out questions. Intervals are t intervals over seeds (hicra.metrics.stats).
"""

from __future__ import annotations

from pathlib import Path

from hicra.metrics.stats import mean_ci
from hicra.tracking.metric_names import legacy_names

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_URI = f"sqlite:///{ROOT / 'outputs' / 'mlflow.db'}"
VAL_KEYS = ("val/accuracy", "val/boxed_frac", "val/truncated_frac", "val/response_length")
SEED_STYLES = ("-", "--", ":", "-.")


def report_parser(doc: str, command: str, out: Path):
    """The command line every study report shares: where the runs are, the command to quote, where to write."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=DEFAULT_URI)
    parser.add_argument("--command", default=command)
    parser.add_argument("--out", type=Path, default=out)
    return parser


def client_for(uri: str = DEFAULT_URI):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


def newest_per_seed(client, experiment: str, where: str = "") -> dict[int, object]:
    """seed -> newest FINISHED training run of `experiment` matching the extra filter `where` (MLflow syntax)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    query = "tags.`hicra.run_kind` = 'train' and attributes.status = 'FINISHED'" + (f" and {where}" if where else "")
    newest: dict[int, object] = {}
    for run in client.search_runs([exp.experiment_id], query, order_by=["attributes.start_time DESC"]):
        newest.setdefault(int(run.data.tags["seed"]), run)
    return dict(sorted(newest.items()))


def history(client, run, key: str) -> list[tuple[int, float, float]]:
    """[(step, value, seconds since the run started)] of one metric, by step (under its older name for runs logged
    before a rename, hicra/tracking/metric_names.py)."""
    rows = next((r for name in legacy_names(key) if (r := client.get_metric_history(run.info.run_id, name))), [])
    return sorted((m.step, m.value, (m.timestamp - run.info.start_time) / 1000) for m in rows)


def run_curves(client, run) -> dict:
    """One run's validation curves (val/* per validation step, seconds since start), wall time and provenance."""
    curves = {key: history(client, run, key) for key in VAL_KEYS}
    train_truncated = history(client, run, "train/truncated_frac")
    tags = run.data.tags
    return {
        "run_id": run.info.run_id, "git_sha": tags.get("git.sha"), "git_dirty": tags.get("git.dirty"),
        "machine": tags.get("machine", "not recorded"),
        "wall_s": (run.info.end_time - run.info.start_time) / 1000,
        "steps": [s for s, _, _ in curves["val/accuracy"]],
        "seconds": [t for _, _, t in curves["val/accuracy"]],
        **{key: [v for _, v, _ in rows] for key, rows in curves.items()},
        "train/truncated_frac_last": train_truncated[-1][1] if train_truncated else None,
    }


def mean_curve(per_seed: dict[int, dict]) -> list[dict]:
    """Per validation step: mean and 95% CI over seeds of every val/* key, and the mean seconds since start."""
    runs = list(per_seed.values())
    steps = runs[0]["steps"]
    if any(r["steps"] != steps for r in runs):
        raise SystemExit("the seeds' validation steps differ; were they run with the same settings?")
    return [{"step": step, **{k: mean_ci([r[k][i] for r in runs]).__dict__ for k in VAL_KEYS},
             "seconds_mean": sum(r["seconds"][i] for r in runs) / len(runs)} for i, step in enumerate(steps)]


def ci_text(stat: dict, digits: int = 3) -> str:
    """"0.412 [0.380, 0.444]" from a MeanCI/DiffCI dict; the bare mean when there is no interval (n < 2)."""
    value = stat.get("mean", stat.get("diff"))
    if stat["half_width"] is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]"


def provenance(per_seed: dict[int, dict]) -> tuple[str, str]:
    """("`sha`, ..." the commits the runs ran at, the machine of the first run)."""
    shas = sorted({f"{r['git_sha']}{' (dirty)' if r['git_dirty'] == 'true' else ''}" for r in per_seed.values()})
    return ", ".join(f"`{s}`" for s in shas), next(iter(per_seed.values()))["machine"]


def report_header(title: str, script: str, command: str, per_seed: dict[int, dict]) -> list[str]:
    """The top of a study's RESULTS.md: title, where it came from, command, commits, machine, when written."""
    from datetime import UTC, datetime

    commits, machine = provenance(per_seed)
    return [f"# {title}", "", f"Generated by `{script}` from the MLflow runs (do not edit by hand).", "",
            "| | |", "|---|---|", f"| command | `{command}` |", f"| commit | {commits} |", f"| machine | {machine} |",
            f"| written | {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} |"]


def plot_accuracy(arms: dict[str, dict[int, dict]], path: Path, baseline: tuple[str, float] | None = None) -> None:
    """Held-out accuracy against steps (mean line, 95% CI band, faint seeds) and against wall time (every seed), one
    colour per arm; `baseline` = (label, value) drawn as a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for colour, (arm, per_seed) in enumerate(arms.items()):
        c = f"C{colour}"
        curve = mean_curve(per_seed)
        steps = [row["step"] for row in curve]
        mean = [row["val/accuracy"]["mean"] for row in curve]
        low = [row["val/accuracy"]["low"] if row["val/accuracy"]["low"] is not None else m
               for row, m in zip(curve, mean)]
        high = [row["val/accuracy"]["high"] if row["val/accuracy"]["high"] is not None else m
                for row, m in zip(curve, mean)]
        by_step.fill_between(steps, low, high, color=c, alpha=0.2)
        by_step.plot(steps, mean, color=c, marker="o", label=f"{arm}: mean, 95% CI over {len(per_seed)} seeds")
        for index, (seed, run) in enumerate(per_seed.items()):
            style = SEED_STYLES[index % len(SEED_STYLES)]  # one line style per seed, the arm's colour
            by_step.plot(run["steps"], run["val/accuracy"], color=c, lw=0.7, alpha=0.4, ls=style)
            by_time.plot([t / 60 for t in run["seconds"]], run["val/accuracy"], color=c, ls=style, marker=".",
                         alpha=0.8, label=f"{arm}, seed {seed}")
    if baseline is not None:
        for ax in (by_step, by_time):
            ax.axhline(baseline[1], color="grey", ls=":", lw=1, label=baseline[0])
    by_step.set(xlabel="training step (updates)", ylabel="held-out accuracy (greedy, strict \\boxed{})",
                title="Held-out accuracy vs steps")
    by_time.set(xlabel="wall time since the run started (min)", title="Held-out accuracy vs wall time")
    for ax in (by_step, by_time):
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
