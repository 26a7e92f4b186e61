"""aggregate / policy_loss / kl_penalty: hand-computed cases, padding, GA invariance, REINFORCE limit, clipping."""

import math

import pytest
import torch

from hicra.algorithms import AGGREGATIONS, aggregate, aggregate_denominator, kl_penalty, policy_loss

# --- aggregate ---------------------------------------------------------------------------------------------------

VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0], [5.0, 5.0, 5.0]])  # (B=3, T=3)
MASK = torch.tensor([[True, True, True], [True, False, False], [False, False, False]])  # lengths 3, 1, 0


def test_aggregate_token_mean_hand():
    assert aggregate(VALUES, MASK, "token_mean").item() == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert aggregate(VALUES, MASK, "token_mean", total=8).item() == pytest.approx(10 / 8)


def test_aggregate_seq_mean_token_mean_hand():
    # per sequence 2 and 4; the empty sequence contributes 0 and is not counted
    assert aggregate(VALUES, MASK, "seq_mean_token_mean").item() == pytest.approx(3.0)
    assert aggregate(VALUES, MASK, "seq_mean_token_mean", total=4).item() == pytest.approx(6 / 4)


def test_aggregate_seq_mean_token_sum_norm_hand():
    # per-sequence sums 6 and 4, divided by T = 3, averaged over the 2 non-empty sequences
    assert aggregate(VALUES, MASK, "seq_mean_token_sum_norm").item() == pytest.approx((2 + 4 / 3) / 2)
    assert aggregate(VALUES, MASK, "seq_mean_token_sum_norm", norm_length=4).item() == pytest.approx(1.25)


def test_aggregate_denominator_hand():
    assert aggregate_denominator(MASK, "token_mean").item() == 4
    assert aggregate_denominator(MASK, "seq_mean_token_mean").item() == 2
    assert aggregate_denominator(MASK, "seq_mean_token_sum_norm").item() == 2


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_aggregate_ignores_garbage_and_int_mask(mode):
    garbage = VALUES.clone()
    garbage[~MASK] = float("nan")
    assert aggregate(garbage, MASK, mode) == aggregate(VALUES, MASK, mode)
    assert aggregate(VALUES, MASK.long(), mode) == aggregate(VALUES, MASK, mode)


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_aggregate_all_padding_is_zero(mode):
    assert aggregate(VALUES, torch.zeros_like(MASK), mode).item() == 0.0


def test_aggregate_errors():
    with pytest.raises(ValueError, match="token_mean.*seq_mean_token_mean.*seq_mean_token_sum_norm"):
        aggregate(VALUES, MASK, "sum")
    with pytest.raises(ValueError, match="norm_length"):
        aggregate(VALUES, MASK, "seq_mean_token_sum_norm", norm_length=0)


# --- policy_loss: hand case ----------------------------------------------------------------------------------------

# One sequence, 5 valid tokens + 1 padding. ratio r and advantage A per token:
#   t0 r=1.0 A= 2 -> -min(2, 2)        = -2
#   t1 r=1.5 A= 1 -> -min(1.5, 1.28)   = -1.28  clipped high, zero grad
#   t2 r=0.5 A=-1 -> -min(-0.5, -0.8)  =  0.8   clipped low, zero grad
#   t3 r=0.5 A= 1 -> -min(0.5, 0.8)    = -0.5   unclipped branch
#   t4 r=1.5 A=-1 -> -min(-1.5, -1.28) =  1.5   unclipped branch
#   t5 padding (r=3, A=5) -> ignored
RATIOS = [1.0, 1.5, 0.5, 0.5, 1.5, 3.0]
ADVS = torch.tensor([[2.0, 1.0, -1.0, 1.0, -1.0, 5.0]])
RESP = torch.tensor([[True, True, True, True, True, False]])
OLD = torch.tensor([[-1.0, -2.0, -0.5, -3.0, -1.5, -2.0]])


def _hand_logprobs():
    return (OLD + torch.tensor([[math.log(r) for r in RATIOS]])).requires_grad_(True)


def test_policy_loss_hand_value_and_metrics():
    loss, m = policy_loss(_hand_logprobs(), OLD, ADVS, RESP, clip_low=0.2, clip_high=0.28)
    assert loss.item() == pytest.approx((-2 - 1.28 + 0.8 - 0.5 + 1.5) / 5, abs=1e-6)  # -0.296
    assert m["clip_frac_low"].item() == pytest.approx(0.2)
    assert m["clip_frac_high"].item() == pytest.approx(0.2)
    assert m["ratio_mean"].item() == pytest.approx(1.0, abs=1e-6)
    assert m["ratio_max"].item() == pytest.approx(1.5, abs=1e-6)
    # k3 per token: (r-1) - ln r = 0, .094535, .193147, .193147, .094535
    assert m["approx_kl"].item() == pytest.approx(0.1150728, abs=1e-6)
    assert all(not v.requires_grad and v.dim() == 0 for v in m.values())


