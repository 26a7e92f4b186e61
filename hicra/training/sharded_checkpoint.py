"""Sharded checkpoints under trainer=fsdp: `last.ckpt` is a folder in which every rank writes its own shard of the
weights and the AdamW state (torch.distributed.checkpoint, DCP) and rank 0 writes `meta.pt`, everything else a
Lightning checkpoint holds (loops, data position, random generators, the run record under RUN_KEY), as Lightning's
ModelParallelStrategy lays it out. No rank gathers the model: a 7B save is 7B/N weights + moments per rank instead of
~91 GB through rank 0. Loading reshards (DCP matches shards by their global offsets), so a run saved by 2 ranks
resumes on 1, 4 or 8.

Crash safety, as AtomicCheckpointIO gives the single file: the ranks write into `last.ckpt.saving` beside the
target; rank 0 writes `meta.pt` last (after DCP has gathered every rank's "written"), so `meta.pt` marks a complete
save; then rank 0 swaps it in with two renames (`last.ckpt` -> `last.ckpt.old`, `.saving` -> `last.ckpt`) and fsyncs
the folder. A SIGKILL at any point leaves a complete checkpoint under one of the three names, and
`recover_interrupted_save` (run at start-up by the process that holds the run's lock) puts the newest complete one
back under `last.ckpt` and removes the rest.

Reading is data only, as everywhere in hicra: `meta.pt` loads with weights_only, and DCP's own `.metadata` (a
pickle, which DCP's reader would unpickle with no restriction) is read by an unpickler that builds only DCP's
metadata classes.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.strategies import ModelParallelStrategy
from torch.distributed.checkpoint import FileSystemReader

from hicra.errors import TrainingError

META = "meta.pt"  # Lightning's name (lightning_fabric.utilities.load._METADATA_FILENAME): its loader finds it too
DCP_METADATA = ".metadata"
STAGING, RETIRED = ".saving", ".old"  # suffixes of the save in progress and of the checkpoint it replaces
WEIGHTS = "state_dict"  # the weights' entry in the DCP state; the optimizers' are optimizer_<i>


def staging_path(target: Path) -> Path:
    return target.with_name(target.name + STAGING)


def retired_path(target: Path) -> Path:
    return target.with_name(target.name + RETIRED)


def is_sharded(path: Path) -> bool:
    """A folder written by a sharded save (complete or damaged: DCP's `.metadata` or our `meta.pt` in it)."""
    return path.is_dir() and ((path / META).exists() or (path / DCP_METADATA).exists())


def _complete(path: Path) -> bool:
    """A save that finished: a full checkpoint file (written by an atomic rename) or a folder with `meta.pt`."""
    return path.is_file() or (path.is_dir() and (path / META).is_file())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_meta(state: dict[str, Any], folder: Path) -> None:
    tmp = folder / f"{META}.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / META)
    _fsync_dir(folder)


def swap_in(staging: Path, target: Path) -> None:
    """Rank 0, once `staging` is complete: the two renames, each durable before the next step."""
    retired = retired_path(target)
    if target.exists():
        _remove(retired)  # a leftover of a swap that already finished
        os.rename(target, retired)  # crash from here: recover_interrupted_save takes the complete `staging`
    os.rename(staging, target)
    _fsync_dir(target.parent)
    _remove(retired)


def recover_interrupted_save(target: Path) -> str | None:
    """Puts the newest complete checkpoint of an interrupted save back under `target` and removes the leftovers;
    what it did, or None when there was nothing to do. Only for the process that holds the run's lock."""
    staging, retired = staging_path(target), retired_path(target)
    if not (staging.exists() or retired.exists()):
        return None
    done = None
    if not target.exists():
        for source in (staging, retired):  # the newer first
            if _complete(source):
                os.rename(source, target)
                done = f"completed an interrupted checkpoint save: {target} is the one from {source.name}"
                break
    for leftover in (staging, retired):
        _remove(leftover)
    _fsync_dir(target.parent)
    return done or f"removed what an interrupted checkpoint save left beside {target}"


def wait_for_recovery(target: Path, timeout_s: float = 120.0, poll_s: float = 0.2) -> None:
    """For the ranks that do not hold the run's lock: wait while what an interrupted save left beside `target` is
    still there, i.e. until rank 0's `recover_interrupted_save` has put the checkpoint back, so that every rank finds
    the same checkpoint (one looking before rank 0 recovered would see none and start afresh). Returns after
    `timeout_s` in any case; a rank that still disagrees then fails with the others (fail_together.py)."""
    deadline = time.monotonic() + timeout_s
    while (staging_path(target).exists() or retired_path(target).exists()) and time.monotonic() < deadline:
        time.sleep(poll_s)


# --- reading without running code ------------------------------------------------------------------------------------

_METADATA_CLASSES = {  # every global a `.metadata` of DCP's FileSystemWriter refers to; none runs code
    *(("torch.distributed.checkpoint.metadata", name) for name in (
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata", "TensorProperties",
        "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),  # a layout looked up by its name
    ("torch", "Size"), ("pathlib", "PosixPath"), ("collections", "OrderedDict"),
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _METADATA_CLASSES:
            return super().find_class(module, name)
        value = getattr(torch, name, None) if module == "torch" else None
        if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):  # torch.float32, torch.strided, ...
            return value
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name} is not part of a checkpoint's metadata")


class SafeFileSystemReader(FileSystemReader):
    """DCP's reader, with its `.metadata` unpickled by `_MetadataUnpickler` (the shards' bytes entries already load
    with weights_only in DCP itself)."""

    def read_metadata(self, *args: Any, **kwargs: Any):
        from torch.distributed.checkpoint.metadata import StorageMeta

        with open(Path(self.path) / DCP_METADATA, "rb") as f:
            metadata = _MetadataUnpickler(io.BytesIO(f.read())).load()
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def read_meta(path: Path) -> dict[str, Any]:
    """`meta.pt`: everything but the weights and optimizer state (weights_only)."""
    return torch.load(path / META, map_location="cpu", weights_only=True)


def weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """{parameter name: global shape} of the weights in a sharded checkpoint, read from DCP's metadata only."""
    metadata = SafeFileSystemReader(path).read_metadata()
    shapes = {}
    for key, where in (metadata.planner_data or {}).items():
        if where[0] == WEIGHTS and hasattr(metadata.state_dict_metadata.get(key), "size"):
            shapes[".".join(map(str, where[1:]))] = tuple(metadata.state_dict_metadata[key].size)
    return shapes


# --- the strategy ----------------------------------------------------------------------------------------------------

class FullyShardedStrategy(ModelParallelStrategy):
    """FSDP2 over every rank (no tensor parallelism), saving sharded checkpoints crash-safely; with
    `save_distributed_checkpoint=False`, one full file gathered on rank 0 (through AtomicCheckpointIO) instead."""

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes  # Lightning's "auto" shards over nodes only
        super().setup_environment()

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options=None) -> None:
        target = Path(self.broadcast(str(filepath)))
        staging = staging_path(target)
        if not self._save_distributed_checkpoint and not target.is_dir():
            return super().save_checkpoint(checkpoint, target)  # a file replacing a file: one atomic rename
        try:
            if self.is_global_zero:
                _remove(staging)  # what a killed save left (recovery at start-up removes it too)
                if self._save_distributed_checkpoint:
                    staging.mkdir(parents=True)
            self.barrier("hicra_checkpoint_staging")
            if self._save_distributed_checkpoint:
                self._save_shards(checkpoint, staging)
            else:  # a full file replacing a sharded folder: written beside it, then swapped in
                super().save_checkpoint(checkpoint, staging)
            if self.is_global_zero:
                swap_in(staging, target)
        except OSError as err:  # a full disk, a quota, a vanished mount: the previous checkpoint is untouched
            if self.is_global_zero:
                _remove(staging)
            raise TrainingError(f"cannot write checkpoint {target} ({err.strerror or err}); "
                                f"{'the previous checkpoint is intact' if target.exists() else 'none was written yet'}"
                                f": free space (or fix the folder) and continue with ckpt_path={target}") from None
        self.barrier("hicra_checkpoint_swapped")  # no rank goes on (or exits) before the new checkpoint is in place

    def _save_shards(self, checkpoint: dict[str, Any], folder: Path) -> None:
        import torch.distributed.checkpoint as dcp

        shards = {WEIGHTS: checkpoint.pop("state_dict")}
        shards |= {f"optimizer_{i}": state for i, state in enumerate(checkpoint.pop("optimizer_states", []))}
        dcp.save(shards, checkpoint_id=folder)  # returns on rank 0 after every rank's shard is written and fsynced
        if self.is_global_zero:
            _write_meta(checkpoint, folder)  # last: its presence marks a complete save

    def load_checkpoint(self, checkpoint_path, weights_only=None) -> dict[str, Any]:
        """Sharded: each rank reads the parts of every tensor its shards cover (any saved world size); a full file:
        Lightning's load. Both with weights_only, whatever the caller asks."""
        path = Path(self.broadcast(str(checkpoint_path)))
        if not path.is_dir():
            return super().load_checkpoint(path, weights_only=True)
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
            set_optimizer_state_dict,
        )

        weights = {WEIGHTS: get_model_state_dict(self.model)}
        dcp.load(weights, storage_reader=SafeFileSystemReader(path))
        self.model.load_state_dict(weights[WEIGHTS], strict=self.lightning_module.strict_loading)
        for i, optimizer in enumerate(self.optimizers):
            state = {f"optimizer_{i}": get_optimizer_state_dict(self.model, optimizer)}
            dcp.load(state, storage_reader=SafeFileSystemReader(path))
            set_optimizer_state_dict(self.model, optimizer, optim_state_dict=state[f"optimizer_{i}"],
                                     options=StateDictOptions(cpu_offload=True))
        return read_meta(path)


def fully_sharded_strategy(save_distributed_checkpoint: bool = True, **kwargs) -> FullyShardedStrategy:
    """trainer=fsdp's strategy (conf/trainer/fsdp.yaml): every rank data-parallel, for any `trainer.devices` x
    `trainer.num_nodes`; sharded checkpoints unless `save_distributed_checkpoint=False`."""
    return FullyShardedStrategy(data_parallel_size="auto", tensor_parallel_size=1,
                                save_distributed_checkpoint=save_distributed_checkpoint, **kwargs)


fully_sharded_strategy.loads_sharded_checkpoints = True  # asked by hicra.training.resume before a resume
