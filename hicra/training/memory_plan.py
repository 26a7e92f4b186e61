"""Per-device memory of a run, by arithmetic, before any model loads: config numbers in, named byte counts out.

Pure: no torch, no config objects (hicra/training/memory_check.py reads the run's config and the model's
transformers config into the two shapes below, and refuses a run whose plan does not fit).

Notation: P parameters (all weights), P_t the trainable ones (LoRA: the adapters only), P_block one decoder block's,
R ranks sharing the state (R = devices x nodes under FSDP, 1 otherwise); bytes per element: b_w of the weights
(model.dtype), b_f of the weights the forward runs on (FSDP: its gathered dtype, bf16 under a bf16 precision; else
b_w), b_c of the compute (bf16 under bf16-mixed), b_k / b_v of the cached keys / values; n_layers, kv_heads, d_head;
V the vocabulary, H the hidden size, I the MLP width; L = rollout.max_prompt_tokens + new tokens (the prompt budget:
an upper bound on the batch's longest prompt).

What one device holds, term by term (bytes):
  weights           P   * b_w / R          the master weights (fp32 under bf16-mixed: no separate master copy)
  gradients         P_t * b_w / R          kept from one update to the next (zero_grad(set_to_none) runs at the
                                           start of the update, hicra/training/module.py), so every phase holds them
  optimizer         P_t * b_opt / R        AdamW: 2 moments in the weights' dtype; optimi's Kahan AdamW adds a buffer
  ddp_buckets       P_t * b_w              DDP (several ranks, not sharded): the reducer's gradient buckets, a second
                                           copy of the gradients (gradient_as_bucket_view is off)
  reference         P   * b_w / R          the KL term's frozen copy (hicra/models/reference.py); 0 without KL,
                                           under LoRA (the policy with its adapters off), or offloaded to host
                                           memory (trainer=fsdp reference_offload=true)
  gathered_weights  P   * b_f              FSDP: the whole model, unsharded for a whole generation
                                           (distributed.full_weights_for_generation); 0 with vLLM, whose weight
                                           sync gathers one parameter at a time
  vllm_engine       share * device         rollout=vllm: the engine's weights and KV cache
                                           (rollout.gpu_memory_utilization of the device) while it generates
  vllm_asleep       the same, or 0         what the engine keeps through the update: 0 with sleep mode (it released
                                           weights and KV cache; its CUDA graphs and context are in the 10% margin)
  weight_casts      P   * b_c              autocast's cast cache kept for a generation, when b_f != b_c
  kv_cache_*        rows * L * n_layers * kv_heads * d_head * (b_k + b_v)
                                           preallocated for the whole reply of every row (hicra/rollout/kv_cache.py)
  sampling_*        rows * V * 18          one step's logits: model output (b_c) widened to fp32 (4), probabilities
                                           (4) and their float64 cumulative sum (8), ~18 bytes per entry
  block_gather      2 * P_block * b_f      FSDP in the update: the running block and the prefetched next one
  accumulated_gradients P_t * b_a          FSDP with the update's micro-batches accumulating unsharded gradients
                                           (one reduce-scatter per update, hicra.training.distributed.gradient_sync):
                                           every rank holds the whole model's gradients until the last micro-batch;
                                           b_a = 4 under a half precision (FSDP2 reduces in fp32), else b_w; 0 with
                                           one micro-batch or a reduce-scatter per micro-batch
  update_logits     m * T * V * 2 * b_c + chunk_temps
                                           the micro-batch's logits kept for the backward and their gradient;
                                           m = micro_batch_size rows, T = new tokens
  scoring_logits    m * T * V * b_c + chunk_temps (no graph: old / reference log-probs)
  chunk_temps       4 * C * V * 4          fp32 temporaries of hicra/algorithms/functional.py, C = 1,024 rows
  activations       an estimate: per token and layer a Llama-style block saves ~(7 H + 4 I) * b_c (norm outputs,
                    q/k/v, attention output, gate, up, their product) + 2 H * b_f (the residual stream's norm
                    inputs) + its weights cast to b_c when b_f != b_c (and the head's, V x H). Without gradient
                    checkpointing every layer keeps that; with it (non-reentrant, per layer) each layer keeps its
                    input m * L * H * b_f and one layer at a time recomputes the rest. SDPA is assumed
                    memory-efficient (no L x L scores). On a tiny model, CPU, the saved tensors of a forward are
                    within 15% of activations + the logits (tests/training/test_memory_plan.py).

Phases (what is alive at the same time); the plan is the largest. "state" = weights + gradients + optimizer +
ddp_buckets + reference:
  generation   state + gathered_weights + weight_casts + kv_cache_rollout + sampling_rollout + vllm_engine
  validation   the same with the validation batch's rows and budget
  log-probs    state + vllm_asleep + block_gather + scoring_logits + one layer's activations (when such a pass runs)
  update       state + vllm_asleep + block_gather + accumulated_gradients + update_logits + activations

Left out: the CUDA context, NCCL buffers and allocator fragmentation (USABLE_FRACTION leaves 10% for them), the
prompt's own cache while it is copied into the preallocated one (prompt-sized), rollout.cache_implementation=static
(transformers allocates that cache). With vLLM the policy's own generation terms are 0 (the engine generates inside
its share: vllm_engine).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

GIB = 2**30
CHUNK_ROWS = 1024  # hicra/algorithms/functional.py DEFAULT_CHUNK_SIZE (GPUs)
SAMPLING_BYTES = 18  # per logit entry while sampling one token (see the module docstring)
# Share of a device's memory the plan may fill: the rest is the CUDA context, NCCL buffers and the caching
# allocator's fragmentation, which no tensor count sees.
USABLE_FRACTION = 0.9


@dataclass(frozen=True)
class ModelShape:
    """The model's numbers (its transformers config, and a parameter count taken on the meta device)."""
    parameters: int
    trainable: int
    block_parameters: int  # one decoder block (what FSDP gathers at a time in the update)
    layers: int
    hidden: int
    intermediate: int
    kv_heads: int
    head_dim: int
    vocab: int


