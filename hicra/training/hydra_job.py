"""This job as Hydra launched it: the chosen options, the run folder, whether it is one job of a sweep, and what
its command line swept. Outside Hydra (a `train(cfg)` call from Python) each answer has a plain default.

Light (Hydra only): hicra.training.cli imports COMMAND_LINE_ENV from here before anything heavy loads.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from hicra.config.sweep import swept_keys

COMMAND_LINE_ENV = "HICRA_TRAIN_ARGV"  # hicra-train's own command line, for jobs run in other processes


def hydra_choices() -> dict[str, str]:
    """The config groups' chosen options; an optional group left unset (`experiment`) is absent, not "None"."""
    if not HydraConfig.initialized():
        return {}
    return {g: str(o) for g, o in HydraConfig.get().runtime.choices.items()
            if not g.startswith("hydra") and o is not None}


def run_dir(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir) / "runs" / "manual"


def in_sweep() -> bool:
    """A job of `hicra-train -m`: with `ckpt_path=last` and no checkpoint of its own it starts instead of failing."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def named_run_dir(out_dir: Path) -> Path | None:
    """`out_dir` when the command names the run folder (`hydra.run.dir=...`, or `hydra.sweep.dir=...` for a job of a
    multirun): there `ckpt_path=last` means this run's own checkpoint, not the newest one anywhere."""
    if not HydraConfig.initialized():
        return None
    named = {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.hydra}
    folder = "hydra.sweep.dir" if in_sweep() else "hydra.run.dir"  # the other one does not place this job
    return out_dir if folder in named else None


def task_overrides() -> list[str]:
    """This job's own overrides of the config (`key=value`, one value per swept key)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def swept_overrides() -> dict[str, str]:
    """{key: this job's value} for the keys a multirun sweeps (`key=a,b` or `range(...)` on its command line, or
    `hydra.sweeper.params` in a config): what tells the jobs of one sweep apart. Empty for a single run."""
    if not in_sweep():
        return {}
    hydra = HydraConfig.get()
    argv = json.loads(os.environ.get(COMMAND_LINE_ENV, "null")) or sys.argv[1:]  # set by hicra-train's main
    swept = swept_keys(argv) | set((hydra.sweeper.get("params") or {}).keys())
    own = dict(o.lstrip("+~").split("=", 1) for o in hydra.overrides.task if "=" in o)
    return {key: own[key] for key in sorted(swept) if key in own}
