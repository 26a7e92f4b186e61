"""The preflight memory plan of a run: its config and the model's transformers config read into the shapes of
hicra/training/memory_plan.py (the arithmetic), the device it must fit, and the one-line refusal when it does not.

Runs before any model loads: the model is built on the meta device (no memory, no weights) to count its parameters
exactly, from a local folder's config.json, a config the recipes' models ship with (hicra/models/known_configs.py)
or the local Hugging Face cache. Which dtypes the run holds is what the code does with the run's model.dtype and
trainer.precision (`run_dtypes`); tests/training/test_memory_plan.py checks those against real tensors.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

from omegaconf import DictConfig

from hicra.errors import ConfigError
from hicra.models.known_configs import KNOWN_CONFIGS
from hicra.training.memory_plan import (
    USABLE_FRACTION,
    MemoryPlan,
    ModelShape,
    RunShape,
    as_record,
    fits,
    format_plan,
    gib,
    memory_plan,
)

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
log = logging.getLogger(__name__)

HALF_PRECISIONS = {"bf16-mixed": "mixed", "16-mixed": "mixed", "bf16": "mixed", "16": "mixed",
                   "bf16-true": "true", "16-true": "true"}


# --- the model --------------------------------------------------------------------------------------------------

def transformers_config(model_cfg: DictConfig):
    """The model's transformers config without its weights, or None when it cannot be had offline."""
    from transformers import AutoConfig, LlamaConfig

    target = str(model_cfg.get("_target_", ""))
    if target.endswith("build_tiny_model"):
        vocab = KNOWN_CONFIGS.get(str(model_cfg.get("tokenizer_name_or_path")), {}).get("vocab_size")
        if vocab is None:
            from hicra.models.loaders import load_tokenizer

            vocab = len(load_tokenizer(model_cfg.tokenizer_name_or_path))
        return LlamaConfig(vocab_size=vocab, tie_word_embeddings=True, **{
            k: model_cfg[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                      "num_key_value_heads", "intermediate_size") if k in model_cfg})
    name = str(model_cfg.get("name_or_path", ""))
    if not target.endswith("load_pretrained") or not name:
        return None
    if name in KNOWN_CONFIGS:
        known = dict(KNOWN_CONFIGS[name])
        return AutoConfig.for_model(known.pop("model_type"), **known)
    local = Path(name).expanduser()
    try:  # a local folder, or a hub id in the local cache; never a download here
        return AutoConfig.from_pretrained(local if (local / "config.json").is_file() else name, local_files_only=True)
    except Exception:  # noqa: BLE001 - an unreadable or absent config: the plan is skipped (said), the load reports it
        return None


def lora_parameters(model, lora: dict | None) -> int:
    """LoRA adapters' size: r x (in + out) for every adapted linear layer of the decoder blocks."""
    import torch

    targets = lora.get("target_modules", "all-linear")
    blocks = [m for m in model.modules() if type(m).__name__.endswith(("DecoderLayer", "Block"))]
    return sum(int(lora["r"]) * (m.in_features + m.out_features) for block in blocks
               for name, m in block.named_modules() if isinstance(m, torch.nn.Linear)
               and (targets == "all-linear" or name.rsplit(".", 1)[-1] in targets))


