"""Will the optimizer's updates survive the weights' precision? A bf16 weight keeps 8 significant bits, so an AdamW
step (about `lr` in size) that is below half a unit in the last place of the weight rounds away: at lr 1e-6 a bf16
weight of 0.02 never moves (its half-ulp is 6.1e-5). Checked once, on the loaded weights, before the run starts.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from hicra.errors import ConfigError

LOW_PRECISION = (torch.bfloat16, torch.float16)
SAMPLE_PER_TENSOR = 1_000_000  # elements read per weight tensor: the estimate, not the whole 7B model
REFUSE_ABOVE = 0.5  # refuse when more than half of the weights would not move at all


def rounded_away_fraction(weights: Iterable[Tensor], step: float, dtype: torch.dtype) -> float:
    """Share of weight elements, held in `dtype`, that `w + step == w` leaves unchanged (the step rounds away).
    Reads at most SAMPLE_PER_TENSOR elements of each tensor; 0.0 when there are none."""
    lost = total = 0
    with torch.no_grad():
        for weight in weights:
            if weight.is_meta:  # trainer=fsdp: ranks above 0 start on the meta device (rank 0 checks the real ones)
                continue
            w = weight.detach().reshape(-1)[:SAMPLE_PER_TENSOR].to(dtype)  # (n,)
            lost += int((w + step).eq(w).sum())
            total += w.numel()
    return lost / total if total else 0.0


def trained_dtype(model_dtype: torch.dtype, trainer_precision: str) -> torch.dtype:
    """The dtype the optimizer updates: Lightning's `*-true` precisions cast the weights themselves, `*-mixed` and
    `32-true` leave them as loaded (autocast computes in half precision on fp32 master weights)."""
    return {"bf16-true": torch.bfloat16, "16-true": torch.float16}.get(str(trainer_precision), model_dtype)


def compensates_rounding(optim_cfg) -> bool:
    """torch-optimi's optimizers with Kahan summation carry the rounded-away part into the next step."""
    return str(optim_cfg.get("_target_", "")).startswith("optimi.") and optim_cfg.get("kahan_sum", None) is not False


def check_updates_survive(model, optim_cfg, trainer_precision: str) -> None:
    """ConfigError when most trainable weights are half precision, the optimizer does not compensate rounding, and
    a step of `optim.lr` would leave most of them unchanged."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        return
    dtype = trained_dtype(trainable[0].dtype, trainer_precision)
    if dtype not in LOW_PRECISION or compensates_rounding(optim_cfg):
        return
    lr = float(optim_cfg.lr)
    lost = rounded_away_fraction(trainable, lr, dtype)
    if lost > REFUSE_ABOVE:
        name = str(dtype).removeprefix("torch.")
        raise ConfigError(
            f"optim.lr={lr:g} on {name} weights with {optim_cfg._target_} rounds away {lost:.0%} of the weight "
            f"updates ({name} keeps 8-11 significant bits); allowed: model.dtype=float32 with "
            f"trainer.precision=bf16-mixed (fp32 master weights), optim=adamw_kahan (Kahan-compensated {name} "
            f"updates), or a larger optim.lr")
