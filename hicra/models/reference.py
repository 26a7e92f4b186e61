"""The frozen reference model of the KL term: the policy as it was before training."""

from __future__ import annotations

import copy

from hicra.models.lora import adapter_free_reference, is_lora


def build_reference(policy, needed: bool):
    """None when `needed` is false (beta = 0): a reference would cost a model's memory and a forward pass per step.
    A LoRA policy's reference is the policy with its adapters off (exact: LoRA's B starts at 0), no copy; any other
    policy's is a frozen deep copy."""
    if not needed:
        return None
    if is_lora(policy):
        return adapter_free_reference(policy)
    return frozen_copy(policy)


def frozen_copy(model):
    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    return reference
