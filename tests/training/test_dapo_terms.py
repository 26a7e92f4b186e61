"""The overlong penalty and the sampler/trainer mismatch correction inside the training module: what the pure
functions compute reaches the update and the logged metrics."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from support import TINY_RUN

from hicra.errors import ConfigError


@pytest.fixture
def parts(compose_cfg):
    """The tiny policy, a module around it, one sampled rollout of 2 prompts x 4 and token advantages."""
    from hydra.utils import instantiate

    from hicra.config.instantiate import build
    from hicra.training.module import PolicyGradientModule

    def make(*overrides):
        cfg = compose_cfg(*TINY_RUN, "algorithm=grpo", *overrides)
        bundle, algorithm, sampler = instantiate(cfg.model), build(cfg.algorithm), build(cfg.rollout)
        detector = build(cfg.planner, tokenizer=bundle.tokenizer)
        module = PolicyGradientModule(bundle.model, bundle.tokenizer, algorithm, detector, task=None,
                                      sampler=sampler, optimizer_factory=None, micro_batch_size=3)
        torch.manual_seed(0)
        rollout = sampler.generate(bundle.model, bundle.tokenizer, ["What is 1 + 1?", "Name three primes."], 4)
        rewards = torch.tensor([1.0, 0, 0, 1, 0, 1, 1, 1])
        no_plan = torch.zeros_like(rollout.response_mask)
        token_adv = algorithm.token_advantages(algorithm.advantages(rewards), no_plan)
        return bundle.model, module, rollout, token_adv
    return make


def _grads(model, module, rollout, per_token):
    model.zero_grad(set_to_none=True)
    metrics = module._accumulate_gradients(rollout, per_token)
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]), metrics


def test_sequence_mask_drops_exactly_the_responses_the_sampler_disagrees_on(parts):
    """Row 0's sampler log-probs lowered by log 10 over its tokens: its sequence ratio is >= 10 > 3, so its loss goes;
    the gradient equals the uncorrected one with row 0's advantages zeroed (same normaliser). Other rows agree with
    the trainer, their weight is 1."""
    model, module, rollout, token_adv = parts("algorithm.sampler_correction=sequence_mask")
    trainer, _ = module._scoring_pass(model, rollout, with_entropy=False)  # (B,T) what the update pass computes
    sampler = trainer.clone()
    sampler[0] -= math.log(10.0) * rollout.response_mask[0]
    corrected, metrics = _grads(model, module, rollout, {"token_advantages": token_adv, "sampler_logprobs": sampler})
    dropped_adv = token_adv.clone()
    dropped_adv[0] = 0.0
    module.algorithm = dataclasses.replace(module.algorithm, sampler_correction="none")
    reference, _ = _grads(model, module, rollout, {"token_advantages": dropped_adv})
    assert corrected.abs().sum() > 0
    torch.testing.assert_close(corrected, reference, rtol=1e-4, atol=1e-7)
    row0 = float(rollout.response_mask[0].sum()) / float(rollout.response_mask.sum())
    assert metrics["mismatch/clipped_frac"] == pytest.approx(row0, abs=1e-6)
    assert metrics["mismatch/logprob_abs_diff"] == pytest.approx(math.log(10.0) * row0, rel=1e-3)


def test_token_truncate_is_exactly_neutral_when_the_sampler_agrees(parts):
    model, module, rollout, token_adv = parts("algorithm.sampler_correction=token_truncate")
    plain, _ = _grads(model, module, rollout, {"token_advantages": token_adv})
    # old = the update pass's own log-probs (on-policy): a sampler reporting those exact values changes nothing
    module.algorithm = dataclasses.replace(module.algorithm, sampler_correction="none")
    trainer, _ = module._scoring_pass(model, rollout, with_entropy=False)
    module.algorithm = dataclasses.replace(module.algorithm, sampler_correction="token_truncate")
    same, metrics = _grads(model, module, rollout, {"token_advantages": token_adv, "old_logprobs": trainer,
                                                     "sampler_logprobs": trainer})
    old_only, _ = _grads(model, module, rollout, {"token_advantages": token_adv, "old_logprobs": trainer})
    assert torch.equal(same, old_only)  # bit-identical gradients
    assert metrics["mismatch/logprob_abs_diff"] == 0.0 and metrics["mismatch/clipped_frac"] == 0.0
    torch.testing.assert_close(plain, old_only, rtol=1e-4, atol=1e-7)


def test_overlong_buffer_longer_than_the_budget_is_one_clear_error(parts):
    with pytest.raises(ConfigError, match=r"algorithm.overlong_buffer=500 is invalid; allowed: 0 \(off\) to "
                                          r"rollout.max_new_tokens="):
        parts("algorithm.overlong_buffer=500")


def test_a_training_step_logs_the_penalty_the_filter_and_the_mismatch(compose_cfg, tmp_path):
    """smoke: 24-token budget, a 24-token buffer, so every reply is penalised by (0 - |y|) / 24; the HF sampler in
    the trainer's precision reports its log-probs, which agree with the trainer's to float rounding."""
    from hicra.training.run import train

    cfg = compose_cfg(*TINY_RUN, "task._target_=support.ParityTask", "score_truncated=true", "logger=none",
                      f"paths.output_dir={tmp_path}", "algorithm=grpo", "algorithm.overlong_buffer=24",
                      "algorithm.overlong_penalty=0.5", "algorithm.exclude_truncated=true",
                      "algorithm.sampler_correction=token_truncate", "trainer.max_steps=1")
    row = train(cfg, choices={"algorithm": "grpo"})["train_history"][0]
    assert row["train/overlong_frac"] == 1.0
    assert row["train/overlong_penalty_mean"] == pytest.approx(-0.5 * row["train/response_length"] / 24, rel=1e-5)
    assert row["train/excluded_truncated_frac"] == row["train/truncated_frac"]
    assert 0.0 <= row["mismatch/logprob_abs_diff"] < 1e-4 and row["mismatch/clipped_frac"] == 0.0
