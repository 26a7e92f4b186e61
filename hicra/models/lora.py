"""LoRA through `peft`: wrap the policy, save it as a plain transformers model, and (optionally) a copy-free reference.

    hicra-train lora=default                 # r=16, alpha=32 on every linear layer (conf/lora/default.yaml)
    hicra-train lora=default lora.r=8 lora.target_modules=[q_proj,v_proj]

`peft` is an optional dependency (the `peft` extra): it is imported only when `lora` is set.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping, Sequence

import torch

from hicra.errors import ConfigError

log = logging.getLogger(__name__)

LORA_KEYS = ("r", "alpha", "dropout", "target_modules")
ALL_LINEAR = "all-linear"  # peft's shorthand: every nn.Linear except the output head


def _peft():
    try:
        import peft
    except ImportError:
        raise ConfigError("lora=default needs the peft package: pip install peft; allowed without it: "
                          "lora=none") from None
    return peft


def linear_layer_names(model: torch.nn.Module) -> list[str]:
    """Leaf names of the model's linear layers (`q_proj`, `gate_proj`, ...): what `lora.target_modules` may list.

    The output head is left out, as `all-linear` leaves it: when it is tied to the input embeddings (SmolLM2, the
    tiny model), merging an adapter into it would change the embeddings too, and the saved model would differ.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and name and module is not head})


def _target_modules(value, model: torch.nn.Module) -> str | list[str]:
    if value == ALL_LINEAR:
        return ALL_LINEAR
    allowed = linear_layer_names(model)
    names = [value] if isinstance(value, str) else [str(n) for n in value] if isinstance(value, Sequence) else []
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        problem = f"{bad[0]!r} is not an adaptable linear layer of this model" if bad else "no layer named"
        raise ConfigError(f"lora.target_modules={value}: {problem}; allowed: {ALL_LINEAR} or a list of "
                          f"{', '.join(allowed)}")
    return names


def check_lora(lora: Mapping, model: torch.nn.Module) -> dict:
    """The `lora` config node as keyword arguments of peft's LoraConfig; a bad value raises a one-line ConfigError."""
    unknown = sorted(set(lora) - set(LORA_KEYS))
    missing = [k for k in LORA_KEYS if k not in lora]
    if unknown or missing:
        what = f"unknown key lora.{unknown[0]}" if unknown else f"lora.{missing[0]} is missing"
        raise ConfigError(f"{what}; a lora option has exactly {', '.join(LORA_KEYS)} (see conf/lora/default.yaml)")
    r, alpha, dropout = lora["r"], lora["alpha"], lora["dropout"]
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ConfigError(f"lora.r={r} is not allowed; use an integer >= 1 (the adapters' rank)")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ConfigError(f"lora.alpha={alpha} is not allowed; use a number > 0 (updates are scaled by alpha / r)")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"lora.dropout={dropout} is not a probability in [0, 1); allowed: 0.0")
    if dropout > 0:  # rejected, not silently zeroed: the user asked for something this trainer cannot do
        raise ConfigError(f"lora.dropout={dropout} is not allowed: dropout would make the update's log-probs differ "
                          f"from the sampler's, so the on-policy ratio would not be 1; use lora.dropout=0.0")
    return {"r": r, "lora_alpha": alpha, "lora_dropout": 0.0,
            "target_modules": _target_modules(lora["target_modules"], model)}


def apply_lora(model, lora: Mapping, gradient_checkpointing: bool = False):
    """Wrap a transformers causal LM in LoRA adapters; only the adapters train (peft freezes every other weight).

    `gradient_checkpointing`: whether `model` has it on (enabled before this call).
    """
    kwargs = check_lora(lora, model)
    peft = _peft()
    if gradient_checkpointing:
        # The frozen embeddings' output needs no grad, and reentrant checkpointing skips the backward of a layer
        # whose input needs none: its adapters would get no gradient. (Newer peft does this itself; older does not.)
        model.enable_input_require_grads()
    with warnings.catch_warnings():  # peft reads transformers 5's deprecated `is_gradient_checkpointing`
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = peft.get_peft_model(model, peft.LoraConfig(task_type="CAUSAL_LM", **kwargs))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("LoRA r=%d alpha=%g on %s: %d of %d parameters train (%.2f%%)", kwargs["r"], kwargs["lora_alpha"],
             kwargs["target_modules"], trainable, total, 100 * trainable / total)
    return model


def is_lora(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def merged_for_save(model):
    """The model to `save_pretrained`: a LoRA policy merged into a plain transformers model (a copy, so the trained
    policy keeps its adapters), loadable by `AutoModelForCausalLM.from_pretrained`; any other model as it is."""
    if not is_lora(model):
        return model
    return copy.deepcopy(model).merge_and_unload()


def merged_state_dict(model, full_weights: dict) -> dict:
    """A LoRA policy's whole weights (`full_weights`, its state dict gathered from FSDP shards) with every adapter
    merged into its base layer (W + scaling * B @ A, what peft's `merge_and_unload` computes), under the plain model's
    names: what a LoRA run's `final_model/` holds when the policy is sharded and cannot be deep-copied and merged."""
    weights = dict(full_weights)
    for name, module in model.named_modules():
        if not (hasattr(module, "base_layer") and hasattr(module, "lora_A")):
            continue
        base = f"{name}.base_layer.weight"
        merged = weights[base].clone()
        for adapter in module.active_adapters:
            delta = weights.pop(f"{name}.lora_B.{adapter}.weight").float() @ \
                weights.pop(f"{name}.lora_A.{adapter}.weight").float()  # (out, in)
            delta = delta.T if getattr(module, "fan_in_fan_out", False) else delta  # GPT-2's Conv1D layout
            merged += (delta * module.scaling[adapter]).to(merged.dtype)
        weights[base] = merged
    prefix = "base_model.model."
    return {key.removeprefix(prefix).replace(".base_layer.", "."): value for key, value in weights.items()
            if ".lora_" not in key}


def save_final_model(model, folder, full_weights: dict | None = None) -> None:
    """`final_model/`: a plain transformers model, LoRA adapters merged. `full_weights`: the whole weights gathered
    from FSDP shards (hicra.training.distributed.full_state_dict), for a sharded model; None for a whole one."""
    if full_weights is None:
        merged_for_save(model).save_pretrained(folder)
    elif is_lora(model):  # PeftModel.save_pretrained would write the adapters alone
        model.get_base_model().save_pretrained(folder, state_dict=merged_state_dict(model, full_weights))
    else:
        model.save_pretrained(folder, state_dict=full_weights)


class _AdaptersOff:
    """Calls `policy` with its adapters switched off and no graph. Not an nn.Module on purpose: as an attribute of
    the LightningModule it registers no second copy of the weights (state_dict, device moves, optimizer)."""

    def __init__(self, policy):
        self.policy = policy

    def __call__(self, *args, **kwargs):
        with torch.no_grad(), self.policy.disable_adapter():
            return self.policy(*args, **kwargs)

    @property
    def config(self):  # read by hicra.models.prefix_sharing.is_enabled
        return self.policy.config

    def eval(self):  # the policy's own train/eval mode is the trainer's business; dropout is off either way
        return self


def adapter_free_reference(policy) -> _AdaptersOff:
    """The frozen reference model of a LoRA policy without copying it: the base weights never train and peft starts
    the adapters at zero (lora_B = 0), so the policy with its adapters off is exactly the policy at step 0."""
    if not is_lora(policy):
        raise TypeError("adapter_free_reference needs a peft LoRA model; copy other policies")
    return _AdaptersOff(policy)
