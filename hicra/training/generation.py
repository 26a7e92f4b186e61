"""One rollout as the LightningModule asks for it: the sampler's `generate` on the policy, with a sharded policy's
weights gathered around it when the sampler runs the policy's own forward, and an out-of-memory error as one line."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from hicra.errors import TrainingError
from hicra.rollout.hf import RolloutBatch
from hicra.rollout.sampling_stream import SamplingStream
from hicra.training.distributed import full_weights_for_generation


def generate(policy, sampler, tokenizer, stream: SamplingStream, device, prompts: list[str], group_size: int,
             greedy: bool = False) -> RolloutBatch:
    """`group_size` replies to each prompt, drawn from this rank's `stream`.

    A sampler that runs the policy's forward (rollout=hf) gets FSDP's weights gathered once for the whole generate;
    vLLM copies them into its engine one parameter at a time and needs no whole-model gather."""
    gather = full_weights_for_generation(policy) if getattr(sampler, "runs_policy_forward", True) else nullcontext()
    try:
        with gather, stream.active(device):
            return sampler.generate(policy, tokenizer, prompts, group_size, greedy=greedy)
    except torch.OutOfMemoryError as err:
        setting = "val_batch_size" if greedy else "prompts_per_step, algorithm.group_size"
        raise TrainingError(f"out of GPU memory generating {len(prompts)} prompts x {group_size} responses x "
                            f"{sampler.max_new_tokens} tokens; lower {setting} or rollout.max_new_tokens") from err
