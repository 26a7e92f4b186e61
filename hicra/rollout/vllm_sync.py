"""The policy's weights as the vLLM engine wants them: whole tensors under the plain model's names, LoRA merged,
streamed one parameter at a time into the engine's own `load_weights`.

- Sharded (FSDP2): each parameter is a DTensor shard; `.full_tensor()` gathers that one parameter, the engine copies
  it, and it is freed before the next is gathered: the sync never holds more than one whole parameter beyond the
  shards (TRL's colocate sync does the same), never the whole gathered model.
- LoRA (peft): the engine gets W + scaling * B @ A for every adapted layer, what `merge_and_unload` computes, under the
  base model's names (`base_model.model.` and `.base_layer` dropped, no `lora_` tensors, a `modules_to_save` copy in
  place of its original). The merge is computed next to the policy, not into it: peft's merge_adapter /
  unmerge_adapter would add and subtract the update in place, and W + d - d is not W in floating point, so the frozen
  base would drift a rounding error every step, and the adapters-off reference (hicra/models/lora.py:
  `adapter_free_reference`, exact only while the base never changes) with it. Here the policy is never written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from hicra.errors import ConfigError
from hicra.models.lora import is_lora

PEFT_PREFIX = "base_model.model."


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP2 shard (a collective over its mesh); a plain tensor as it is."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def policy_weights(policy) -> Iterator[tuple[str, torch.Tensor]]:
    """(engine name, whole tensor) for every weight of the policy's state dict, one at a time. Every rank of a
    sharded policy must run through it in step (each `full_tensor` is a collective)."""
    state = policy.state_dict()  # FSDP2: DTensor shards, whether or not the policy is gathered for generation
    if not is_lora(policy):
        for name, tensor in state.items():
            yield name, whole(tensor)
        return
    adapter = policy.active_adapter
    layers = {name: m for name, m in policy.named_modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A")}
    for key, tensor in state.items():
        if ".lora_" in key or ".original_module." in key or \
                (".modules_to_save." in key and f".modules_to_save.{adapter}." not in key):
            continue  # the adapters (merged below), and what a modules_to_save copy stands in for
        layer, _, leaf = key.rpartition(".base_layer.")
        value = _merged(layers[layer], layer, whole(tensor), state) if leaf == "weight" and layer in layers \
            else whole(tensor)
        yield engine_name(key, adapter), value


def engine_name(key: str, adapter: str) -> str:
    """A peft state-dict key under the plain transformers model's name."""
    return key.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".").replace(f".modules_to_save.{adapter}.", ".")


def _merged(module, name: str, base: torch.Tensor, state: dict) -> torch.Tensor:
    """W + scaling * B @ A over the layer's active adapters, out of place (fp32 product, as peft merges on CPU)."""
    merged = base
    for adapter in module.active_adapters:
        if adapter not in module.lora_A:
            continue
        delta = whole(state[f"{name}.lora_B.{adapter}.weight"]).float() @ \
            whole(state[f"{name}.lora_A.{adapter}.weight"]).float()  # (out, in)
        delta = delta.T if getattr(module, "fan_in_fan_out", False) else delta  # GPT-2's Conv1D layout
        merged = merged + (delta * module.scaling[adapter]).to(merged.dtype)
    return merged


def sync_weights(load: Callable[[list], None], policy) -> int:
    """Stream the policy's weights into the engine (`load`: its load_weights); how many tensors went."""
    count = 0
    for name, tensor in policy_weights(policy):
        load([(name, tensor)])
        count += 1
    return count


# --- plumbing: reaching the engine's model ------------------------------------------------------------------------

def _model_of(runner):
    return runner.get_model() if hasattr(runner, "get_model") else getattr(runner, "model", None)


def _load_on_worker(worker, weights) -> None:
    """Run on each vLLM worker by `collective_rpc` (vLLM V1): copy (name, tensor) pairs into its model."""
    _model_of(worker.model_runner).load_weights(weights)


def weight_loader(llm):
    """A function that copies a list of (name, tensor) pairs into the engine's model, for the installed vLLM.

    In-process engines (V0, V1 without multiprocessing, the external launcher): the model behind
    `llm.llm_engine.model_executor.driver_worker[.worker].model_runner` is reached from here and its `load_weights`
    called directly (TRL's colocate mode). Otherwise V1's `llm.collective_rpc` runs `_load_on_worker` on the workers.
    """
    worker = llm
    for name in ("llm_engine", "model_executor", "driver_worker"):
        worker = getattr(worker, name, None)
    runner = getattr(getattr(worker, "worker", worker), "model_runner", None) if worker is not None else None
    model = _model_of(runner) if runner is not None else None
    if model is not None and hasattr(model, "load_weights"):
        return model.load_weights
    if hasattr(llm, "collective_rpc"):
        return lambda weights: llm.collective_rpc(_load_on_worker, args=(weights,))
    raise ConfigError("rollout=vllm cannot copy the policy's weights into this vllm version (no "
                      "llm_engine.model_executor.driver_worker.model_runner.model.load_weights and no "
                      "LLM.collective_rpc); allowed: rollout=hf, or a vllm version that has either")
