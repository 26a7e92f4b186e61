"""hicra_token_advantages / identity_token_advantages: GRPO equivalence, sign behaviour, shapes, purity."""

import functools

import pytest
import torch

from hicra.algorithms import hicra_token_advantages, identity_token_advantages

ADV = torch.tensor([1.0, -0.5, 0.0])  # (B=3,)
PLAN = torch.tensor([[True, False, True], [True, True, False], [False, True, True]])  # (B=3, T=3)


def test_identity_broadcasts_sequence_advantage():
    expected = torch.tensor([[1.0, 1.0, 1.0], [-0.5, -0.5, -0.5], [0.0, 0.0, 0.0]])
    assert torch.equal(identity_token_advantages(ADV, PLAN), expected)


def test_alpha_zero_is_exactly_identity():
    adv = torch.randn(16, generator=torch.Generator().manual_seed(0))
    mask = torch.rand(16, 7, generator=torch.Generator().manual_seed(1)) > 0.5
    assert torch.equal(hicra_token_advantages(adv, mask, alpha=0.0), identity_token_advantages(adv, mask))


def test_all_false_mask_is_identity():
    adv = torch.randn(4, 5)
    mask = torch.zeros(4, 5, dtype=torch.bool)
    assert torch.equal(hicra_token_advantages(adv, mask, alpha=0.2), identity_token_advantages(adv, mask))


def test_sign_aware_amplification_hand_values():
    # A>0 on planning: x1.2; A<0 on planning: x0.8; A=0 stays 0; non-planning untouched
    expected = torch.tensor([[1.2, 1.0, 1.2], [-0.4, -0.4, -0.5], [0.0, 0.0, 0.0]])
    out = hicra_token_advantages(ADV, PLAN, alpha=0.2)
    assert torch.allclose(out, expected, atol=1e-7)
    assert torch.equal(out[~PLAN], identity_token_advantages(ADV, PLAN)[~PLAN])
    assert torch.equal(torch.sign(out), torch.sign(identity_token_advantages(ADV, PLAN)))


def test_inputs_not_modified_and_output_not_aliased():
    adv, mask = ADV.clone(), PLAN.clone()
    for out in (hicra_token_advantages(adv, mask, alpha=0.2), identity_token_advantages(adv, mask)):
        out.add_(100.0)
    assert torch.equal(adv, ADV) and torch.equal(mask, PLAN)
    adv_bt = torch.ones(3, 3)
    identity_token_advantages(adv_bt, PLAN).add_(1.0)
    assert torch.equal(adv_bt, torch.ones(3, 3))


def test_no_grad_even_if_input_requires_grad():
    adv = ADV.clone().requires_grad_(True)
    assert not hicra_token_advantages(adv, PLAN, alpha=0.2).requires_grad
    assert not identity_token_advantages(adv, PLAN).requires_grad


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.float32])
def test_int_mask_equals_bool_mask(dtype):
    expected = hicra_token_advantages(ADV, PLAN, alpha=0.2)
    assert torch.equal(hicra_token_advantages(ADV, PLAN.to(dtype), alpha=0.2), expected)
    assert torch.equal(identity_token_advantages(ADV, PLAN.to(dtype)), identity_token_advantages(ADV, PLAN))


def test_token_level_advantages_supported():
    adv_bt = torch.tensor([[1.0, -1.0, 2.0], [0.5, 0.0, -2.0], [-1.0, 1.0, 0.0]])
    expected = torch.tensor([[1.2, -1.0, 2.4], [0.6, 0.0, -2.0], [-1.0, 1.2, 0.0]])
    assert torch.allclose(hicra_token_advantages(adv_bt, PLAN, alpha=0.2), expected, atol=1e-7)
    assert torch.equal(identity_token_advantages(adv_bt, PLAN), adv_bt)


@pytest.mark.parametrize("alpha", [-0.1, 1.0, 1.5, float("nan")])
def test_alpha_out_of_range(alpha):
    with pytest.raises(ValueError, match="alpha"):
        hicra_token_advantages(ADV, PLAN, alpha=alpha)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="advantages"):
        identity_token_advantages(torch.zeros(2), PLAN)
    with pytest.raises(ValueError, match="planning_mask"):
        identity_token_advantages(ADV, PLAN[0])


def test_partial_shares_signature():
    hicra = functools.partial(hicra_token_advantages, alpha=0.2)
    for fn in (hicra, identity_token_advantages):
        assert fn(ADV, PLAN).shape == (3, 3)


def test_drop_truncated_removes_whole_rows_only():
    from hicra.algorithms.transforms import drop_truncated

    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]], dtype=torch.bool)  # (B=3,T=3)
    truncated = torch.tensor([False, True, False])
    out = drop_truncated(mask, truncated)
    assert out.tolist() == [[True, True, False], [False, False, False], [True, False, False]]
    assert out.dtype == torch.bool and mask.tolist()[1] == [True, True, True]  # input untouched


def test_authors_rule_uses_the_papers_transform_and_damps_blame_on_gram_tokens(compose_cfg):
    # TRL pull request 4997: marked tokens get A*(1 + alpha*sign A) = A + alpha*|A|, a failed reply's too
    from hicra.config.instantiate import build

    algorithm = build(compose_cfg("algorithm=hicra_authors_rule", "planner=authors_rule").algorithm)
    adv = torch.tensor([1.0, -1.0, 0.0])  # (B=3,)
    mask = torch.tensor([[True, False], [True, False], [True, False]])  # a gram token first in every reply
    out = algorithm.token_advantages(adv, mask)
    assert torch.equal(out, torch.tensor([[1.2, 1.0], [-0.8, -1.0], [0.0, 0.0]]))  # -1 -> -0.8: blame damped
    assert torch.equal(out, hicra_token_advantages(adv, mask, alpha=0.2))
