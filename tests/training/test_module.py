"""The training module's maths on one fixed rollout (as test_reference_grpo.py does), and one in-process `train()`
smoke per algorithm option (conf/algorithm/*.yaml), so each option still runs end to end.

The fixed rollout: the tiny model samples 2 prompts x 4 replies once, scored by support.ParityTask (mixed rewards on
a random model) through the module's own sampling and scoring (sampling_rounds.sample_and_score), its replies then
cut to unequal lengths; the high-entropy planner marks ~30% of the tokens. Every maths test reuses it; a test that
steps an optimizer works on a copy of the policy."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from support import CONF_DIR, TINY_RUN, ParityTask, composer

from hicra.config.instantiate import build
from hicra.models.reference import build_reference
from hicra.training.module import PolicyGradientModule
from hicra.training.run import train
from hicra.training.sampling_rounds import sample_and_score
from hicra.training.step_metrics import rollout_metrics

PARITY = ["task._target_=support.ParityTask", "score_truncated=true",  # mixed rewards on a random model,
          "format_reward=0.5"]  # and spread within groups: the default (correctness alone) leaves some uniform
PROMPTS = ["What is 1 + 2?", "What is 3 + 4?"]
FORMAT_REWARD = 0.5


def _compose(*overrides: str):
    from hydra.core.global_hydra import GlobalHydra

    try:
        return composer("train")(*TINY_RUN, *PARITY, *overrides)
    finally:
        GlobalHydra.instance().clear()


def _module(cfg, policy, tokenizer, sampler, detector, task=None, **kwargs) -> PolicyGradientModule:
    return PolicyGradientModule(policy, tokenizer, build(cfg.algorithm), detector, task=task, sampler=sampler,
                                optimizer_factory=None, micro_batch_size=3, score_truncated=True, **kwargs)


class Fixed:
    """One sampled and scored rollout, the sampling policy's log-probs and entropies on it, and its planning mask."""

    def __init__(self):
        self.cfg = _compose("algorithm=grpo", "planner=high_entropy", "seed=3")
        bundle = build(self.cfg.model)
        self.policy, self.tokenizer = bundle.model, bundle.tokenizer
        self.sampler, self.task = build(self.cfg.rollout), ParityTask()
        self.detector = build(self.cfg.planner, tokenizer=self.tokenizer)
        self.examples = self.task.train_examples()[1:4:2]  # the examples behind PROMPTS
        assert [ex.question for ex in self.examples] == PROMPTS
        module = self.module(self.cfg, format_reward=FORMAT_REWARD, sampling_seed=3)
        self.scored = sample_and_score(module, PROMPTS, self.examples)
        # A random model never samples EOS: cut the replies as if it came at different places, so padding is exercised
        full = self.scored.rollout
        lengths = torch.tensor([24, 5, 17, 1, 24, 9, 12, 3])  # (B,)
        assert full.response_ids.shape[1] == 24
        self.rollout = dataclasses.replace(full, response_mask=torch.arange(24) < lengths[:, None],
                                           truncated=lengths == 24)
        self.old_logprobs, self.entropy = module._scoring_pass(self.policy, self.rollout, with_entropy=True)  # (B,T)
        self.planning = self.detector.mask(self.rollout.response_ids, self.rollout.response_mask, self.entropy,
                                           correctness=self.scored.correctness)  # (B,T)

    def module(self, cfg, policy=None, **kwargs) -> PolicyGradientModule:
        return _module(cfg, policy or self.policy, self.tokenizer, self.sampler, self.detector, task=self.task,
                       **kwargs)

    def update(self, module, token_advantages, **per_token):
        """One backward pass over the rollout: (the loss/policy metrics, the flat gradient)."""
        module.policy.zero_grad(set_to_none=True)
        metrics = module._accumulate_gradients(self.rollout, {"token_advantages": token_advantages, **per_token})
        grad = torch.cat([p.grad.flatten() for p in module.policy.parameters() if p.grad is not None])
        return metrics, grad

    def metrics(self, algorithm, rewards):
        """What the step logs about the rollout and its credit (train/*, hierarchy/*) under `algorithm`."""
        token_advantages = algorithm.token_advantages(algorithm.advantages(rewards), self.planning)
        s = self.scored
        return token_advantages, rollout_metrics(self.rollout, rewards, s.correctness, s.in_form, self.planning,
                                                 token_advantages, algorithm.group_size)


@pytest.fixture(scope="module")
def fixed() -> Fixed:
    return Fixed()


