"""Truncated importance sampling for a sampler that is not the trained model: hand-computed weights, the loss they
make, exact neutrality when sampler and trainer agree, and padding that contributes nothing."""

import math
from functools import partial

import pytest
import torch

from hicra.algorithms import Algorithm, group_advantages, identity_token_advantages, sampler_correction_weights

MASK = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)


def _algorithm(mode, cap=3.0, aggregation="token_mean"):
    return Algorithm(partial(group_advantages, group_size=2), identity_token_advantages, group_size=2,
                     sampler_correction=mode, sampler_correction_cap=cap, aggregation=aggregation)


def test_token_truncate_by_hand():
    old = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, -1.0, 99.0]])  # 99: garbage on padding
    sampler = torch.tensor([[-1.0 - math.log(2), -1.0 + math.log(2), -1.0 - math.log(5)], [-1.0, -1.0, -50.0]])
    w, m = sampler_correction_weights(old, sampler, MASK, mode="token_truncate", cap=3.0)
    torch.testing.assert_close(w, torch.tensor([[2.0, 0.5, 3.0], [1.0, 1.0, 0.0]]))  # exp(log 5) = 5 -> cap 3
    torch.testing.assert_close(m["mismatch/clipped_frac"], torch.tensor(1 / 5))
    torch.testing.assert_close(m["mismatch/logprob_abs_diff"],
                               torch.tensor((2 * math.log(2) + math.log(5)) / 5))


def test_sequence_mask_by_hand():
    old = torch.zeros(2, 3)
    # row 0: sum d = log 2 + log 2 = log 4 > log 3: masked; row 1: sum d = log 2 - log 4 < log 3: kept
    sampler = torch.tensor([[-math.log(2), -math.log(2), 0.0], [-math.log(2), math.log(4), -7.0]])
    w, m = sampler_correction_weights(old, sampler, MASK, mode="sequence_mask", cap=3.0)
    assert w.tolist() == [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    torch.testing.assert_close(m["mismatch/clipped_frac"], torch.tensor(3 / 5))
    w, _ = sampler_correction_weights(old, sampler, MASK, mode="sequence_mask", cap=5.0)  # 4 <= 5: kept
    assert w.tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]


def test_none_weighs_every_token_one_and_still_measures():
    w, m = sampler_correction_weights(torch.zeros(2, 3), torch.full((2, 3), -0.5), MASK, mode="none")
    assert w.tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
    torch.testing.assert_close(m["mismatch/logprob_abs_diff"], torch.tensor(0.5))
    assert float(m["mismatch/clipped_frac"]) == 0.0


@pytest.mark.parametrize("kwargs, match", [({"mode": "tis"}, "'tis'"),
                                           ({"mode": "token_truncate", "cap": 0.5}, "cap=0.5")])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sampler_correction_weights(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1, dtype=torch.bool), **kwargs)
    with pytest.raises(ValueError, match="sampler_correction"):
        _algorithm(kwargs["mode"], kwargs.get("cap", 3.0))


def _loss_and_grad(alg, sampler_logprobs, logprobs, adv, mask):
    lp = logprobs.clone().requires_grad_(True)
    loss, metrics = alg.loss(lp, lp.detach(), adv, mask, sampler_logprobs=sampler_logprobs)  # on-policy: old = lp
    loss.backward()
    return loss, lp.grad, metrics


def test_perturbed_sampler_changes_the_loss_as_the_formula_says():
    """token_mean over 5 tokens, ratio 1, so per-token loss = -A; weights 2, 0.5, 3 (capped 5), 1, 1."""
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.7, 0.0]])
    adv = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]])
    shift = torch.tensor([[-math.log(2), math.log(2), -math.log(5)], [0.0, 0.0, 3.0]])  # padding shift ignored
    loss, grad, metrics = _loss_and_grad(_algorithm("token_truncate"), logprobs + shift, logprobs, adv, MASK)
    torch.testing.assert_close(loss, torch.tensor(-(2.0 + 0.5 + 3.0 - 1.0 - 1.0) / 5))
    torch.testing.assert_close(grad, torch.tensor([[-2.0, -0.5, -3.0], [1.0, 1.0, 0.0]]) / 5)
    torch.testing.assert_close(metrics["mismatch/clipped_frac"], torch.tensor(1 / 5))
    loss, grad, _ = _loss_and_grad(_algorithm("sequence_mask"), logprobs + shift, logprobs, adv, MASK)
    # d = -shift on response tokens: row 0 sums to log 2 - log 2 + log 5 = log 5 > log 3, masked; row 1: 0, kept
    torch.testing.assert_close(loss, torch.tensor((1.0 + 1.0) / 5))
    torch.testing.assert_close(grad, torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]) / 5)


@pytest.mark.parametrize("mode", ["token_truncate", "sequence_mask"])
@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_correction_is_exactly_neutral_when_sampler_and_trainer_agree(mode, aggregation):
    torch.manual_seed(0)
    logprobs, adv = -torch.rand(4, 6) * 3, torch.randn(4, 6)
    mask = torch.arange(6) < torch.tensor([6, 3, 1, 5])[:, None]
    # padding holds garbage in the sampler's log-probs: it must not matter either
    sampler = torch.where(mask, logprobs, torch.full_like(logprobs, 1e4))
    off_loss, off_grad, _ = _loss_and_grad(_algorithm("none", aggregation=aggregation), None, logprobs, adv, mask)
    on_loss, on_grad, metrics = _loss_and_grad(_algorithm(mode, aggregation=aggregation), sampler, logprobs, adv, mask)
    assert torch.equal(on_loss, off_loss) and torch.equal(on_grad, off_grad)  # bit-identical
    assert float(metrics["mismatch/logprob_abs_diff"]) == 0.0 and float(metrics["mismatch/clipped_frac"]) == 0.0


def test_none_leaves_the_loss_untouched_whatever_the_sampler_says():
    logprobs, adv = -torch.rand(2, 3), torch.ones(2, 3)
    off_loss, off_grad, _ = _loss_and_grad(_algorithm("none"), None, logprobs, adv, MASK)
    loss, grad, metrics = _loss_and_grad(_algorithm("none"), logprobs - 2.0, logprobs, adv, MASK)
    assert torch.equal(loss, off_loss) and torch.equal(grad, off_grad)
    torch.testing.assert_close(metrics["mismatch/logprob_abs_diff"], torch.tensor(2.0))


def test_a_token_the_sampler_did_not_score_counts_as_agreeing():
    """NaN (vLLM appended an EOS it stopped on without a log-prob): weight from d = 0, left out of the mean |d|."""
    old = torch.zeros(2, 3)
    sampler = torch.tensor([[-math.log(2), float("nan"), 0.0], [0.0, float("nan"), 0.0]])
    w, m = sampler_correction_weights(old, sampler, MASK, mode="token_truncate")
    assert w.tolist() == [[2.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
    torch.testing.assert_close(m["mismatch/logprob_abs_diff"], torch.tensor(math.log(2) / 3))
    w, _ = sampler_correction_weights(old, sampler, MASK, mode="sequence_mask")
    assert w.tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
