"""Algorithm: validation, loss composition, and HICRA(alpha=0) == GRPO."""

import dataclasses
import functools
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hicra.algorithms import (
    Algorithm,
    aggregate,
    clipped_surrogate,
    group_advantages,
    hicra_token_advantages,
    identity_token_advantages,
    policy_loss,
)

GRPO_YAML = Path(__file__).parents[2] / "conf" / "algorithm" / "grpo.yaml"


def _algorithm(token_fn=identity_token_advantages, **kwargs):
    group_size = kwargs.pop("group_size", 4)
    adv_fn = functools.partial(group_advantages, group_size=group_size, scale="group", eps=1e-6)
    return Algorithm(advantage_fn=adv_fn, token_advantage_fn=token_fn, group_size=group_size, **kwargs)


def _rollout(seed=0):
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    lengths = torch.tensor([5, 2, 6, 3, 1, 6, 4, 2])
    mask = torch.arange(6)[None, :] < lengths[:, None]  # (B=8, T=6)
    planning = (torch.rand(8, 6, generator=gen) > 0.6) & mask
    old = -torch.rand(8, 6, generator=gen) * 2
    logprobs = old + 0.3 * torch.randn(8, 6, generator=gen)
    return rewards, mask, planning, old, logprobs


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"group_size": 1}, "group_size"),
        ({"clip_low": 0.0}, "clip_low"),
        ({"clip_high": 1.0}, "clip_high"),
        ({"kl_coef": -0.1}, "kl_coef"),
        ({"entropy_coef": -1.0}, "entropy_coef"),
        ({"num_iterations": 0}, "num_iterations"),
        ({"aggregation": "mean"}, "aggregation.*token_mean"),
        ({"kl_estimator": "k9"}, "kl_estimator.*k3"),
        ({"norm_length": 0}, "norm_length"),
    ],
)
def test_validation_errors(kwargs, name):
    with pytest.raises(ValueError, match=name):
        _algorithm(**kwargs)


def test_mis_bound_functions_fail_at_construction():
    adv_fn = functools.partial(group_advantages, group_size=4)
    with pytest.raises(ValueError, match="group_size=4.*group_size=8"):
        Algorithm(advantage_fn=adv_fn, token_advantage_fn=identity_token_advantages, group_size=8)
    with pytest.raises(ValueError, match="alpha"):
        _algorithm(token_fn=functools.partial(hicra_token_advantages, alpha=1.5))
    with pytest.raises(ValueError, match="scale"):
        Algorithm(
            advantage_fn=functools.partial(group_advantages, group_size=8, scale="std"),
            token_advantage_fn=identity_token_advantages,
        )


def test_frozen_and_properties():
    alg = _algorithm()
    with pytest.raises(dataclasses.FrozenInstanceError):
        alg.kl_coef = 1.0
    assert not alg.needs_reference and not alg.needs_entropy_grad
    alg = _algorithm(kl_coef=0.1, entropy_coef=0.01)
    assert alg.needs_reference and alg.needs_entropy_grad


def test_advantages_and_token_advantages():
    rewards, _mask, planning, *_ = _rollout()
    alg = _algorithm(token_fn=functools.partial(hicra_token_advantages, alpha=0.2))
    adv = alg.advantages(rewards)
    assert torch.equal(adv, group_advantages(rewards, 4))
    tok = alg.token_advantages(adv, planning)
    assert tok.shape == (8, 6)
    assert torch.equal(tok[~planning], adv[:, None].expand(8, 6)[~planning])


def test_metric_keys_and_detached():
    rewards, mask, planning, old, logprobs = _rollout()
    alg = _algorithm()
    tok = alg.token_advantages(alg.advantages(rewards), planning)
    loss, metrics = alg.loss(logprobs.requires_grad_(True), old, tok, mask)
    assert set(metrics) == {
        "loss/policy", "loss/kl", "loss/entropy_bonus", "loss/total",
        "policy/clip_frac_low", "policy/clip_frac_high", "policy/approx_kl", "policy/ratio_mean", "policy/ratio_max",
    }  # fmt: skip
    assert loss.requires_grad and all(not v.requires_grad for v in metrics.values())
    assert torch.equal(metrics["loss/total"], loss.detach())


def test_kl_zero_ignores_reference():
    rewards, mask, planning, old, logprobs = _rollout()
    alg = _algorithm(kl_coef=0.0)
    tok = alg.token_advantages(alg.advantages(rewards), planning)
    with_ref, m = alg.loss(logprobs, old, tok, mask, ref_logprobs=logprobs - 1.0)
    without_ref, _ = alg.loss(logprobs, old, tok, mask)
    assert m["loss/kl"].item() == 0.0
    assert torch.equal(with_ref, without_ref)


def test_kl_term_added_with_same_aggregation():
    rewards, mask, planning, old, logprobs = _rollout()
    alg = _algorithm(kl_coef=0.5, kl_estimator="k1", aggregation="seq_mean_token_mean")
    tok = alg.token_advantages(alg.advantages(rewards), planning)
    # ref = logprobs - 0.25 on every token -> k1 = 0.25 everywhere -> any aggregation gives 0.25
    loss, m = alg.loss(logprobs, old, tok, mask, ref_logprobs=logprobs - 0.25)
    assert m["loss/kl"].item() == pytest.approx(0.25)
    assert loss.item() == pytest.approx(m["loss/policy"].item() + 0.5 * 0.25, abs=1e-6)
    with pytest.raises(ValueError, match="ref_logprobs"):
        alg.loss(logprobs, old, tok, mask)


