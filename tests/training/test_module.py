"""The training loop in-process on the tiny model: configs choose, the module computes the same maths."""

from __future__ import annotations

import pytest
import torch
from support import TINY_RUN

from hicra.training.run import train

PARITY = ["task._target_=support.ParityTask", "score_truncated=true"]  # mixed rewards on a random model: non-zero advantages


def _run(compose_cfg, tmp_path, *overrides):
    cfg = compose_cfg(*TINY_RUN, *PARITY, "logger=none", f"paths.output_dir={tmp_path}", *overrides)
    choices = {"algorithm": cfg.algorithm.get("alpha") and "hicra" or "grpo"}
    return train(cfg, choices=choices)


def _losses(summary):
    return [(row["loss/policy"], row["hierarchy/adv_planning_mean"]) for row in summary["train_history"]]


def test_hicra_with_alpha_zero_is_exactly_grpo(compose_cfg, tmp_path):
    grpo = _run(compose_cfg, tmp_path / "g", "algorithm=grpo", "seed=3")
    hicra0 = _run(compose_cfg, tmp_path / "h", "algorithm=hicra", "algorithm.alpha=0.0", "seed=3")
    assert any(row["train/reward_std"] > 0 for row in grpo["train_history"])  # the test has signal
    assert _losses(grpo) == _losses(hicra0)
    assert [r["val/accuracy"] for r in grpo["val_history"]] == [r["val/accuracy"] for r in hicra0["val_history"]]


def test_hicra_reweights_planning_tokens_only(compose_cfg, tmp_path):
    overrides = ["seed=3", "planner=high_entropy"]  # high-entropy marks 20% of tokens even on a random model
    grpo = _run(compose_cfg, tmp_path / "g", "algorithm=grpo", *overrides)
    hicra = _run(compose_cfg, tmp_path / "h", "algorithm=hicra", *overrides)
    g, h = grpo["train_history"][0], hicra["train_history"][0]
    assert g["train/reward_mean"] == h["train/reward_mean"]  # same rollout: the first step samples identically
    assert h["hierarchy/planning_token_frac"] == pytest.approx(g["hierarchy/planning_token_frac"])
    assert g["hierarchy/planning_token_frac"] > 0.15
    assert h["hierarchy/adv_execution_mean"] == pytest.approx(g["hierarchy/adv_execution_mean"], abs=1e-6)
    assert h["hierarchy/adv_planning_mean"] > g["hierarchy/adv_planning_mean"]  # A + 0.2|A| >= A, strictly when A != 0
    assert h["loss/policy"] != g["loss/policy"]


def test_format_reward_adds_to_the_reward_but_never_to_accuracy(compose_cfg, tmp_path):
    plain = _run(compose_cfg, tmp_path / "p", "algorithm=grpo", "seed=3", "format_reward=0")["train_history"][0]
    shaped = _run(compose_cfg, tmp_path / "f", "algorithm=grpo", "seed=3", "format_reward=0.5")["train_history"][0]
    assert 0 < shaped["train/boxed_frac"] < 1  # the stand-in form is met by some replies, not all
    assert shaped["train/boxed_frac"] == plain["train/boxed_frac"]  # same first rollout
    assert shaped["train/accuracy"] == plain["train/accuracy"] == plain["train/correctness_mean"]
    assert shaped["train/reward_mean"] == pytest.approx(plain["train/reward_mean"] + 0.5 * plain["train/boxed_frac"])


def test_a_step_changes_the_policy_and_reports_on_policy_ratio(compose_cfg, tmp_path):
    from hydra.utils import instantiate

    cfg = compose_cfg(*TINY_RUN, "model.seed=0")
    before = [p.detach().clone() for p in instantiate(cfg.model).model.parameters()]
    summary = _run(compose_cfg, tmp_path, "algorithm=grpo", "seed=3", "save_final_model=true", "model.seed=0")
    row = summary["train_history"][0]
    assert row["policy/ratio_mean"] == pytest.approx(1.0, abs=1e-6)  # first update of a fresh rollout
    assert row["policy/clip_frac_low"] == 0.0 and row["policy/clip_frac_high"] == 0.0
    from transformers import AutoModelForCausalLM

    after = list(AutoModelForCausalLM.from_pretrained(f"{summary['run_dir']}/final_model").parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


def test_several_updates_per_rollout_use_sampling_policy_logprobs(compose_cfg, tmp_path):
    summary = _run(compose_cfg, tmp_path, "algorithm=grpo", "algorithm.num_iterations=2", "seed=3",
                   "trainer.max_steps=2")
    assert summary["steps"] == 2 and len(summary["train_history"]) == 1  # 1 rollout batch, 2 optimizer steps
    # Averaged over the two updates: the second sees a moved policy, so the ratio departs from 1.
    assert summary["train_history"][0]["policy/ratio_max"] > 1.0


def test_kl_to_a_frozen_reference_is_built_only_when_beta_is_positive(compose_cfg, tmp_path):
    summary = _run(compose_cfg, tmp_path, "algorithm=grpo", "algorithm.kl_coef=0.05", "algorithm.num_iterations=2",
                   "seed=3", "trainer.max_steps=2")
    row = summary["train_history"][0]
    assert row["loss/kl"] >= 0.0 and row["loss/kl"] < 1e-2  # the reference starts equal to the policy
    no_kl = _run(compose_cfg, tmp_path / "b", "algorithm=grpo", "seed=3")
    assert all(r["loss/kl"] == 0.0 for r in no_kl["train_history"])


def test_gradient_does_not_depend_on_micro_batch_size(compose_cfg):
    """Variable-length responses split 8/3/1 per micro-batch: the accumulated gradient is the same."""
    from hydra.utils import instantiate

    from hicra.config.instantiate import build
    from hicra.training.module import PolicyGradientModule

    cfg = compose_cfg(*TINY_RUN, "algorithm=hicra", "planner=high_entropy")
    bundle, algorithm, sampler = instantiate(cfg.model), build(cfg.algorithm), build(cfg.rollout)
    detector = build(cfg.planner, tokenizer=bundle.tokenizer)
    module = PolicyGradientModule(bundle.model, bundle.tokenizer, algorithm, detector, task=None, sampler=sampler,
                                  optimizer_factory=None)
    torch.manual_seed(0)
    rollout = sampler.generate(bundle.model, bundle.tokenizer, ["What is 1 + 1?", "Name three primes."], 4)
    lengths = torch.tensor([24, 5, 17, 1, 24, 9, 12, 3])  # as if EOS came at different places: padding exercised
    rollout.response_mask = torch.arange(rollout.response_ids.shape[1]) < lengths[:, None]
    rewards = torch.tensor([1.0, 0, 0, 1, 0, 1, 1, 1])
    _, entropy = module._scoring_pass(bundle.model, rollout, with_entropy=True)
    mask = detector.mask(rollout.response_ids, rollout.response_mask, entropy)
    per_token = {"token_advantages": algorithm.token_advantages(algorithm.advantages(rewards), mask)}
    grads = []
    for size in (8, 3, 1):
        module.micro_batch_size = size
        bundle.model.zero_grad(set_to_none=True)
        module._accumulate_gradients(rollout, per_token)
        grads.append(torch.cat([p.grad.flatten() for p in bundle.model.parameters() if p.grad is not None]))
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(grads[2], grads[0], rtol=1e-4, atol=1e-7)