@dataclass(frozen=True)
class RunShape:
    """The run's numbers, per rank. Byte sizes are what the code does with the run's model.dtype and precision."""
    ranks: int  # ranks sharing the state: devices x nodes under FSDP, else 1
    sharded: bool  # FSDP
    weight_bytes: int
    gather_bytes: int  # bytes per weight the forward runs on: FSDP's gathered dtype, else weight_bytes
    compute_bytes: int
    key_bytes: int
    value_bytes: int
    optimizer_bytes: int  # per trainable parameter
    cast_cache: bool  # generation keeps autocast's weight casts
    reference: bool
    gradient_checkpointing: bool
    rollout_rows: int  # prompts per rank x group size
    val_rows: int  # rows of one validation generate call on one rank
    prompt_tokens: int
    new_tokens: int
    val_new_tokens: int
    micro_batch_size: int
    scoring_pass: bool  # a no-graph log-prob pass runs (old log-probs, entropies, or the reference)
    reference_offload: bool = False  # FSDP: the reference's shards in host memory (the run's reference_offload)
    # FSDP: the update's micro-batches accumulate unsharded gradients, one reduce-scatter per update (the run's
    # reduce_gradients_every_micro_batch=false); False: a reduce-scatter per micro-batch
    unsharded_gradient_accumulation: bool = False
    engine_bytes: int = 0  # rollout=vllm: the engine's share of the device while it generates
    engine_sleeps: bool = False  # ... released during the update and log-prob passes (vLLM's sleep mode)


@dataclass(frozen=True)
class MemoryPlan:
    terms: dict[str, int]  # name -> bytes
    phases: dict[str, tuple[str, ...]]  # phase -> the terms alive in it

    def phase_bytes(self, phase: str) -> int:
        return sum(self.terms[t] for t in self.phases[phase])

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phase_bytes)

    @property
    def peak(self) -> int:
        return self.phase_bytes(self.peak_phase)

    def biggest(self, n: int = 3) -> list[str]:
        """The largest terms of the peak phase, largest first."""
        return sorted(self.phases[self.peak_phase], key=lambda t: -self.terms[t])[:n]


def kv_cache_bytes(model: ModelShape, rows: int, tokens: int, key_bytes: int, value_bytes: int) -> int:
    """rows x tokens x n_layers x kv_heads x d_head x (b_k + b_v): a cache preallocated for `tokens` positions."""
    return rows * tokens * model.layers * model.kv_heads * model.head_dim * (key_bytes + value_bytes)


def layer_activation_bytes(model: ModelShape, run: RunShape, rows: int, tokens: int) -> int:
    """What one decoder layer saves for its backward over rows x tokens (an estimate, see the module docstring)."""
    per_token = (7 * model.hidden + 4 * model.intermediate) * run.compute_bytes + 2 * model.hidden * run.gather_bytes
    casts = model.block_parameters * run.compute_bytes if run.gather_bytes != run.compute_bytes else 0
    return rows * tokens * per_token + casts


def activation_bytes(model: ModelShape, run: RunShape) -> int:
    """The update's saved activations (an estimate, see the module docstring), with the head's weight cast to b_c."""
    rows, tokens = run.micro_batch_size, run.prompt_tokens + run.new_tokens
    one_layer = layer_activation_bytes(model, run, rows, tokens)
    head_cast = model.vocab * model.hidden * run.compute_bytes if run.gather_bytes != run.compute_bytes else 0
    if not run.gradient_checkpointing:
        return model.layers * one_layer + head_cast
    return model.layers * rows * tokens * model.hidden * run.gather_bytes + one_layer + head_cast


def state_terms(model: ModelShape, run: RunShape) -> dict[str, int]:
    """What every phase holds: the (sharded) weights, gradients, optimizer state, DDP's buckets and reference."""
    shard = run.ranks if run.sharded else 1
    return {
        "weights": model.parameters * run.weight_bytes // shard,
        "gradients": model.trainable * run.weight_bytes // shard,
        "optimizer": model.trainable * run.optimizer_bytes // shard,
        "ddp_buckets": model.trainable * run.weight_bytes if run.ranks > 1 and not run.sharded else 0,
        "reference": model.parameters * run.weight_bytes // shard if run.reference and not run.reference_offload else 0,
    }