def test_entropy_bonus_lowers_loss():
    rewards, mask, planning, old, logprobs = _rollout()
    alg = _algorithm(entropy_coef=0.1)
    tok = alg.token_advantages(alg.advantages(rewards), planning)
    low, _ = alg.loss(logprobs, old, tok, mask, entropy=torch.full((8, 6), 0.5))
    high, m = alg.loss(logprobs, old, tok, mask, entropy=torch.full((8, 6), 2.0))
    assert high < low
    assert m["loss/entropy_bonus"].item() == pytest.approx(2.0)
    assert high.item() == pytest.approx(m["loss/policy"].item() - 0.1 * 2.0, abs=1e-6)
    with pytest.raises(ValueError, match="entropy"):
        alg.loss(logprobs, old, tok, mask)


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_hicra_alpha_zero_equals_grpo_exactly(aggregation):
    rewards, mask, planning, old, logprobs = _rollout()
    results = []
    for token_fn in (identity_token_advantages, functools.partial(hicra_token_advantages, alpha=0.0)):
        alg = _algorithm(token_fn=token_fn, aggregation=aggregation, kl_coef=0.05, entropy_coef=0.01)
        lp = logprobs.clone().requires_grad_(True)
        tok = alg.token_advantages(alg.advantages(rewards), planning)
        loss, metrics = alg.loss(lp, old, tok, mask, ref_logprobs=old, entropy=-lp)
        loss.backward()
        results.append((loss, lp.grad, metrics))
    (loss_g, grad_g, m_g), (loss_h, grad_h, m_h) = results
    assert torch.equal(loss_g, loss_h) and torch.equal(grad_g, grad_h)
    assert all(torch.equal(m_g[k], m_h[k]) for k in m_g)


def test_hicra_alpha_positive_changes_planning_gradients_only():
    rewards, mask, planning, old, logprobs = _rollout()
    grads = []
    for token_fn in (identity_token_advantages, functools.partial(hicra_token_advantages, alpha=0.2)):
        alg = _algorithm(token_fn=token_fn)
        lp = logprobs.clone().requires_grad_(True)
        alg.loss(lp, old, alg.token_advantages(alg.advantages(rewards), planning), mask)[0].backward()
        grads.append(lp.grad)
    assert torch.equal(grads[0][~planning], grads[1][~planning])
    assert not torch.equal(grads[0][planning], grads[1][planning])


# --- the policy objective is a config choice ------------------------------------------------------------------------


def reinforce(logprobs, old_logprobs, token_advantages, response_mask):
    """Plain REINFORCE, -A * log pi per token, no ratio and no clip: a PolicyLossFn the package does not ship."""
    per_token = -token_advantages.detach() * logprobs  # (B,T)
    return torch.where(response_mask.bool(), per_token, torch.zeros_like(per_token)), {}


def _from_config(policy_loss_fn=None):
    """conf/algorithm/grpo.yaml instantiated as Hydra does, with G=4 and optionally another policy_loss_fn node."""
    cfg = OmegaConf.load(GRPO_YAML)
    cfg.group_size = 4
    if policy_loss_fn is not None:
        cfg.policy_loss_fn = policy_loss_fn  # assignment replaces the node (no clip_* left bound)
    return instantiate(cfg)


def _loss_and_grad(alg, rollout):
    rewards, mask, planning, old, logprobs = rollout
    lp = logprobs.clone().requires_grad_(True)
    loss, metrics = alg.loss(lp, old, alg.token_advantages(alg.advantages(rewards), planning), mask)
    loss.backward()
    return loss, lp.grad, metrics


def test_the_shipped_objective_is_bit_identical_to_policy_loss():
    rewards, mask, planning, old, logprobs = rollout = _rollout()
    configured = _from_config()
    assert configured.policy_loss_fn.func is clipped_surrogate
    assert configured.policy_loss_fn.keywords == {"clip_low": 0.2, "clip_high": 0.28}  # from clip_low / clip_high
    loss, grad, metrics = _loss_and_grad(configured, rollout)
    lp = logprobs.clone().requires_grad_(True)
    tok = configured.token_advantages(configured.advantages(rewards), planning)
    expected, stats = policy_loss(lp, old, tok, mask, clip_low=0.2, clip_high=0.28)
    expected.backward()
    assert torch.equal(loss, expected) and torch.equal(grad, lp.grad)
    assert all(torch.equal(metrics[f"policy/{k}"], v) for k, v in stats.items())
    default = _loss_and_grad(_algorithm(), rollout)  # Algorithm built in Python, no policy_loss_fn given
    assert torch.equal(default[0], loss) and torch.equal(default[1], grad)


def test_another_objective_changes_the_loss_through_config_alone():
    rewards, mask, planning, _, logprobs = rollout = _rollout()
    clipped = _loss_and_grad(_from_config(), rollout)
    alg = _from_config({"_target_": f"{__name__}.reinforce", "_partial_": True})
    loss, grad, metrics = _loss_and_grad(alg, rollout)
    tok = alg.token_advantages(alg.advantages(rewards), planning)
    assert torch.equal(loss, aggregate(-tok * logprobs, mask, "token_mean"))
    assert torch.allclose(grad, torch.where(mask, -tok, 0.0) / mask.sum())  # d/dlogp of -A*logp, token mean
    assert not torch.equal(loss, clipped[0]) and not torch.equal(grad, clipped[1])
    assert "policy/clip_frac_low" not in metrics  # diagnostics are the objective's own


def test_policy_loss_fn_mis_bound_or_not_per_token_fails_at_construction():
    with pytest.raises(ValueError, match="clip_low=0.1 but Algorithm.clip_low=0.2"):
        _algorithm(policy_loss_fn=functools.partial(clipped_surrogate, clip_low=0.1, clip_high=0.28))
    with pytest.raises(ValueError, match="per-token loss"):
        _algorithm(policy_loss_fn=lambda lp, old, adv, mask: (lp.sum(), {}))
