"""Trackers beside MLflow: Lightning's own TensorBoard and Weights & Biases loggers (`extra_loggers=tensorboard`,
`extra_loggers=[tensorboard,wandb]`, conf/extra_loggers/).

They receive every metric MLflow receives, under the same names: hicra logs through `trainer.loggers`, and Lightning
hands each logger the same dict. MLflow stays the first logger, the one the run's params, tags, artifacts and the
verdicts (hicra-compare) go to; code that needs MLflow picks it by type (hicra/tracking/artifacts.py), never by place.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from omegaconf import DictConfig

from hicra.config.instantiate import build
from hicra.errors import ConfigError

# What each tracker needs installed: the package Lightning imports, and how to get it.
NEEDS = {"tensorboard": (("tensorboard", "tensorboardX"), 'pip install tensorboard (or: pip install -e ".[trackers]")'),
         "wandb": (("wandb",), 'pip install wandb (or: pip install -e ".[trackers]")')}


def chosen(cfg: DictConfig) -> dict:
    """The extra trackers the config names, by option name ({} when none)."""
    return dict(cfg.get("extra_loggers") or {})


def check_extra_loggers(cfg: DictConfig) -> None:
    """A tracker whose package is missing: one line before any model loads, not an ImportError after it."""
    for name in chosen(cfg):
        modules, install = NEEDS.get(name, ((), ""))
        if modules and not any(importlib.util.find_spec(module) for module in modules):
            raise ConfigError(f"extra_loggers={name} needs the {modules[0]} package, which is not installed: "
                              f"{install}; or leave out extra_loggers={name}")


def build_extra_loggers(cfg: DictConfig, out_dir: Path, run_name: str | None) -> list:
    """The extra trackers of a run (rank 0 only): files under the run folder unless the config names a folder, and the
    MLflow run's name so the two trackers show the same run under the same name."""
    loggers = []
    for name, node in chosen(cfg).items():
        defaults = {}
        if node.get("save_dir") is None:
            defaults["save_dir"] = str(out_dir)
        if "name" in node and node.get("name") is None and run_name is not None and name == "wandb":
            defaults["name"] = run_name
        loggers.append(build(node, **defaults))
    return loggers


def finish_extra_loggers(loggers: list) -> None:
    """Flush each tracker's files at the end of a run: TensorBoard's event file, a wandb run (offline: its folder
    under wandb/, ready for `wandb sync`). Lightning finalizes the loggers but leaves a wandb run open."""
    for logger in loggers:
        logger.finalize("success")
        finish = getattr(getattr(logger, "_experiment", None), "finish", None)
        if finish is not None:
            finish()