def generation_terms(model: ModelShape, run: RunShape) -> dict[str, int]:
    rollout_tokens, val_tokens = run.prompt_tokens + run.new_tokens, run.prompt_tokens + run.val_new_tokens
    return {
        "gathered_weights": model.parameters * run.gather_bytes if run.sharded and not run.engine_bytes else 0,
        "weight_casts": model.parameters * run.compute_bytes if run.cast_cache else 0,
        "kv_cache_rollout": kv_cache_bytes(model, run.rollout_rows, rollout_tokens, run.key_bytes, run.value_bytes),
        "sampling_rollout": run.rollout_rows * model.vocab * SAMPLING_BYTES,
        "kv_cache_validation": kv_cache_bytes(model, run.val_rows, val_tokens, run.key_bytes, run.value_bytes),
        "sampling_validation": run.val_rows * model.vocab * SAMPLING_BYTES,
        "vllm_engine": run.engine_bytes,
    }


def update_terms(model: ModelShape, run: RunShape) -> dict[str, int]:
    logits = run.micro_batch_size * run.new_tokens * model.vocab * run.compute_bytes  # (m, T, V)
    chunk_temps = 4 * min(CHUNK_ROWS, run.micro_batch_size * run.new_tokens) * model.vocab * 4
    tokens = run.prompt_tokens + run.new_tokens
    accumulates = run.sharded and run.unsharded_gradient_accumulation and run.rollout_rows > run.micro_batch_size
    return {
        "vllm_asleep": 0 if run.engine_sleeps else run.engine_bytes,
        "block_gather": 2 * model.block_parameters * run.gather_bytes if run.sharded else 0,
        "accumulated_gradients": model.trainable * (4 if run.compute_bytes == 2 else run.weight_bytes)
        if accumulates else 0,
        "update_logits": 2 * logits + chunk_temps,
        "activations": activation_bytes(model, run),
        "scoring_logits": logits + chunk_temps if run.scoring_pass else 0,
        "scoring_activations": layer_activation_bytes(dataclasses.replace(model, block_parameters=0), run,
                                                      run.micro_batch_size, tokens) if run.scoring_pass else 0,
    }


def memory_plan(model: ModelShape, run: RunShape) -> MemoryPlan:
    """Every term (bytes per device) and the phases that hold them at once."""
    terms = state_terms(model, run) | generation_terms(model, run) | update_terms(model, run)
    state = ("weights", "gradients", "optimizer", "ddp_buckets", "reference")
    phases = {
        "generation": state + ("gathered_weights", "weight_casts", "kv_cache_rollout", "sampling_rollout",
                               "vllm_engine"),
        "validation": state + ("gathered_weights", "weight_casts", "kv_cache_validation", "sampling_validation",
                               "vllm_engine"),
        "update": state + ("vllm_asleep", "block_gather", "accumulated_gradients", "update_logits", "activations"),
    }
    if run.scoring_pass:
        phases["log-probs"] = state + ("vllm_asleep", "block_gather", "scoring_logits", "scoring_activations")
    return MemoryPlan(terms, phases)


def fits(plan: MemoryPlan, device_bytes: int) -> bool:
    return plan.peak <= USABLE_FRACTION * device_bytes


def gib(n: float) -> str:
    """`68.6 GiB`, or `12 MiB` under a GiB (a tiny model's terms would all read 0.0 GiB)."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / 2**20:.0f} MiB"


def format_plan(plan: MemoryPlan, device_bytes: int | None, where: str) -> str:
    """The table printed at startup: each term, each phase's total, the peak against the device."""
    lines = [f"memory plan per device ({where}):"]
    lines += [f"  {name:<20} {gib(size):>10}" for name, size in plan.terms.items() if size]
    lines += [f"  = {phase:<18} {gib(plan.phase_bytes(phase)):>10}" for phase in plan.phases]
    if device_bytes:
        lines.append(f"  peak {gib(plan.peak)} ({plan.peak_phase}) of {gib(device_bytes)} "
                     f"({USABLE_FRACTION:.0%} usable): {'fits' if fits(plan, device_bytes) else 'DOES NOT FIT'}")
    return "\n".join(lines)


def as_record(plan: MemoryPlan, device_bytes: int | None) -> dict:
    """What memory_plan.json holds: bytes per term and phase, the peak and the device it was checked against."""
    return {"terms_bytes": dict(plan.terms),
            "phases_bytes": {phase: plan.phase_bytes(phase) for phase in plan.phases},
            "phase_terms": {phase: list(terms) for phase, terms in plan.phases.items()},
            "peak_phase": plan.peak_phase, "peak_bytes": plan.peak, "device_bytes": device_bytes,
            "usable_fraction": USABLE_FRACTION}