def _algorithm(*overrides: str):
    return build(_compose(*overrides).algorithm)


def test_the_fixed_rollout_carries_signal(fixed):
    """The preconditions every maths test below relies on: mixed rewards in both groups, a planning mask of ~30%."""
    rewards = fixed.scored.rewards.view(-1, 4)
    assert bool((rewards.std(dim=1) > 0).all())  # non-zero advantages in every group
    frac = float((fixed.planning & fixed.rollout.response_mask).sum() / fixed.rollout.response_mask.sum())
    assert 0.25 < frac < 0.45  # rho = 0.3 per reply, rounded up
    assert not bool((fixed.planning & ~fixed.rollout.response_mask).any())  # never on padding


def test_hicra_with_alpha_zero_is_exactly_grpo(fixed):
    """Same token advantages, loss and gradient, bit for bit, with planning tokens present."""
    grpo, hicra0 = _algorithm("algorithm=grpo"), _algorithm("algorithm=hicra", "algorithm.alpha=0.0")
    adv_g, metrics_g = fixed.metrics(grpo, fixed.scored.rewards)
    adv_h, metrics_h = fixed.metrics(hicra0, fixed.scored.rewards)
    assert torch.equal(adv_g, adv_h) and metrics_g == metrics_h
    loss_g, grad_g = fixed.update(fixed.module(fixed.cfg), adv_g)
    loss_h, grad_h = fixed.update(fixed.module(_compose("algorithm=hicra", "algorithm.alpha=0.0")), adv_h)
    assert loss_g == loss_h and torch.equal(grad_g, grad_h)
    assert grad_g.abs().sum() > 0


def test_hicra_reweights_planning_tokens_only(fixed):
    """A + alpha|A| on planning tokens, A on execution tokens; the policy loss moves with it."""
    grpo, hicra = _algorithm("algorithm=grpo"), _algorithm("algorithm=hicra")
    adv_g, g = fixed.metrics(grpo, fixed.scored.rewards)
    adv_h, h = fixed.metrics(hicra, fixed.scored.rewards)
    plan, execution = fixed.planning & fixed.rollout.response_mask, ~fixed.planning & fixed.rollout.response_mask
    assert torch.equal(adv_h[execution], adv_g[execution])
    torch.testing.assert_close(adv_h[plan], adv_g[plan] + 0.2 * adv_g[plan].abs())
    assert h["hierarchy/planning_token_frac"] == g["hierarchy/planning_token_frac"] > 0.25
    assert h["hierarchy/adv_execution_mean"] == pytest.approx(g["hierarchy/adv_execution_mean"], abs=1e-6)
    assert h["hierarchy/adv_planning_mean"] > g["hierarchy/adv_planning_mean"]  # A + 0.2|A| > A where A != 0
    loss_g, _ = fixed.update(fixed.module(fixed.cfg), adv_g)
    loss_h, _ = fixed.update(fixed.module(_compose("algorithm=hicra")), adv_h)
    assert abs(loss_h["loss/policy"] - loss_g["loss/policy"]) > 1e-6


def test_format_reward_adds_to_the_reward_but_never_to_accuracy(fixed):
    """The same rollout sampled again with format_reward=0 (same sampling seed): the reward differs by exactly the
    format term on replies in form, correctness and accuracy not at all."""
    plain = sample_and_score(fixed.module(fixed.cfg, format_reward=0.0, sampling_seed=3), PROMPTS, fixed.examples)
    shaped = fixed.scored
    assert torch.equal(plain.rollout.response_ids, shaped.rollout.response_ids)  # same rollout
    assert 0 < float(shaped.in_form.float().mean()) < 1  # the stand-in form is met by some replies, not all
    assert torch.equal(plain.rewards, plain.correctness)
    torch.testing.assert_close(shaped.rewards, shaped.correctness + FORMAT_REWARD * shaped.in_form.float())
    grpo = _algorithm("algorithm=grpo")
    _, p = fixed.metrics(grpo, plain.rewards)
    _, s = fixed.metrics(grpo, shaped.rewards)
    assert s["train/accuracy"] == p["train/accuracy"] == p["train/correctness_mean"]
    assert s["train/reward_mean"] == pytest.approx(p["train/reward_mean"] + FORMAT_REWARD * p["train/boxed_frac"])


