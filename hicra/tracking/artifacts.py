"""Files and texts attached to the MLflow run of a Lightning run (its loggers that are MLflow loggers; others skip)."""

from __future__ import annotations


def _mlflow_loggers(loggers):
    """The loggers that hold an MLflow run: a run id and an MlflowClient as `experiment`."""
    return [logger for logger in loggers
            if getattr(logger, "run_id", None) and hasattr(logger.experiment, "log_artifact")]


def log_artifacts(loggers, paths, artifact_dir: str) -> None:
    for logger in _mlflow_loggers(loggers):
        for path in paths:
            logger.experiment.log_artifact(logger.run_id, str(path), artifact_dir)


def log_text(loggers, text: str, artifact_file: str) -> None:
    for logger in _mlflow_loggers(loggers):
        logger.experiment.log_text(logger.run_id, text, artifact_file)
