"""The final model as an MLflow model (logger.log_final_model=true, off by default): the run's Models column, and with
logger.registered_model_name a version in the model registry.

A pyfunc model whose artifact is the run's final_model/ folder (save_pretrained's files, unchanged) and whose code is
hicra/tracking/policy_model.py. Not mlflow.transformers: its log_model cannot read a transformers 5 checkpoint folder.
Logged from rank 0 at the end of a run, after final_model/ is written; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from hicra.errors import ConfigError

POLICY_CODE = Path(__file__).with_name("policy_model.py")
# mlflow before this fails in log_model on a run with a NaN metric at the model's step (mlflow issue #26108: its
# store re-inserts the NaN rows it links to the model); hicra's diagnostics are NaN on steps without planning tokens.
# The lowest release tested to log hicra's models; the rest of hicra runs from mlflow 3.9 (pyproject).
LOWEST_MLFLOW_FOR_MODELS = (3, 17)


def check_model_logging(cfg: DictConfig) -> None:
    """logger.log_final_model needs the folder it logs: said before the model loads."""
    if cfg.logger.get("log_final_model") and not cfg.get("save_final_model"):
        raise ConfigError("logger.log_final_model=true logs the run's final_model/ folder, which "
                          "save_final_model=false does not write; allowed: save_final_model=true, or "
                          "logger.log_final_model=false")
    if cfg.logger.get("log_final_model"):
        import mlflow

        installed = tuple(int(part) for part in mlflow.__version__.split(".")[:2])
        if installed < LOWEST_MLFLOW_FOR_MODELS:
            lowest = ".".join(map(str, LOWEST_MLFLOW_FOR_MODELS))
            raise ConfigError(f"logger.log_final_model=true needs mlflow>={lowest} (mlflow {mlflow.__version__} is "
                              f"installed; its log_model fails on a run with a NaN metric, mlflow issue #26108); "
                              f"allowed: pip install 'mlflow>={lowest}', or logger.log_final_model=false")


def log_final_model(logger, final_model: Path) -> str:
    """Log `final_model` on the logger's MLflow run as the model `model`; returns its models:/ URI."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(logger._tracking_uri)
    try:
        run = mlflow.start_run(run_id=logger.run_id)  # log_model writes to the active run only
        try:
            info = mlflow.pyfunc.log_model(name="model", python_model=str(POLICY_CODE),
                                           artifacts={"final_model": str(final_model)},
                                           pip_requirements=["torch", "transformers"],
                                           registered_model_name=logger.registered_model_name)
        finally:
            mlflow.end_run(status=run.info.status)  # leaves the run as it was (RUNNING): hicra finalizes it
    finally:
        mlflow.set_tracking_uri(previous)
    return info.model_uri