def test_policy_loss_hand_gradient():
    logprobs = _hand_logprobs()
    policy_loss(logprobs, OLD, ADVS, RESP)[0].backward()
    # d/dlogp of -r*A/5 on unclipped tokens; 0 on clipped tokens and padding
    expected = torch.tensor([[-2 / 5, 0.0, 0.0, -0.5 / 5, 1.5 / 5, 0.0]])
    assert torch.allclose(logprobs.grad, expected, atol=1e-6)


def test_ratio_outside_clip_with_matching_sign_gives_zero_grad():
    old = torch.zeros(2, 3)
    logprobs = torch.tensor([[0.7, 0.9, 2.0], [-0.7, -0.9, -2.0]], requires_grad=True)  # r > 1.28 / r < 0.8
    adv = torch.tensor([[1.0, 2.0, 0.5], [-1.0, -2.0, -0.5]])
    loss, m = policy_loss(logprobs, old, adv, torch.ones(2, 3, dtype=torch.bool))
    loss.backward()
    assert torch.equal(logprobs.grad, torch.zeros(2, 3))
    assert m["clip_frac_high"].item() == pytest.approx(0.5) and m["clip_frac_low"].item() == pytest.approx(0.5)


# --- policy_loss: invariants ---------------------------------------------------------------------------------------


def _batch(seed, b=8, t=7):
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=gen) * 3
    logprobs = old + 0.4 * torch.randn(b, t, generator=gen)  # off-policy: some tokens clipped
    adv = torch.randn(b, 1, generator=gen).expand(b, t).clone()
    lengths = torch.tensor([7, 1, 3, 0, 5, 2, 6, 4])[:b]  # variable, one empty sequence
    mask = torch.arange(t)[None, :] < lengths[:, None]  # (B,T)
    return logprobs, old, adv, mask


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_padding_contributes_nothing(mode):
    logprobs, old, adv, mask = _batch(0)
    lp1 = logprobs.clone().requires_grad_(True)
    loss1, m1 = policy_loss(lp1, old, adv, mask, aggregation=mode)
    loss1.backward()
    lp2 = logprobs.clone()
    lp2[~mask] = float("nan")  # garbage at padding must not leak into value or grad
    adv2, old2 = adv.clone(), old.clone()
    adv2[~mask], old2[~mask] = 1e6, float("inf")
    lp2.requires_grad_(True)
    loss2, m2 = policy_loss(lp2, old2, adv2, mask, aggregation=mode)
    loss2.backward()
    assert torch.equal(loss1, loss2)
    assert torch.equal(lp1.grad, lp2.grad)
    assert (lp2.grad[~mask] == 0).all()
    assert all(torch.equal(m1[k], m2[k]) for k in m1)


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean"])
def test_fully_padded_columns_do_not_change_loss(mode):
    logprobs, old, adv, mask = _batch(1)
    wide = [torch.cat([x, torch.zeros(8, 5, dtype=x.dtype)], dim=1) for x in (logprobs, old, adv, mask)]
    assert policy_loss(*wide, aggregation=mode)[0].item() == pytest.approx(
        policy_loss(logprobs, old, adv, mask, aggregation=mode)[0].item(), abs=1e-7
    )


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_micro_batches_with_total_sum_to_full_batch(mode):
    logprobs, old, adv, mask = _batch(2)
    full_lp = logprobs.clone().requires_grad_(True)
    full_loss, _ = policy_loss(full_lp, old, adv, mask, aggregation=mode)
    full_loss.backward()

    total = aggregate_denominator(mask, mode)
    micro_lp = logprobs.clone().requires_grad_(True)
    summed = torch.zeros(())
    for rows in torch.arange(8).split(2):  # gradient accumulation over 4 micro-batches
        loss, _ = policy_loss(micro_lp[rows], old[rows], adv[rows], mask[rows], aggregation=mode, total=total)
        loss.backward()
        summed = summed + loss.detach()
    assert summed.item() == pytest.approx(full_loss.item(), abs=1e-6)
    assert torch.allclose(micro_lp.grad, full_lp.grad, atol=1e-7)


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_on_policy_gradient_is_reinforce(mode):
    _, _, adv, mask = _batch(3)
    logprobs = (-torch.rand(8, 7, generator=torch.Generator().manual_seed(4))).requires_grad_(True)
    loss, m = policy_loss(logprobs, logprobs.detach().clone(), adv, mask, aggregation=mode)
    loss.backward()
    assert m["ratio_mean"].item() == 1.0 and m["ratio_max"].item() == 1.0
    assert m["clip_frac_low"].item() == 0.0 and m["clip_frac_high"].item() == 0.0
    assert m["approx_kl"].item() == 0.0
    # REINFORCE: d loss / d logp[i,t] = -A[i,t] * weight[i,t], weight from the aggregation (written out by hand)
    lengths = mask.sum(1).tolist()
    n_tokens, n_seqs = sum(lengths), sum(1 for n in lengths if n > 0)
    expected = torch.zeros(8, 7)
    for i, n in enumerate(lengths):
        for t in range(n):
            weight = {"token_mean": 1 / n_tokens, "seq_mean_token_mean": 1 / (n_seqs * n)}.get(mode, 1 / (n_seqs * 7))
            expected[i, t] = -adv[i, t] * weight
    assert torch.allclose(logprobs.grad, expected, atol=1e-7)


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_zero_length_sequences_give_no_nan(mode):
    logprobs, old, adv, mask = _batch(5)  # sequence 3 has length 0
    lp = logprobs.clone().requires_grad_(True)
    loss, m = policy_loss(lp, old, adv, mask, aggregation=mode)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lp.grad).all() and (lp.grad[3] == 0).all()
    assert all(torch.isfinite(v) for v in m.values())

    lp = logprobs.clone().requires_grad_(True)  # a batch of only empty sequences
    loss, m = policy_loss(lp, old, adv, torch.zeros(8, 7, dtype=torch.bool), aggregation=mode)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(lp.grad, torch.zeros(8, 7))
    assert all(torch.isfinite(v) for v in m.values())


