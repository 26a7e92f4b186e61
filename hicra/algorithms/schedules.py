"""Learning-rate schedules: the multiplier of the base learning rate at optimizer step t (pure, no torch).

`lr_multiplier(t, ...)` is what torch.optim.lr_scheduler.LambdaLR calls with t = the number of optimizer steps
taken so far (0 before the first), so lr(t) = optim.lr * lr_multiplier(t). The scheduler's state is only that step
count: a checkpoint that holds it continues the schedule exactly.
"""

import math

from hicra.options import LR_DECAYS


def lr_multiplier(step: int, decay: str = "constant", warmup_steps: int = 0, total_steps: int = 1,
                  min_ratio: float = 0.0) -> float:
    """Linear warm-up over `warmup_steps`, then `decay` from 1 down to `min_ratio` at `total_steps`.

    warm-up:  m(t) = (t + 1) / warmup_steps for t < warmup_steps. The first update already moves (1/W of the
              rate; HF's and verl's t / W give the first update rate 0, which wastes a whole rollout), and update
              W (t = W - 1) runs at the full rate.
    decay, with p = (t - W) / (total_steps - W) clamped to [0, 1]:
              constant: 1;  linear: r + (1 - r)(1 - p);  cosine: r + (1 - r)(1 + cos(pi p)) / 2   (r = min_ratio)
    so the full rate right after warm-up and r from step total_steps on (a run longer than planned stays at r).
    """
    if decay not in LR_DECAYS:
        raise ValueError(f"decay must be one of {LR_DECAYS}, got {decay!r}")
    if warmup_steps < 0 or total_steps < 1 or not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"need warmup_steps >= 0, total_steps >= 1, 0 <= min_ratio <= 1; got warmup_steps="
                         f"{warmup_steps}, total_steps={total_steps}, min_ratio={min_ratio}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    shape = 1.0 - progress if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * shape
