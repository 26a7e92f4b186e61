"""What one training step hands the callbacks (completion samples, the corpus of correct completions)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor

from hicra.rollout.hf import RolloutBatch

# Lightning's manual optimization accepts only a Tensor, a Mapping or None from `training_step` (anything else is a
# MisconfigurationException, pytorch_lightning/loops/optimization/manual.py), and passes a Mapping's copy on to
# `on_train_batch_end(trainer, pl_module, outputs, ...)`: so the StepOutput travels under this key.
KEY = "step_output"


@dataclass(frozen=True)
class StepOutput:
    """One rollout batch and what the algorithm made of it. B = prompts x G rows, grouped prompt by prompt."""

    step: int  # updates the sampling policy had (MLflow's step of this batch's metrics)
    rollout: RolloutBatch  # on the policy's device
    texts: list[str]  # (B,) decoded responses
    rewards: Tensor  # (B,) what the advantages were computed from (correctness + any format term); CPU, like all below
    correctness: Tensor  # (B,) the task's score alone in [0, 1]; 1 = correct
    planning_mask: Tensor  # (B,T) bool
    advantages: Tensor  # (B,)
    token_advantages: Tensor  # (B,T)
    prompts: list[str]  # (B/G,) the batch's prompts


def step_output(outputs) -> StepOutput | None:
    """The StepOutput in what `on_train_batch_end` receives; None when the step returned none."""
    return outputs.get(KEY) if isinstance(outputs, Mapping) else None
