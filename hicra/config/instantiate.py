"""`build`: Hydra's `instantiate` with a user's bad value reported as one line.

Kept apart from hicra.training.run so that hicra-eval can use it without importing Lightning (seconds of start-up).
"""

from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from hicra.errors import ConfigError


def build(node: DictConfig, **kwargs):
    """`hydra.utils.instantiate`, with a user's bad value reported as a one-line ConfigError."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err
        while cause.__cause__ is not None and not isinstance(cause, ConfigError):  # a ConfigError is the story,
            cause = cause.__cause__                                                # not the OSError it wraps
        if isinstance(cause, (ConfigError, ValueError, TypeError, OmegaConfBaseException)):
            raise ConfigError(str(cause).splitlines()[0]) from err
        raise
