"""What one run knows once its preflight has passed, before its model loads: built once by `train(cfg)` and read by
each of its steps, instead of relaying the same arguments from function to function."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


@dataclass(frozen=True)
class RunContext:
    cfg: DictConfig
    choices: dict[str, str]  # the config groups' chosen options (hydra_job.hydra_choices)
    algorithm: object  # hicra.algorithms' Algorithm, its Dr.GRPO normaliser filled in by preflight
    sampler: object
    task: object
    memory: object | None  # memory_check.PlannedRun; None where the plan does not apply
    out_dir: Path  # the run folder
    is_main: bool  # rank 0: under DDP/FSDP only it owns the MLflow run, the files and the run's locks

    @property
    def num_batches(self) -> int:
        """Prompt batches of the run: each is trained on `algorithm.num_iterations` times."""
        return math.ceil(self.cfg.trainer.max_steps / self.algorithm.num_iterations)


def demonstrations(cfg: DictConfig) -> list[dict] | None:
    """The worked examples shown before each question as earlier chat turns (`demonstrations`), as plain dicts."""
    shots = cfg.get("demonstrations")
    return None if shots is None else OmegaConf.to_container(shots, resolve=True)