def model_shape(config, lora: dict | None = None) -> ModelShape:
    """Exact parameter counts from the model built on the meta device (tied embeddings counted once)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    parameters = sum(p.numel() for p in model.parameters())
    block = next(m for m in model.modules() if type(m).__name__.endswith(("DecoderLayer", "Block")))
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    return ModelShape(parameters=parameters, trainable=lora_parameters(model, lora) if lora else parameters,
                      block_parameters=sum(p.numel() for p in block.parameters()), layers=text.num_hidden_layers,
                      hidden=text.hidden_size, intermediate=text.intermediate_size,
                      kv_heads=getattr(text, "num_key_value_heads", None) or heads,
                      head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
                      vocab=text.vocab_size)


# --- the run ----------------------------------------------------------------------------------------------------

def run_dtypes(model_dtype: str, precision: str, sharded: bool) -> dict[str, int]:
    """Bytes per element of what the run holds, as the code does it.

    - bf16-true / 16-true: Lightning converts the weights, everything is 2 bytes;
    - bf16-mixed / 16-mixed: compute in 16 bits, and the KV cache holds the compute dtype (hicra/rollout/kv_cache.py);
    - FSDP gathers the weights in bf16 under a bf16 precision (distributed.mixed_precision_policy), else in their
      own dtype: the forward runs on the gathered weights;
    - a generation keeps autocast's casts of the weights it runs on when those are not in the compute dtype
      (hicra/rollout/hf.py: the cast cache), e.g. fp32 weights under bf16-mixed without FSDP.
    """
    weight = DTYPE_BYTES[model_dtype]
    mode = HALF_PRECISIONS.get(str(precision))
    if mode == "true":
        weight = 2
    compute = 2 if mode else weight
    gather = 2 if sharded and str(precision).startswith("bf16") else weight
    return {"weight_bytes": weight, "compute_bytes": compute, "gather_bytes": gather, "key_bytes": compute,
                "value_bytes": compute, "cast_cache": compute != gather}


def optimizer_bytes(optim: DictConfig, weight_bytes: int) -> int:
    """AdamW's two moments, in the weights' dtype; optimi's Kahan summation keeps a third buffer for 16-bit weights."""
    kahan = "optimi" in str(optim.get("_target_", "")) and optim.get("kahan_sum", True) and weight_bytes == 2
    return (3 if kahan else 2) * weight_bytes


def ranks_of(trainer: DictConfig) -> int:
    """devices x nodes, where the config says it (devices=auto on a GPU machine counts its GPUs)."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, str) or devices == -1:
        import torch

        gpu = str(trainer.get("accelerator", "auto")) in ("gpu", "cuda", "auto") and torch.cuda.is_available()
        devices = torch.cuda.device_count() if gpu else 1
    elif not isinstance(devices, int):
        devices = len(devices)
    return max(1, int(devices)) * int(trainer.get("num_nodes", 1))


def token_budgets(prompt: int, new: int, val_new: int, context: int | None) -> tuple[int, int, int]:
    """(prompt, new, validation new) tokens, within the model's context: a longer budget is refused once the model
    has loaded and the prompts are measured (hicra/training/context_length.py), with a more useful message."""
    if not isinstance(context, int):
        return prompt, new, val_new
    new, val_new = min(new, context), min(val_new, context)
    return min(prompt, context - max(new, val_new)), new, val_new


def run_shape(cfg: DictConfig, algorithm, sampler, val_examples: int, needs_entropy: bool,
              context: int | None = None) -> RunShape:
    """The run's numbers per rank: rows per generate call, token budgets, dtypes, what is sharded."""
    ranks = ranks_of(cfg.trainer)
    strategy = cfg.trainer.get("strategy", "auto")
    sharded = any(s in str(strategy).lower() for s in ("fsdp", "fully_sharded"))
    dtypes = run_dtypes(str(cfg.model.get("dtype", "float32")), str(cfg.trainer.get("precision", "32-true")), sharded)
    lora = cfg.get("lora") is not None
    prompt, new, val_new = token_budgets(int(sampler.max_prompt_tokens), int(sampler.max_new_tokens),
                                         int(sampler.val_max_new_tokens or sampler.max_new_tokens), context)
    return RunShape(
        ranks=ranks, sharded=sharded, **dtypes,
        optimizer_bytes=optimizer_bytes(cfg.optim, dtypes["weight_bytes"]),
        reference=algorithm.needs_reference and not lora,
        gradient_checkpointing=bool(cfg.model.get("gradient_checkpointing", False)),
        rollout_rows=int(cfg.prompts_per_step) // ranks * algorithm.group_size,
        val_rows=min(int(cfg.val_batch_size), math.ceil(val_examples / ranks)),
        prompt_tokens=prompt, new_tokens=new, val_new_tokens=val_new,
        micro_batch_size=int(cfg.micro_batch_size),
        reference_offload=bool(cfg.get("reference_offload", False)),
        unsharded_gradient_accumulation=sharded and not cfg.get("reduce_gradients_every_micro_batch", False),
        scoring_pass=algorithm.num_iterations > 1 or needs_entropy or algorithm.needs_kl_in_reward
        or algorithm.needs_reference)


