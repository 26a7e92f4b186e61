"""Files and texts attached to the MLflow run of a Lightning run (its loggers that are MLflow loggers; others skip)."""

from __future__ import annotations


def log_artifacts(loggers, paths, artifact_dir: str) -> None:
    for logger in loggers:
        if hasattr(logger, "run_id") and hasattr(logger.experiment, "log_artifact"):
            for path in paths:
                logger.experiment.log_artifact(logger.run_id, str(path), artifact_dir)


def log_text(loggers, text: str, artifact_file: str) -> None:
    for logger in loggers:
        if hasattr(logger.experiment, "log_text") and getattr(logger, "run_id", None):  # MLflow
            logger.experiment.log_text(logger.run_id, text, artifact_file)
