"""The optimizer Lightning gets from the module, with the learning-rate schedule when the run has one."""

from __future__ import annotations

import torch


def optimizers_for(policy: torch.nn.Module, optimizer_factory, lr_schedule=None):
    """AdamW (or the configured optimizer) over the trainable weights; with `lr_schedule` (step -> lr multiplier,
    hicra.algorithms.schedules.lr_multiplier) a step-wise LambdaLR. Lightning saves the scheduler's state (its step
    count) in every checkpoint and restores it on resume; with manual optimisation the module steps it once per
    optimizer step."""
    optimizer = optimizer_factory(params=[p for p in policy.parameters() if p.requires_grad])
    if lr_schedule is None:
        return optimizer
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
