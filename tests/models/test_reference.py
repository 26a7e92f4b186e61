"""build_reference: none without a KL term, a frozen copy of a plain policy, the adapters-off view of a LoRA policy;
the LightningModule refuses a KL term without one."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from hicra.algorithms import Algorithm, group_advantages, identity_token_advantages
from hicra.models.loaders import build_tiny_model
from hicra.models.lora import is_lora
from hicra.models.reference import build_reference

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}


def test_no_reference_without_a_kl_term():
    assert build_reference(build_tiny_model().model, needed=False) is None


def test_a_plain_policy_gets_a_frozen_copy():
    policy = build_tiny_model().model.train()
    reference = build_reference(policy, needed=True)
    assert reference is not policy and not reference.training
    assert not any(p.requires_grad for p in reference.parameters())
    for (name, p), (_, r) in zip(policy.named_parameters(), reference.named_parameters()):
        assert torch.equal(p, r) and p.data_ptr() != r.data_ptr(), name  # same values, own storage
    with torch.no_grad():
        next(policy.parameters()).add_(1.0)  # training the policy leaves the reference where it was
    assert not torch.equal(next(policy.parameters()), next(reference.parameters()))


def test_a_lora_policy_gets_its_adapters_off_view_not_a_copy():
    policy = build_tiny_model(lora=LORA).model
    assert is_lora(policy)
    reference = build_reference(policy, needed=True)
    assert not isinstance(reference, torch.nn.Module) and reference.policy is policy  # no second set of weights


def test_the_module_refuses_a_kl_term_without_a_reference():
    from hicra.training.module import PolicyGradientModule

    bundle = build_tiny_model()
    algorithm = Algorithm(partial(group_advantages, group_size=4), identity_token_advantages, group_size=4,
                          kl_coef=0.1)
    with pytest.raises(ValueError, match=r"kl_coef=0.1 > 0 needs a frozen reference model"):
        PolicyGradientModule(bundle.model, bundle.tokenizer, algorithm, detector=None, task=None, sampler=None,
                             optimizer_factory=None)
