"""What a training step needs to know about the other ranks under Lightning's DDP/FSDP strategies.

Lightning launches the processes, wraps the model and averages gradients; these helpers only make the maths
independent of the number of ranks:

* every rank samples whole groups (a prompt's G responses never straddle ranks), so group advantages are exact
  without any exchange;
* the loss denominator (token or sequence count) is summed over ranks, and each rank's loss is multiplied by the
  world size because DDP *averages* gradients: the result is the gradient of the global-batch loss, the same for
  1 rank x 4 micro-batches as for 2 ranks x 2 (tests/training/test_ddp.py);
* metrics are reduced over ranks before rank 0 logs them.

With one process (or no trainer at all, in unit tests) every helper is the identity.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import Tensor


def world_size(trainer) -> int:
    return trainer.world_size if trainer is not None else 1


def _distributed(trainer) -> bool:
    return world_size(trainer) > 1 and dist.is_available() and dist.is_initialized()


def global_sum(value: Tensor, trainer) -> Tensor:
    """Sum of a scalar tensor over ranks (every rank must call this)."""
    if not _distributed(trainer):
        return value
    return trainer.strategy.reduce(value.detach().clone().float(), reduce_op="sum")


def gather_objects(obj, trainer) -> list:
    """[obj of rank 0, obj of rank 1, ...]; any picklable object (every rank must call this)."""
    if not _distributed(trainer):
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def reduce_metrics(metrics: dict[str, float], trainer) -> dict[str, float]:
    """Metrics of the global batch: `loss/*` summed over ranks (each rank holds its share of the global-batch
    loss), `perf/*` the slowest rank (what the step waits for), everything else the mean over ranks."""
    per_rank = gather_objects(metrics, trainer)
    if len(per_rank) == 1:
        return metrics
    reduced = {}
    for key in metrics:
        values = [m[key] for m in per_rank if key in m]
        reduced[key] = sum(values) if key.startswith("loss/") else \
            max(values) if key.startswith("perf/") else sum(values) / len(values)
    return reduced


@contextlib.contextmanager
def gradient_sync(trainer, last: bool, model=None, every_micro_batch: bool = False):
    """Context for one micro-batch's backward: gradients are exchanged on the last micro-batch only, one exchange per
    optimizer step instead of one per micro-batch.

    * DDP (the strategy's model has `no_sync`): the earlier micro-batches accumulate locally under `no_sync`.
    * FSDP2 (`model`, the policy, is sharded): `set_requires_gradient_sync(False)` on the earlier micro-batches, so
      their gradients stay unsharded and add up on every rank, and the last backward reduce-scatters the sum. The
      price is memory: until then every rank holds the whole model's gradients, unsharded (fp32 under bf16, as the
      reduction runs; memory_plan's `accumulated_gradients`), e.g. 28 GiB for 7B parameters, where the sharded ones
      take 1/ranks of it. `every_micro_batch` (the run's `reduce_gradients_every_micro_batch`) keeps the
      reduce-scatter after every micro-batch, for runs whose device cannot hold them. DDP's gradients are whole on
      every rank either way, so `no_sync` costs nothing there and the option does not apply.
    """
    from torch.distributed.fsdp import FSDPModule

    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(last or every_micro_batch)
        try:
            yield
        finally:  # a backward outside this context (or after a failed micro-batch) syncs as FSDP2 does by default
            model.set_requires_gradient_sync(True)
        return
    no_sync = getattr(getattr(getattr(trainer, "strategy", None), "model", None), "no_sync", None)
    with contextlib.nullcontext() if last or no_sync is None else no_sync():
        yield






def _is_block(module) -> bool:
    return type(module).__name__.endswith(("DecoderLayer", "Block"))


def mixed_precision_policy(precision: str | None):
    """FSDP2's precision for a Lightning `trainer.precision`: under bf16 ("bf16-mixed", "bf16-true") weights are
    gathered in bf16 and gradients reduced in fp32, as verl does; the sharded master weights keep their own dtype
    (fp32 with model.dtype=float32) and so does the optimizer. Gathering fp32 weights only for autocast to cast them
    again would double the all-gather traffic and the gathered memory, and decoding would re-cast every weight at
    every token. None (FSDP2's default: everything in the parameters' dtype) for other precisions."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if not str(precision).startswith("bf16"):
        return None
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def shard_model(model, mesh, precision: str | None = None, offload: bool = False) -> None:
    """FSDP2 (`fully_shard`): one unit per transformer block, any architecture, then the rest of the model (embeddings,
    final norm, head) as the root unit. Parameters, gradients and AdamW state are sharded over `mesh`; a block's
    weights are gathered only while it runs (in bf16 under a bf16 `precision`: `mixed_precision_policy`), and the
    model stays a plain module (`generate` works on it). `offload`: the shards live in host memory (FSDP2's
    CPUOffloadPolicy, pinned on GPUs) and are copied to the device for each forward: the frozen reference's option."""
    from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, fully_shard

    if isinstance(model, FSDPModule):  # Lightning calls configure_model for validate and again for fit
        return
    policy = mixed_precision_policy(precision)
    options = {"mp_policy": policy} if policy is not None else {}
    if offload:  # pinned host memory makes the copies to the GPU asynchronous; a CPU-only machine has none to pin
        options["offload_policy"] = CPUOffloadPolicy(pin_memory=mesh.device_type == "cuda")
    for block in [m for m in model.modules() if _is_block(m)]:
        fully_shard(block, mesh=mesh, **options)
    fully_shard(model, mesh=mesh, **options)


def shard_from_rank0(policy, reference, mesh, precision: str | None = None, reference_offload: bool = False) -> None:
    """trainer=fsdp's start-up (PolicyGradientModule.configure_model): shard the policy and the KL term's frozen
    reference, and fill every rank's shards with global rank 0's weights.

    Only rank 0 read the weights (hicra/training/run.py); the other ranks built the model on the meta device and hold
    no memory for it until their shards arrive, one tensor at a time (torch.distributed.checkpoint's
    `broadcast_from_rank0`): a node's host memory holds one copy of the model, not one per rank. Buffers are not in
    a state dict when they are non-persistent (the rotary embedding's inv_freq) and a meta rank has no values for
    them: every buffer is broadcast from rank 0 too. Ties (tied input and output embeddings) survive: the meta
    weights are replaced in place (`to_empty`), never re-assigned one name at a time.

    `reference` (None without a KL term; built on the meta device everywhere, hicra.models.reference) is the policy
    at step 0: each rank copies its own shards from the policy's, with no exchange and no whole copy anywhere.
    `reference_offload` keeps its shards in host memory (`shard_model`'s offload)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    if isinstance(policy, FSDPModule):  # Lightning calls configure_model for validate and again for fit
        return
    # rank 0: the loaded tensors themselves (no copy), kept alive while fully_shard moves its shard into FSDP's own
    full = policy.state_dict() if dist.get_rank() == 0 else {}
    shard_model(policy, mesh, precision)
    device = _mesh_device(mesh)
    _materialize(policy, device)
    set_model_state_dict(policy, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    del full
    with torch.no_grad():
        for buffer in policy.buffers():
            dist.broadcast(buffer, src=0)
    if reference is None:
        return
    shard_model(reference, mesh, precision, offload=reference_offload)
    _materialize(reference, device)
    copy_shards(policy, reference)


def _mesh_device(mesh) -> torch.device:
    """The device a mesh's shards live on (this rank's current GPU for a CUDA mesh), as fully_shard places them."""
    if mesh.device_type == "cpu":
        return torch.device("cpu")
    return torch.device(mesh.device_type, torch.get_device_module(mesh.device_type).current_device())


def _materialize(model, device: torch.device) -> None:
    """Give a model built on the meta device uninitialised memory on `device` (its values are written next)."""
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        model.to_empty(device=device)


def copy_shards(source, target) -> None:
    """`target` := `source`, shard by shard on this rank: two models sharded alike (same names, shapes and mesh)."""
    with torch.no_grad():
        for (name, theirs), (other, mine) in zip(source.named_parameters(), target.named_parameters(), strict=True):
            if name != other:
                raise ValueError(f"copy_shards: {name} and {other} are not the same weight")
            local = mine.to_local() if hasattr(mine, "to_local") else mine
            local.copy_(theirs.to_local() if hasattr(theirs, "to_local") else theirs)
        for (_, theirs), (_, mine) in zip(source.named_buffers(), target.named_buffers(), strict=True):
            mine.copy_(theirs)


@contextlib.contextmanager
def full_weights_for_generation(model):
    """Gather a sharded model's weights once for a whole `generate` (instead of once per block per decoded token)
    and shard them again afterwards. A no-op for models that are not sharded (single device, DDP).

    For a sharded model the gather and the generation run under `no_grad` outside inference mode, whatever the caller
    runs under: on NCCL Lightning validates under `torch.inference_mode()`, where FSDP2's unshard fails ("Inference
    tensors do not track version counter") and anything it allocated would be an inference tensor that a later
    training step could not use. Leaving inference mode here, not in the Trainer's settings, keeps every caller safe
    (a `trainer.inference_mode=true` override, `validate` on any strategy); unsharded models keep inference mode.
    """
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    if not units:
        yield
        return
    with torch.inference_mode(False), torch.no_grad():  # inference_mode(False) turns grad mode on: no_grad after it
        for unit in units:
            unit.unshard()
            unit.set_reshard_after_forward(False)
        try:
            yield
        finally:
            for unit in units:
                unit.set_reshard_after_forward(True)
                unit.reshard()


def clip_gradients(parameters, max_norm: float) -> float:
    """Total gradient norm over all ranks' shards (FSDP2 gradients are DTensors), after clipping to `max_norm`."""
    norm = torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def full_state_dict(model) -> dict | None:
    """The whole model's weights on CPU, gathered from FSDP2 shards (a collective: every rank calls it); None for a
    model that is not sharded, whose own `state_dict` is already whole."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        return None
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def fully_sharded_strategy(**kwargs):
    """trainer=fsdp's strategy: Lightning's ModelParallelStrategy with every rank data-parallel (plain FSDP2) and
    crash-safe sharded checkpoints; defined in hicra/training/sharded_checkpoint.py (imported here when called, so
    that this module stays free of Lightning)."""
    from hicra.training.sharded_checkpoint import fully_sharded_strategy as strategy

    return strategy(**kwargs)
