"""Faults during training: non-finite updates are skipped and counted, a failing reward costs one sample,
truncated responses can be dropped from the loss, and out-of-memory names the setting to lower."""

from __future__ import annotations

import math

import pytest
import torch
from support import TINY_RUN

from hicra.errors import TrainingError
from hicra.training.module import PolicyGradientModule
from hicra.training.run import train

PARITY = ["task._target_=support.ParityTask", "score_truncated=true"]


def _run(compose_cfg, tmp_path, *overrides):
    cfg = compose_cfg(*TINY_RUN, *PARITY, "logger=none", f"paths.output_dir={tmp_path}", "algorithm=grpo",
                      "seed=3", *overrides)
    return train(cfg, choices={"algorithm": "grpo"})


def _poison_gradients(monkeypatch, calls_to_poison: set[int]):
    """Make the listed calls of `_accumulate_gradients` (0-based) leave a NaN in one gradient."""
    original = PolicyGradientModule._accumulate_gradients
    count = {"n": 0}

    def poisoned(self, *args, **kwargs):
        metrics = original(self, *args, **kwargs)
        if count["n"] in calls_to_poison:
            next(p for p in self.policy.parameters() if p.grad is not None).grad.view(-1)[0] = float("nan")
        count["n"] += 1
        return metrics

    monkeypatch.setattr(PolicyGradientModule, "_accumulate_gradients", poisoned)


def _final_params(summary):
    from transformers import AutoModelForCausalLM

    return list(AutoModelForCausalLM.from_pretrained(f"{summary['run_dir']}/final_model").parameters())


def test_a_non_finite_update_is_skipped_without_touching_the_weights(compose_cfg, tmp_path, monkeypatch):
    from hydra.utils import instantiate

    initial = list(instantiate(compose_cfg(*TINY_RUN, "seed=3").model).model.parameters())  # init depends on seed
    _poison_gradients(monkeypatch, {0})
    summary = _run(compose_cfg, tmp_path, "trainer.max_steps=1", "save_final_model=true")
    assert summary["steps"] == 1
    assert summary["train_history"][0]["faults/skipped_updates"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(_final_params(summary), initial))


def test_training_continues_after_a_skipped_update(compose_cfg, tmp_path, monkeypatch):
    _poison_gradients(monkeypatch, {0})
    summary = _run(compose_cfg, tmp_path, "trainer.max_steps=3")
    assert summary["steps"] == 3
    assert [row["faults/skipped_updates"] for row in summary["train_history"]] == [1.0, 1.0, 1.0]
    assert all(row["optim/grad_norm"] > 0 for row in summary["train_history"][1:])


def test_too_many_skips_in_a_row_stop_with_a_clear_message(compose_cfg, tmp_path, monkeypatch):
    _poison_gradients(monkeypatch, {0, 1, 2, 3})
    with pytest.raises(TrainingError, match=r"2 updates in a row .* faults.max_skipped_updates_in_a_row \(now 2\)"):
        _run(compose_cfg, tmp_path, "trainer.max_steps=4", "faults.max_skipped_updates_in_a_row=2")


def test_non_finite_weights_after_a_step_stop_the_run_naming_the_learning_rate(compose_cfg, tmp_path, monkeypatch):
    """optim.lr=inf is refused at startup (tests/cli/test_bad_input.py); an infinite step size reaching AdamW anyway
    (as an overflow would) leaves finite gradients and NaN weights, which the gradient guard cannot see."""
    def infinite_step(self):
        return torch.optim.AdamW([p for p in self.policy.parameters() if p.requires_grad], lr=math.inf)

    monkeypatch.setattr(PolicyGradientModule, "configure_optimizers", infinite_step)
    with pytest.raises(TrainingError, match=r"^optimizer update 1 made weights non-finite .* optim.lr \(now inf\)"):
        _run(compose_cfg, tmp_path, "trainer.max_steps=2")


def test_a_failing_reward_scores_zero_and_is_counted(compose_cfg, tmp_path):
    summary = _run(compose_cfg, tmp_path, "task._target_=support.FlakyTask", "score_truncated=true", "trainer.max_steps=2")
    assert summary["steps"] == 2
    errors = [row.get("faults/reward_errors", 0.0) for row in summary["train_history"]]  # logged once non-zero
    assert errors[-1] > 0 and errors == sorted(errors)  # cumulative over the run
    assert all(0.0 <= row["train/reward_mean"] <= 1.0 for row in summary["train_history"])


@pytest.mark.slow  # a whole training run or a fresh interpreter (make test-fast leaves it out)
def test_truncated_responses_can_be_dropped_from_the_loss(compose_cfg, tmp_path):
    # A random tiny model almost never emits EOS within 8 tokens: every response is truncated.
    common = ["trainer.max_steps=1", "rollout.max_new_tokens=8"]
    kept = _run(compose_cfg, tmp_path / "kept", *common)["train_history"][0]
    dropped = _run(compose_cfg, tmp_path / "dropped", *common, "algorithm.exclude_truncated=true")["train_history"][0]
    assert kept["train/truncated_frac"] == 1.0 == dropped["train/truncated_frac"]
    assert kept["optim/grad_norm"] > 0
    assert dropped["optim/grad_norm"] == 0.0 and dropped["loss/policy"] == 0.0


def test_out_of_memory_in_generation_names_the_settings_to_lower(compose_cfg, tmp_path, monkeypatch):
    """The first generation is the step-0 validation: its message names the validation batch."""
    from hicra.rollout.hf import HFSampler

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(HFSampler, "generate", oom)
    with pytest.raises(TrainingError, match="out of GPU memory .* lower val_batch_size or rollout.max_new_tokens"):
        _run(compose_cfg, tmp_path, "trainer.max_steps=1")