def test_extreme_log_ratio_stays_finite():
    logprobs = torch.tensor([[0.0, -500.0]], requires_grad=True)
    loss, m = policy_loss(logprobs, torch.tensor([[-500.0, 0.0]]), torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logprobs.grad).all()
    assert m["ratio_max"].item() == pytest.approx(math.exp(20), rel=1e-5)


def test_policy_loss_rejects_bad_clip():
    with pytest.raises(ValueError, match="clip"):
        policy_loss(OLD, OLD, ADVS, RESP, clip_low=1.2)


# --- kl_penalty ----------------------------------------------------------------------------------------------------

LP = torch.tensor([[0.5, -1.0, -2.0]])
REF = torch.tensor([[0.0, 0.0, -2.0]])  # d = logp - ref = 0.5, -1, 0


def test_kl_hand_values():
    assert torch.allclose(kl_penalty(LP, REF, "k1"), torch.tensor([[0.5, -1.0, 0.0]]))
    assert torch.allclose(kl_penalty(LP, REF, "k2"), torch.tensor([[0.125, 0.5, 0.0]]))
    # exp(-d) + d - 1: e^-0.5 - 0.5 = 0.1065307, e - 2 = 0.7182818
    assert torch.allclose(kl_penalty(LP, REF, "k3"), torch.tensor([[0.1065307, 0.7182818, 0.0]]), atol=1e-6)


def test_kl_k3_nonnegative_and_zero_on_equal():
    gen = torch.Generator().manual_seed(6)
    lp = torch.randn(64, 32, generator=gen)
    ref = lp + torch.randn(64, 32, generator=gen) * torch.logspace(-9, 1, 32)  # tiny to large differences
    assert (kl_penalty(lp, ref, "k3") >= 0).all()
    for estimator in ("k1", "k2", "k3"):
        assert torch.equal(kl_penalty(lp, lp.clone(), estimator), torch.zeros(64, 32))


def test_kl_clamped_and_differentiable():
    lp = torch.tensor([[100.0, 0.3]], requires_grad=True)
    k1 = kl_penalty(lp, torch.zeros(1, 2), "k1")
    assert k1[0, 0].item() == 20.0
    kl_penalty(lp, torch.zeros(1, 2), "k3").sum().backward()
    assert lp.grad[0, 1].item() == pytest.approx(1 - math.exp(-0.3), abs=1e-6)  # d/dd of exp(-d) + d - 1


def test_kl_unknown_estimator():
    with pytest.raises(ValueError, match="k1.*k2.*k3"):
        kl_penalty(LP, REF, "k4")