def test_the_first_update_is_on_policy_and_a_step_changes_the_policy(fixed):
    """Old log-probs from the sampling pass: every ratio is 1, nothing clipped; one AdamW step moves the weights."""
    grpo = _algorithm("algorithm=grpo")
    advantages, _ = fixed.metrics(grpo, fixed.scored.rewards)
    policy = copy.deepcopy(fixed.policy)
    before = [p.detach().clone() for p in policy.parameters()]
    module = fixed.module(fixed.cfg, policy=policy)
    metrics, _ = fixed.update(module, advantages, old_logprobs=fixed.old_logprobs)
    assert metrics["policy/ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["policy/clip_frac_low"] == 0.0 and metrics["policy/clip_frac_high"] == 0.0
    build(fixed.cfg.optim)(policy.parameters()).step()
    assert any(not torch.equal(a, b) for a, b in zip(policy.parameters(), before))


def _stepped_policy(fixed, advantages):
    """A copy of the policy after one AdamW step on the fixed rollout: the second update's policy."""
    policy = copy.deepcopy(fixed.policy)
    fixed.update(fixed.module(fixed.cfg, policy=policy), advantages)
    build(fixed.cfg.optim)(policy.parameters()).step()
    return policy


def test_several_updates_per_rollout_use_sampling_policy_logprobs(fixed):
    """The second update of one rollout compares the moved policy with the sampling policy: its ratio departs from 1
    (with the moved policy's own log-probs as 'old' it would stay at exactly 1)."""
    grpo = _algorithm("algorithm=grpo", "algorithm.num_iterations=2")
    advantages, _ = fixed.metrics(grpo, fixed.scored.rewards)
    second = fixed.module(fixed.cfg, policy=_stepped_policy(fixed, advantages))
    metrics, _ = fixed.update(second, advantages, old_logprobs=fixed.old_logprobs)
    assert metrics["policy/ratio_max"] > 1.0 + 1e-6
    assert abs(metrics["policy/ratio_mean"] - 1.0) > 1e-7
    moved, _ = second._scoring_pass(second.policy, fixed.rollout, with_entropy=False)
    stale, _ = fixed.update(second, advantages, old_logprobs=moved)
    assert stale["policy/ratio_max"] == pytest.approx(1.0, abs=1e-5)


def test_kl_to_a_frozen_reference_is_built_only_when_beta_is_positive(fixed):
    """No reference (and loss/kl = 0) at beta = 0; beta > 0 without one is refused; with one, the KL starts at 0 and
    is small and positive once the policy has moved."""
    assert build_reference(fixed.policy, needed=_algorithm("algorithm=grpo").needs_reference) is None
    no_kl = _algorithm("algorithm=grpo")
    advantages, _ = fixed.metrics(no_kl, fixed.scored.rewards)
    metrics, _ = fixed.update(fixed.module(fixed.cfg), advantages)
    assert metrics["loss/kl"] == 0.0 and metrics["loss/total"] == metrics["loss/policy"]

    kl_cfg = _compose("algorithm=grpo", "algorithm.kl_coef=0.05")
    assert build(kl_cfg.algorithm).needs_reference
    with pytest.raises(ValueError, match="kl_coef=0.05 > 0 needs a frozen reference model"):
        fixed.module(kl_cfg)
    reference = build_reference(fixed.policy, needed=True)
    assert reference is not fixed.policy and not any(p.requires_grad for p in reference.parameters())
    for policy, low, high in ((fixed.policy, 0.0, 1e-9), (_stepped_policy(fixed, advantages), 1e-9, 1e-2)):
        module = fixed.module(kl_cfg, policy=policy, reference=reference)
        ref_logprobs = module._ref_logprobs(fixed.rollout)
        metrics, _ = fixed.update(module, advantages, old_logprobs=fixed.old_logprobs, ref_logprobs=ref_logprobs)
        assert low <= metrics["loss/kl"] < high
        assert metrics["loss/total"] == pytest.approx(metrics["loss/policy"] + 0.05 * metrics["loss/kl"])


def test_gradient_does_not_depend_on_micro_batch_size(fixed):
    """Variable-length responses split 8/3/1 per micro-batch: the accumulated gradient is the same."""
    hicra = _algorithm("algorithm=hicra")
    advantages, _ = fixed.metrics(hicra, fixed.scored.rewards)
    module = fixed.module(_compose("algorithm=hicra"))
    grads = []
    for size in (8, 3, 1):
        module.micro_batch_size = size
        grads.append(fixed.update(module, advantages)[1])
    assert fixed.rollout.response_mask.sum(1).unique().numel() > 1  # unequal lengths: padding is exercised
    # fp32 sums in another order: ~1e-7 apart; a wrong normaliser or a dropped row would be off by far more than
    # the tolerance, which is 1% of the largest gradient at most
    assert grads[0].abs().max() > 1e-4
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grads[2], grads[0], rtol=1e-4, atol=1e-6)


