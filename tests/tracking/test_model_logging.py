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
