"""logger.log_final_model=true: the run's final_model/ as an MLflow model (the Models column, the registry), which
loads and answers offline: checked on the one tiny run of tests/tracking/test_extra_trackers.py. Here: off by default,
and refused in one line when there is no final_model/ to log."""

from __future__ import annotations

import pytest
from support import CONF_DIR


def test_no_model_logged_by_default_and_none_without_a_final_model():
    from omegaconf import OmegaConf

    from hicra.errors import ConfigError
    from hicra.tracking.model_logging import check_model_logging

    default = OmegaConf.load(CONF_DIR / "logger" / "mlflow.yaml")
    assert default.log_final_model is False
    check_model_logging(OmegaConf.create({"logger": default, "save_final_model": False}))
    with pytest.raises(ConfigError, match="logger.log_final_model=true .* save_final_model=false"):
        check_model_logging(OmegaConf.create({"logger": {"log_final_model": True}, "save_final_model": False}))


def test_an_mlflow_whose_log_model_breaks_on_nan_metrics_is_refused_before_the_model_loads(monkeypatch):
    """mlflow 3.9's log_model re-inserts a run's NaN metrics at the model's step and dies on the store's unique key
    (seen with `make test-compat`; mlflow issue #26108): refused in one line instead of a traceback at the run's end."""
    import mlflow
    from omegaconf import OmegaConf

    from hicra.errors import ConfigError
    from hicra.tracking.model_logging import check_model_logging

    wanted = OmegaConf.create({"logger": {"log_final_model": True}, "save_final_model": True})
    if tuple(int(part) for part in mlflow.__version__.split(".")[:2]) >= (3, 17):
        check_model_logging(wanted)  # an mlflow that logs models is let through
    monkeypatch.setattr(mlflow, "__version__", "3.9.0")
    with pytest.raises(ConfigError, match=r"needs mlflow>=3\.17 \(mlflow 3\.9\.0 is installed.*#26108"):
        check_model_logging(wanted)
