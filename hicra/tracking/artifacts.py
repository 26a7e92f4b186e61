"""Files and texts attached to the MLflow run of a Lightning run (its loggers that are MLflow loggers; others skip),
and the size caps that keep one step's artifacts small whatever the model or the data wrote."""

from __future__ import annotations

from pathlib import Path


def cut_marker(chars: int) -> str:
    """What stands where `chars` characters were left out of an artifact: visible, and says how much."""
    return f"[... {chars} chars cut]"


def cap_text(text: str, limit: int) -> str:
    """`text` whole when it has at most `limit` characters; else its first and last `limit // 2` characters around
    a `cut_marker` (the start and the end of a prompt or a reply are what a reader looks for)."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + cut_marker(len(text) - 2 * half) + text[len(text) - half:]


def _mlflow_loggers(loggers):
    """The loggers that hold an MLflow run: a run id and an MlflowClient as `experiment`."""
    return [logger for logger in loggers
            if getattr(logger, "run_id", None) and hasattr(logger.experiment, "log_artifact")]


def _store(logger, what: str, fn, *args) -> None:
    """`fn(*args)` through the logger's guard where it has one (ResumableMLFlowLogger.call: a full artifact store or
    an absent server is said once and named on the run, training goes on); directly otherwise."""
    if hasattr(logger, "call"):
        logger.call(what, fn, *args)
    else:
        fn(*args)


def log_artifacts(loggers, paths, artifact_dir: str) -> None:
    for logger in _mlflow_loggers(loggers):
        for path in paths:
            _store(logger, f"{artifact_dir}/{Path(path).name}", logger.experiment.log_artifact, logger.run_id,
                   str(path), artifact_dir)


def log_text(loggers, text: str, artifact_file: str) -> None:
    for logger in _mlflow_loggers(loggers):
        _store(logger, artifact_file, logger.experiment.log_text, logger.run_id, text, artifact_file)
