"""What a checkpoint holds of the LightningModule beside weights, optimizer and loops, so a resumed run continues
exactly: every generator, each rank's sampling stream, the fault counters, the step histories, the planner's and the
diagnostics' state. Kept out of module.py, which computes the step."""

from __future__ import annotations

from hicra.rollout.sampling_stream import SamplingStream
from hicra.training.checkpointing import restore_rng_state, rng_state
from hicra.training.distributed import gather_objects, world_size

KEY = "hicra"  # the module's entry in a Lightning checkpoint


def save_module_state(module, checkpoint: dict) -> None:
    """A collective: Lightning asks every rank for its checkpoint dict, and every rank's sampling stream is gathered."""
    checkpoint[KEY] = {"rng": rng_state(), "faults": dict(module.faults.counts),
            "sampling": gather_objects(module.sampling_stream.state_dict(), module.trainer),
            "train_history": module.train_history, "val_history": module.val_history,
            "detector": module.detector.state_dict() if hasattr(module.detector, "state_dict") else None,
            "diagnostics": module.diagnostics.state_dict() if module.diagnostics is not None else None}


def restore_module_state(module, checkpoint: dict) -> None:
    state = checkpoint.get(KEY)
    if state is None:  # a plain Lightning checkpoint: weights and optimizer only
        return
    restore_rng_state(state["rng"])
    restore_sampling_stream(module, state.get("sampling"), int(checkpoint.get("global_step", 0)))
    module.faults.counts.update(state["faults"])
    module.train_history, module.val_history = list(state["train_history"]), list(state["val_history"])
    if state["detector"] is not None:
        module.detector.load_state_dict(state["detector"])
    if state.get("diagnostics") is not None and module.diagnostics is not None:  # absent in older checkpoints
        module.diagnostics.load_state_dict(state["diagnostics"])


def restore_sampling_stream(module, streams: list[dict] | None, step: int) -> None:
    """This rank continues its own saved stream. A checkpoint from another number of ranks (or from before per-rank
    streams) has none for it: the rank begins a new stream, seeded with the step too, so that it does not replay the
    draws of the run's first steps."""
    if streams is not None and len(streams) == world_size(module.trainer):
        module.sampling_stream.load_state_dict(streams[module.global_rank])
    else:
        module._sampling = SamplingStream(module.sampling_seed, module.global_rank, restart=1 + step)
