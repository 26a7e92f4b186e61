"""The frozen reference model of the KL term: the policy as it was before training."""

from __future__ import annotations

import copy
from itertools import chain

import torch

from hicra.models.lora import adapter_free_reference, is_lora


def build_reference(policy, needed: bool, empty: bool = False):
    """None when `needed` is false (beta = 0): a reference would cost a model's memory and a forward pass per step.
    A LoRA policy's reference is the policy with its adapters off (exact: LoRA's B starts at 0), no copy; any other
    policy's is a frozen copy: a deep copy, or with `empty` (trainer=fsdp) one whose weights are on the meta device
    (no memory on any rank), filled shard by shard from the policy's once both are sharded
    (hicra.training.distributed.shard_from_rank0)."""
    if not needed:
        return None
    if is_lora(policy):
        return adapter_free_reference(policy)
    return frozen_copy(policy, empty)


def frozen_copy(model, empty: bool = False):
    # deepcopy takes a tensor found in its memo as already copied: each weight and buffer becomes a meta tensor of its
    # shape and dtype, and a weight that two modules share (tied embeddings) stays one shared tensor in the copy.
    memo = {id(t): _meta_like(t) for t in chain(model.parameters(), model.buffers())} if empty else {}
    reference = copy.deepcopy(model, memo).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    return reference


def _meta_like(tensor: torch.Tensor) -> torch.Tensor:
    meta = torch.empty_like(tensor, device="meta")
    return torch.nn.Parameter(meta, requires_grad=False) if isinstance(tensor, torch.nn.Parameter) else meta
