"""Learning-rate schedules: the multiplier's hand-computed values, the scheduler Lightning steps and saves, and a
resumed run that continues the schedule exactly where it stopped."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from support import TINY_RUN

from hicra.algorithms.schedules import LR_DECAYS, lr_multiplier
from hicra.training.module import PolicyGradientModule
from hicra.training.run import train


def test_warmup_then_constant_hand_values():
    assert [lr_multiplier(t, "constant", warmup_steps=4, total_steps=10) for t in range(6)] == \
        [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_linear_decay_hand_values():
    # W=2, T=6, r=0.2: p = (t - 2) / 4 -> 0.2 + 0.8 * (1 - p)
    got = [lr_multiplier(t, "linear", warmup_steps=2, total_steps=6, min_ratio=0.2) for t in range(8)]
    assert got == pytest.approx([0.5, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.2])


def test_cosine_decay_hand_values():
    # W=0, T=4, r=0: (1 + cos(pi t / 4)) / 2 = 1, 0.853553, 0.5, 0.146447, 0, then 0 beyond T
    got = [lr_multiplier(t, "cosine", warmup_steps=0, total_steps=4) for t in range(6)]
    assert got == pytest.approx([1.0, 0.5 + 0.25 * math.sqrt(2), 0.5, 0.5 - 0.25 * math.sqrt(2), 0.0, 0.0])
    assert lr_multiplier(2, "cosine", warmup_steps=0, total_steps=4, min_ratio=0.1) == pytest.approx(0.55)


@pytest.mark.parametrize("decay", LR_DECAYS)
def test_no_warmup_starts_at_the_full_rate_and_bad_values_are_refused(decay):
    assert lr_multiplier(0, decay, warmup_steps=0, total_steps=5) == 1.0
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_multiplier(0, decay, warmup_steps=-1)
    with pytest.raises(ValueError, match="decay must be one of"):
        lr_multiplier(0, "exp")


def test_no_schedule_is_a_bare_optimizer_and_a_schedule_a_step_scheduler():
    params = [torch.nn.Parameter(torch.zeros(2))]
    module = SimpleNamespace(policy=SimpleNamespace(parameters=lambda: params), lr_schedule=None,
                             optimizer_factory=lambda params: torch.optim.AdamW(params, lr=0.1))
    assert isinstance(PolicyGradientModule.configure_optimizers(module), torch.optim.AdamW)
    module.lr_schedule = lambda t: lr_multiplier(t, "linear", warmup_steps=2, total_steps=4)
    config = PolicyGradientModule.configure_optimizers(module)
    assert config["lr_scheduler"]["interval"] == "step"
    assert config["optimizer"].param_groups[0]["lr"] == pytest.approx(0.05)  # step 0 of the warm-up: 1/2


def _run(compose_cfg, out, *overrides):
    # W=2, T=4, r=0.1 -> multipliers 0.5, 1, 1, 0.55; a schedule restarted at step 2 would give 0.5 there
    cfg = compose_cfg(*TINY_RUN, "task._target_=support.ParityTask", "score_truncated=true", "logger=none",
                      "lr_schedule=cosine", "lr_schedule.warmup_steps=2", "lr_schedule.total_steps=4",
                      "lr_schedule.min_ratio=0.1", "optim.lr=0.01", "checkpoint_every_n_steps=2",
                      "val_every_n_steps=10", f"paths.output_dir={out}", *overrides)
    return train(cfg, choices={"algorithm": "hicra"})


@pytest.mark.slow
def test_a_resumed_run_continues_the_schedule_exactly(compose_cfg, tmp_path):
    """Two steps, a checkpoint, then a resume for two more: the learning rates logged are the uninterrupted
    schedule's (weights and optimizer state resuming exactly: tests/training/test_resume.py)."""
    _run(compose_cfg, tmp_path / "first", "trainer.max_steps=2")
    first = tmp_path / "first" / "runs" / "manual" / "checkpoints" / "last.ckpt"
    assert torch.load(first, weights_only=True)["lr_schedulers"][0]["last_epoch"] == 2  # saved with the optimizer
    resumed = _run(compose_cfg, tmp_path / "resumed", "trainer.max_steps=4", f"ckpt_path={first}")
    # logged: the rate each update used, the first two restored from the checkpoint's history
    assert [row["optim/lr"] for row in resumed["train_history"]] == pytest.approx([0.005, 0.01, 0.01, 0.0055])
    last = torch.load(tmp_path / "resumed" / "runs" / "manual" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["lr_schedulers"][0]["last_epoch"] == 4