# --- the device and the check -----------------------------------------------------------------------------------

def device_bytes(cfg: DictConfig, ranks_on_host: int) -> tuple[int | None, str]:
    """What one device may hold, and what says so: on a GPU its own memory, or `device_memory_gib` when that is
    smaller (a recipe's stated GPUs); elsewhere `device_memory_gib`, else the host's RAM shared by its ranks."""
    import torch

    stated = cfg.get("device_memory_gib")
    stated_bytes = int(float(stated) * 2**30) if stated is not None else None
    if str(cfg.trainer.get("accelerator", "auto")) in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        if stated_bytes is None or props.total_memory <= stated_bytes:
            return int(props.total_memory), props.name
    if stated_bytes is not None:
        return stated_bytes, f"device_memory_gib={stated}"
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None, "host RAM unknown"
    return ram // max(1, ranks_on_host), f"host RAM / {ranks_on_host} ranks" if ranks_on_host > 1 else "host RAM"


@dataclasses.dataclass(frozen=True)
class Knobs:
    """The settings the refusal may propose, with what they change in the run's shape."""
    prompts_per_step: int
    group_size: int
    val_examples: int
    val_batch_size: int
    devices: int
    nodes: int


def _fitting(model: ModelShape, capacity: int, setting: str, shapes) -> str | None:
    """The first of `shapes` ((value, RunShape) pairs, least change first) whose plan fits, as `setting=value`."""
    for value, shape in shapes:
        if fits(memory_plan(model, shape), capacity):
            return f"{setting}={value}"
    return None


