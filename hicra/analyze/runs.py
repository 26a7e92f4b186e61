"""Resolve MLflow runs and fetch what the report needs: tags, metric histories (pandas) and completion samples."""

from __future__ import annotations

import json
import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hicra.tracking.metric_names import current_name
from hicra.tracking.store import quiet_mlflow

if TYPE_CHECKING:  # pandas is imported where a frame is built: `--help` and a bad argument do not wait for it
    import pandas as pd

DONE_STATUSES = ("FINISHED", "FAILED")
RUN_KIND_TAG = "hicra.run_kind"            # "train" (hicra-train), "eval" (hicra-eval), "compare" (hicra-compare)
NON_TRAINING_KINDS = ("eval", "compare")


class AnalyzeError(Exception):
    """A user's mistake (unknown run, empty experiment, unreadable store): one line on stderr, exit 2."""


@dataclass
class RunInfo:
    run_id: str
    name: str
    algorithm: str
    planner: str
    seed: str
    status: str
    # Filled by resolve_runs for callers that group or filter runs (hicra-compare); empty when built by hand.
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    experiment_id: str = ""
    start_time: int = 0

    @property
    def label(self) -> str:
        return self.name


def open_client(tracking_uri: str):
    """An MlflowClient on an existing store (a missing sqlite file is an error, not a new empty store)."""
    import mlflow

    quiet_mlflow()
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri[len("sqlite:///"):])
        if not path.is_file():
            raise AnalyzeError(f"no MLflow store at {path} (use --tracking-uri)")
    try:  # a file that is not a database fails as the client opens it, or at its first query
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        client.search_experiments(max_results=1)
    except Exception as err:
        raise AnalyzeError(f"cannot open MLflow store {tracking_uri}: {first_line(err)}") from err
    return client


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _info(run) -> RunInfo:
    tags = run.data.tags
    return RunInfo(run_id=run.info.run_id, name=run.info.run_name or tags.get("mlflow.runName") or run.info.run_id[:8],
                   algorithm=tags.get("choice.algorithm", "unknown"), planner=tags.get("choice.planner", "unknown"),
                   seed=tags.get("seed", "?"), status=run.info.status, tags=dict(tags),
                   params=dict(run.data.params), experiment_id=run.info.experiment_id,
                   start_time=run.info.start_time or 0)


def resolve_runs(client, run_ids: list[str], experiment: str,
                 statuses: tuple[str, ...] | None = DONE_STATUSES) -> list[RunInfo]:
    """The given runs, or the training runs of `experiment` whose status is in `statuses` (None: any), oldest first.

    An experiment also holds the runs that hicra-eval and hicra-compare log (tag `hicra.run_kind`): they carry no
    training metrics, so they are left out here; runs given by id are returned as they are.
    """
    from mlflow.exceptions import MlflowException

    if run_ids:
        runs = []
        for run_id in run_ids:
            try:
                runs.append(_info(client.get_run(run_id)))
            except MlflowException:
                raise AnalyzeError(f"run '{run_id}' not found in the tracking store") from None
    else:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise AnalyzeError(f"experiment '{experiment}' not found in the tracking store")
        found = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"], max_results=5000)
        training = [r for r in found if r.data.tags.get(RUN_KIND_TAG) not in NON_TRAINING_KINDS]
        runs = [_info(r) for r in training if statuses is None or r.info.status in statuses]
        if not runs:
            which = "" if statuses is None else " finished or failed" if statuses == DONE_STATUSES else \
                " " + "/".join(statuses)
            skipped = f" ({len(found) - len(training)} eval/compare run(s) skipped)" if len(found) > len(training) \
                else ""
            raise AnalyzeError(f"experiment '{experiment}' has no{which} training runs{skipped}")
    _dedupe_labels(runs)
    return runs


def _dedupe_labels(runs: list[RunInfo]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.name] = seen.get(run.name, 0) + 1
    for run in runs:
        if seen[run.name] > 1:
            run.name = f"{run.name} ({run.run_id[:6]})"


def logged_value(value: float) -> float:
    """A metric value as it was logged: MLflow's SQL stores keep +-inf as +-1.797e308 (the largest float), which
    would pass as finite and overflow any statistic; read back as the infinity it was."""
    return math.copysign(math.inf, value) if abs(value) == sys.float_info.max else value


def fetch_metric_points(client, runs: list[RunInfo]) -> pd.DataFrame:
    """Long frame (run_id, key, step, value): every logged metric under its current name (metric_names.py), last
    value per step, NaN and +-inf kept (split_non_finite separates them)."""
    import pandas as pd

    rows = []
    for run in runs:
        for key in client.get_run(run.run_id).data.metrics:
            for m in client.get_metric_history(run.run_id, key):
                if m.value is not None:
                    rows.append((run.run_id, current_name(key), int(m.step), logged_value(float(m.value)),
                                 m.timestamp))
    frame = pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "timestamp"])
    frame = frame.sort_values(["run_id", "key", "step", "timestamp"])
    return frame.groupby(["run_id", "key", "step"], as_index=False).last().drop(columns="timestamp")


def split_non_finite(points: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the finite points, the NaN / +-inf ones): figures and statistics use the first; the second is reported."""
    import numpy as np

    finite = np.isfinite(points.value.to_numpy(dtype=float))
    return points[finite].reset_index(drop=True), points[~finite].reset_index(drop=True)


def fetch_metrics(client, runs: list[RunInfo]) -> pd.DataFrame:
    """fetch_metric_points without the non-finite points (NaN, +-inf)."""
    return split_non_finite(fetch_metric_points(client, runs))[0]


def series(frame: pd.DataFrame, run_id: str, key: str) -> pd.Series:
    """One metric of one run as a step-indexed Series (empty when not logged)."""
    import pandas as pd

    sel = frame[(frame.run_id == run_id) & (frame.key == key)]
    return pd.Series(sel.value.to_numpy(), index=sel.step.to_numpy(), name=key, dtype=float)


def has_metric(frame: pd.DataFrame, key: str) -> bool:
    return bool((frame.key == key).any())


def final_value(frame: pd.DataFrame, run_id: str, key: str) -> float | None:
    s = series(frame, run_id, key)
    return None if s.empty else float(s.sort_index().iloc[-1])


def fetch_completions(client, run_id: str, max_steps: int = 30) -> list[dict]:
    """The run's completion samples (`completions/completions_stepNNNNNN.json`), the latest `max_steps`, by step.
    A file that is not JSON, or not shaped as the viewer needs (completion_samples.py), is skipped with one line."""
    from hicra.analyze.completion_samples import checked_sample

    try:
        files = [f.path for f in client.list_artifacts(run_id, "completions") if f.path.endswith(".json")]
    except Exception:  # noqa: BLE001 - an unreachable artifact store only loses the viewer
        return []
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(files)[-max_steps:]:
            try:
                local = client.download_artifacts(run_id, path, tmp)
                sample, problem = checked_sample(json.loads(Path(local).read_text(encoding="utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                sample, problem = None, f"not valid JSON text ({first_line(err)})"
            except Exception as err:  # noqa: BLE001 - a broken sample file is skipped, not fatal
                sample, problem = None, first_line(err)
            if sample is None:
                print(f"hicra-analyze: skipping {path} of run {run_id[:8]}: {problem}", file=sys.stderr)
                continue
            samples.append(sample)
    return sorted(samples, key=lambda d: d["step"])
