"""Which runs a comparison reads: the training runs (finished or not, each flagged) and the eval runs linked to them.

A training run is "unfinished" when its MLflow status is not FINISHED (RUNNING, FAILED, KILLED) or when its last
logged step, over every training metric, is below its `trainer.max_steps` param. hicra-train logs the final
validation at step = trainer.max_steps, so a run that stopped early (crash, kill, a deliberately short override) is
caught even if MLflow marked it FINISHED. MLflow's system metrics (`system/*`) do not count: they are sampled every
few seconds on a step counter of their own (29 samples in a 5-step run), which would read as steps trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from hicra.analyze.runs import RUN_KIND_TAG, AnalyzeError, RunInfo, first_line, logged_value, resolve_runs
from hicra.tracking.html_report import md_text

EVAL_KIND, COMPARE_KIND = "eval", "compare"
SOURCE_TAG, BENCHMARK_TAG, PROTOCOL_TAG = "hicra.source_run_id", "hicra.benchmark", "hicra.protocol"
EVAL_SCORE = "eval/score"
NOT_TRAINING_STEPS = ("system/",)  # metric prefixes whose step is not a training step (MLflow's own sampler)


@dataclass
class TrainRun:
    info: RunInfo
    last_step: int | None          # largest step of any training metric; None when the run logged none
    max_steps: int | None          # the run's `trainer.max_steps` param (None when absent or not a positive int)
    unfinished_reason: str | None  # None: finished

    @property
    def unfinished(self) -> bool:
        return self.unfinished_reason is not None


@dataclass
class EvalResult:
    """The eval run kept for one (training run, benchmark, protocol): the latest one that logged eval/score."""

    source_run_id: str
    benchmark: str
    protocol: str
    run_id: str
    metrics: dict[str, float]
    ignored: list[str] = field(default_factory=list)  # older or score-less eval runs for the same key

    @property
    def key(self) -> str:
        return f"{self.benchmark}/{self.protocol}"


def training_runs(client, run_ids: list[str], experiment: str) -> list[RunInfo]:
    """The runs given by id (each must be a training run), or every training run of `experiment`, any status."""
    runs = resolve_runs(client, run_ids, experiment, statuses=None)
    for run in runs:
        kind = run.tags.get(RUN_KIND_TAG)
        if kind in (EVAL_KIND, COMPARE_KIND):
            raise AnalyzeError(f"run '{run.run_id}' is a{'n' if kind == EVAL_KIND else ''} {kind} run "
                               f"({RUN_KIND_TAG}={kind}); pass training runs (their eval runs are found by tag)")
    return runs


def positive_int_param(params: dict[str, str], key: str) -> int | None:
    """A run's param as a positive int; None when absent or not one (Lightning's max_steps=-1 = no limit)."""
    try:
        value = int(params.get(key, ""))
    except ValueError:
        return None
    return value if value > 0 else None


def completion(runs: list[RunInfo], frame: pd.DataFrame) -> list[TrainRun]:
    """Flag each run finished / unfinished, with the reason in words."""
    trained = frame[~frame.key.str.startswith(NOT_TRAINING_STEPS)] if not frame.empty else frame
    last = trained.groupby("run_id").step.max().to_dict() if not trained.empty else {}
    out = []
    for run in runs:
        last_step = int(last[run.run_id]) if run.run_id in last else None
        max_steps = positive_int_param(run.params, "trainer.max_steps")
        reasons = []
        if run.status != "FINISHED":
            reasons.append(f"status {run.status}")
        if max_steps is not None and (last_step is None or last_step < max_steps):
            reasons.append("no metric logged" if last_step is None else
                           f"last logged step {last_step} < trainer.max_steps {max_steps}")
        out.append(TrainRun(run, last_step, max_steps, "; ".join(reasons) or None))
    return out


def eval_results(client, train_ids: list[str]) -> tuple[list[EvalResult], list[str]]:
    """Eval runs (any experiment) whose `hicra.source_run_id` is one of `train_ids`, one per (run, benchmark,
    protocol): the newest that logged a finite eval/score, whatever its other settings (`hicra.limit`, ...); the
    older ones are named in a note. A store that cannot be searched gives no eval results and a note."""
    wanted = set(train_ids)
    try:
        experiment_ids = [e.experiment_id for e in client.search_experiments(max_results=1000)]
        found = client.search_runs(experiment_ids, filter_string=f"tags.`{RUN_KIND_TAG}` = '{EVAL_KIND}'",
                                   order_by=["attributes.start_time DESC"], max_results=10000) \
            if experiment_ids else []
    except Exception as err:  # noqa: BLE001 - the training comparison is still worth writing
        return [], [f"eval runs could not be searched ({md_text(first_line(err))}); no eval columns"]
    kept: dict[tuple[str, str, str], EvalResult] = {}
    notes = []
    for run in found:  # newest first: the first run seen for a key is the one kept
        tags = run.data.tags
        source = tags.get(SOURCE_TAG)
        if source not in wanted:
            continue
        key = (source, tags.get(BENCHMARK_TAG, "<missing>"), tags.get(PROTOCOL_TAG, "<missing>"))
        metrics = {k: float(v) for k, v in run.data.metrics.items()
                   if k.startswith("eval/") and math.isfinite(logged_value(v))}  # a stored inf is not a score
        if key in kept or EVAL_SCORE not in metrics:
            if key in kept:
                kept[key].ignored.append(run.info.run_id)
            else:
                notes.append(f"eval run {run.info.run_id} ({md_text(f'{key[1]}/{key[2]}')} of {md_text(source[:8])}, "
                             f"status {run.info.status}) has no {EVAL_SCORE}; ignored")
            continue
        kept[key] = EvalResult(source, key[1], key[2], run.info.run_id, metrics)
    for result in kept.values():
        if result.ignored:
            notes.append(f"{len(result.ignored)} older eval run(s) of {md_text(result.source_run_id[:8])} on "
                         f"{md_text(result.key)} "
                         f"ignored (kept the latest, {result.run_id[:8]}): {', '.join(result.ignored)}")
    return list(kept.values()), notes