def _halvings(n: int) -> list[int]:
    return [n // 2**i for i in range(1, n.bit_length()) if n // 2**i >= 1]


def _more_devices(model: ModelShape, run: RunShape, knobs: Knobs, capacity: int) -> str | None:
    """FSDP over more devices: the state shards further; each rank keeps at least one prompt."""
    for factor in (2, 4):
        devices = knobs.devices * factor
        ranks = devices * knobs.nodes
        prompts = knobs.prompts_per_step if knobs.prompts_per_step % ranks == 0 else ranks
        shape = dataclasses.replace(run, ranks=ranks, sharded=True, rollout_rows=prompts // ranks * knobs.group_size,
                                    val_rows=min(knobs.val_batch_size, math.ceil(knobs.val_examples / ranks)))
        if fits(memory_plan(model, shape), capacity):
            fsdp = "" if run.sharded else "trainer=fsdp "
            more = f" prompts_per_step={prompts}" if prompts != knobs.prompts_per_step else ""
            return f"{fsdp}trainer.devices={devices}{more}"
    return None


def settings_that_fit(model: ModelShape, run: RunShape, knobs: Knobs, capacity: int) -> list[str]:
    """Single changes that make the plan fit, those that keep the experiment the same first."""
    r = dataclasses.replace
    found = [
        _fitting(model, capacity, "val_batch_size", [(v, r(run, val_rows=v)) for v in _halvings(run.val_rows)]),
        _fitting(model, capacity, "micro_batch_size",
                 [(v, r(run, micro_batch_size=v)) for v in _halvings(run.micro_batch_size)]),
        None if run.gradient_checkpointing else
        _fitting(model, capacity, "model.gradient_checkpointing", [("true", r(run, gradient_checkpointing=True))]),
        None if not run.unsharded_gradient_accumulation else
        _fitting(model, capacity, "reduce_gradients_every_micro_batch",
                 [("true", r(run, unsharded_gradient_accumulation=False))]),
        _more_devices(model, run, knobs, capacity),
        _fitting(model, capacity, "rollout.max_new_tokens",
                 [(v, r(run, new_tokens=v, val_new_tokens=min(v, run.val_new_tokens)))
                  for v in _halvings(run.new_tokens)]),
    ]
    return [s for s in found if s]


def refusal(plan: MemoryPlan, capacity: int, where: str, suggestions: list[str]) -> str:
    """One line: the peak, its biggest terms, the device, and what would fit."""
    biggest = ", ".join(f"{t} {gib(plan.terms[t])}" for t in plan.biggest())
    fix = ("would fit: " + "; or ".join(suggestions)) if suggestions else \
        "no single setting fits: combine a smaller val_batch_size, micro_batch_size or rollout.max_new_tokens " \
        "with more devices (trainer=fsdp)"
    return (f"memory plan: {gib(plan.peak)} per device at {plan.peak_phase} ({biggest}) does not fit "
            f"{gib(USABLE_FRACTION * capacity)} usable of {gib(capacity)} ({where}); {fix}; "
            f"or state device_memory_gib=<GiB per device> if the device is larger")


@dataclasses.dataclass
class PlannedRun:
    """A plan that fits: the table to print and the record MLflow keeps (memory_plan.json)."""
    plan: MemoryPlan
    text: str
    record: dict

    def headline(self) -> str:
        """`68.6 GiB at generation of 79.0 GiB per device`: the summary's line and the run's `memory_plan` tag."""
        device = self.record.get("device_bytes")
        return f"{gib(self.plan.peak)} at {self.plan.peak_phase}" + (f" of {gib(device)} per device" if device else
                                                                     " per device")


def check_memory(cfg: DictConfig, algorithm, sampler, val_examples: int, needs_entropy: bool) -> PlannedRun | None:
    """The run's plan, refused in one line (ConfigError) when it cannot fit the device; None when the model's
    config cannot be read before loading (a model kind the plan does not know, a hub id not cached)."""
    config = transformers_config(cfg.model)
    try:
        model = model_shape(config, cfg.get("lora")) if config is not None else None
    except Exception:  # noqa: BLE001 - an architecture transformers cannot build offline (remote code, ...)
        model = None
    if model is None:
        log.warning("memory plan: skipped, model %s has no config readable before loading",
                    cfg.model.get("name_or_path", cfg.model.get("_target_")))
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    context = getattr(text, "max_position_embeddings", None)
    run = run_shape(cfg, algorithm, sampler, val_examples, needs_entropy, context)
    nodes = int(cfg.trainer.get("num_nodes", 1))
    per_node = ranks_of(cfg.trainer) // nodes
    capacity, where = device_bytes(cfg, ranks_on_host=per_node)
    share = getattr(sampler, "gpu_memory_utilization", None)  # vLLM generates inside its share of the device
    if share is not None and capacity:
        sleeps = bool(getattr(sampler, "enable_sleep_mode", False))  # and releases it for the update
        where = f"{where}, vLLM {share:.0%} while generating{'' if sleeps else ' and updating (no sleep mode)'}"
        run = dataclasses.replace(run, rollout_rows=0, val_rows=0, cast_cache=False, engine_bytes=int(capacity * share),
                                  engine_sleeps=sleeps)
    plan = memory_plan(model, run)
    if capacity and not fits(plan, capacity):
        knobs = Knobs(int(cfg.prompts_per_step), algorithm.group_size, val_examples, int(cfg.val_batch_size),
                      per_node, nodes)
        raise ConfigError(refusal(plan, capacity, where, settings_that_fit(model, run, knobs, capacity)))
    return PlannedRun(plan, format_plan(plan, capacity, where), as_record(plan, capacity))


def plan_run(cfg: DictConfig, algorithm, sampler, task) -> PlannedRun | None:
    """hicra-train's preflight call (hicra/training/run.py): the plan of this run, or the one-line refusal."""
    from hydra.utils import get_class

    needs_entropy = bool(getattr(get_class(cfg.planner._target_), "needs_entropy", False))
    return check_memory(cfg, algorithm, sampler, len(task.val_examples()), needs_entropy)


def log_plan(logger, planned: PlannedRun | None) -> None:
    """memory_plan.json (an artifact) and a `memory_plan` tag on the MLflow run. Not params (a resumed run with other
    settings could not log them again, and hicra-compare groups runs by their params) nor metrics (steps)."""
    import json

    from hicra.tracking.artifacts import log_text

    if logger is None or planned is None:
        return
    log_text([logger], json.dumps(planned.record, indent=2), "memory_plan.json")
    tag = (logger.experiment.set_tag, logger.run_id, "memory_plan", planned.headline())
    logger.call("the memory_plan tag", *tag) if hasattr(logger, "call") else tag[0](*tag[1:])  # an outage: said once
