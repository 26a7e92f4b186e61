"""Crash-safe checkpoints and exact resume.

A checkpoint (`<run dir>/checkpoints/last.ckpt`, Lightning format) holds the policy, the optimizer, Lightning's
loop counters (global step, batch position), the data position (`PromptDataModule.state_dict`) and, through the
module's `on_save_checkpoint`, every random generator and the fault counters; through `RunRecord`, the MLflow run it
belongs to and the config it was trained with (hicra/training/resume.py checks both before a resume). `run.json`
beside it names the MLflow run too, for people and for older checkpoints.

Why our own CheckpointIO: Lightning's local save goes through an fsspec "transaction" that writes to a temp file in
the system temp dir and `shutil.move`s it, which is a copy (not a rename) when /tmp is another filesystem, and
never fsyncs. A SIGKILL during that copy leaves a truncated `last.ckpt`. Here the bytes go to a temp file in the
same folder, are fsynced, and replace the old file with one `os.replace`: a reader sees the old complete file
or the new complete one, never a partial one. Under trainer=fsdp `last.ckpt` is a folder of shards instead, written
beside it and swapped in with the same guarantee (hicra/training/sharded_checkpoint.py); trainer=fsdp with
`save_distributed_checkpoint: false` writes the single file through this class.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from hicra.errors import TrainingError
from hicra.training.resume import RUN_KEY

RUN_RECORD = "run.json"

class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into `<name>.tmp-<pid>` beside the target, fsync, then one atomic rename; loads with
    `weights_only=True` whatever Lightning asks for (it passes None, which torch's default or the environment variable
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD would decide): a checkpoint is data, never code."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        target = Path(path)
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as err:  # a full disk, a quota, a read-only or vanished mount: say so, keep the old file
            raise TrainingError(f"cannot write checkpoint {target} ({err.strerror or err}); {_what_is_kept(target)}"
                                ) from None
        finally:
            tmp.unlink(missing_ok=True)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None) -> dict[str, Any]:
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


def _what_is_kept(target: Path) -> str:
    if target.exists():  # a file, or a sharded folder this save would have replaced
        return (f"the previous checkpoint is intact: free space (or fix the folder) and continue with "
                f"ckpt_path={target}")
    return "no checkpoint of this run was written yet: free space (or fix the folder) and start it again"


def checkpoint_callback(dirpath: Path, every_n_steps: int) -> ModelCheckpoint:
    """Lightning's ModelCheckpoint writing only `last.ckpt`, every `every_n_steps` optimizer steps.

    Saved at the end of a training batch, before that step's validation: on resume Lightning re-runs the
    validation it has not seen finish (and the logger drops what MLflow already has, see `ResumableMLFlowLogger`).
    """
    # No version counter: resumed from a moved or copied run folder, Lightning no longer recognises `last.ckpt` as its
    # own and would write `last-v1.ckpt` beside it, leaving `last.ckpt` stale for the next `ckpt_path=last`.
    return ModelCheckpoint(dirpath=str(dirpath), save_top_k=0, save_last=True,  # -> `last.ckpt`
                           every_n_train_steps=every_n_steps, save_on_train_epoch_end=False,
                           enable_version_counter=False)


# --- random generators -----------------------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """Plain types and tensors only, so the checkpoint loads with torch.load(weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- which run a checkpoint belongs to --------------------------------------------------------------------------

class RunRecord(Callback):
    """Writes the run record (MLflow run id, tracking URI, run folder, config) into every checkpoint, under
    `hicra.training.resume.RUN_KEY`: the checkpoint alone says which run it continues and with which experiment,
    even when `run.json` beside it is lost."""

    def __init__(self, record: dict[str, Any]):
        self.record = record

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[RUN_KEY] = self.record


def write_run_record(checkpoint_dir: Path, record: dict[str, Any]) -> None:
    """`run.json`: the record without the config, for people and for checkpoints that predate `RunRecord`."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tmp = checkpoint_dir / f"{RUN_RECORD}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({k: v for k, v in record.items() if k != "config"}, indent=2))
    os.replace(tmp, checkpoint_dir / RUN_RECORD)


def read_run_record(checkpoint: Path) -> dict[str, Any] | None:
    """`run.json` beside `checkpoint`; None when it is missing or damaged (the checkpoint's own record decides)."""
    try:
        record = json.loads((checkpoint.parent / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