# --- one train() smoke per algorithm option --------------------------------------------------------------------

ALGORITHMS = sorted(p.stem for p in (CONF_DIR / "algorithm").glob("*.yaml"))
FAST = {"grpo", "hicra"}  # in make test-fast; the other options' smokes are `slow` (make test)
# What an option needs to run as meant (a planner that marks planning tokens; GSPO's clipping acts from 2 updates).
SMOKE_OVERRIDES = {"hicra_authors_rule": ["planner=authors_rule"], "gspo": ["algorithm.num_iterations=2"]}
PLANNER = ["planner=high_entropy"]  # marks tokens even on a random model (the default grams may mark none)
TWO_STEPS = {"gspo", "grpo_kl_reward"}  # 2 updates of one rollout; a KL to a reference the policy has left


def _check_option(option: str, summary: dict, format_reward: float) -> None:
    """What only this option's run shows; every option gets the common checks in the test."""
    rows = summary["train_history"]
    task_reward = [r["train/correctness_mean"] + format_reward * r["train/boxed_frac"] for r in rows]
    if option == "grpo":  # the weights saved at the end are not the initial ones
        from transformers import AutoModelForCausalLM

        initial = build(_compose("model.seed=0").model).model.parameters()
        final = AutoModelForCausalLM.from_pretrained(f"{summary['run_dir']}/final_model").parameters()
        assert any(not torch.equal(a, b) for a, b in zip(final, initial))
        assert rows[0]["policy/ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    if option == "gspo":  # 2 optimizer steps on 1 rollout batch; the second sees the moved policy
        assert len(rows) == 1 and rows[0]["policy/ratio_max"] > 1.0
    if option == "grpo_kl_reward":  # a reference was built: equal to the policy at step 0, apart from it at step 1
        assert rows[0]["loss/kl"] == pytest.approx(0.0, abs=1e-9) and rows[1]["loss/kl"] > 1e-9
        assert rows[0]["train/reward_mean"] == pytest.approx(task_reward[0], abs=1e-7)
        assert abs(rows[1]["train/reward_mean"] - task_reward[1]) > 1e-9  # the KL penalty in the reward
    else:  # no reference model: no KL (kl_coef is 0 in every option), the task's reward as it is
        assert all(r["loss/kl"] == 0.0 for r in rows)
        assert [r["train/reward_mean"] for r in rows] == pytest.approx(task_reward, abs=1e-6)
    if option == "entropy_reg":
        assert all(r["loss/entropy_bonus"] > 0 for r in rows)
    else:
        assert all(r["loss/entropy_bonus"] == 0.0 for r in rows)
    if option in {"hicra", "rloo_hicra", "reinforce_pp_hicra"}:  # the planner's tokens get their own credit
        assert all(r["hierarchy/planning_token_frac"] > 0.25 for r in rows)
        assert any(r["hierarchy/adv_planning_mean"] != r["hierarchy/adv_execution_mean"] for r in rows)


@pytest.mark.parametrize("option", [o if o in FAST else pytest.param(o, marks=pytest.mark.slow) for o in ALGORITHMS])
def test_each_algorithm_trains_end_to_end(option, tmp_path):
    """`train(cfg)` in-process on the tiny model, no MLflow: every option updates with finite losses."""
    overrides = SMOKE_OVERRIDES.get(option, PLANNER)
    final = ["save_final_model=true", "model.seed=0"] if option == "grpo" else []
    cfg = _compose(f"algorithm={option}", *overrides, *final, f"trainer.max_steps={2 if option in TWO_STEPS else 1}",
                   "seed=3", "logger=none", f"paths.output_dir={tmp_path}")
    summary = train(cfg, choices={"algorithm": option})
    rows = summary["train_history"]
    assert summary["steps"] == cfg.trainer.max_steps and rows and summary["val_history"]
    assert all(math.isfinite(r["loss/total"]) for r in rows)
    assert any(r["train/reward_std"] > 0 for r in rows)  # mixed rewards: the update is not zero
    assert all(r["optim/grad_norm"] > 0 for r in rows)
    _check_option(option, summary, cfg.format_reward)
