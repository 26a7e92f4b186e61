"""A run's checkpoints as `train(cfg)` uses them: where the run starts (a new run, or the checkpoint `ckpt_path=...`
names and the MLflow run it continues), and the trainer arguments that keep `last.ckpt` and stop at a safe point.
The files themselves: checkpointing.py (writing), find_checkpoint.py (finding), resume.py (what may continue)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from hicra.errors import ConfigError
from hicra.tracking.outage import StopOnOutage
from hicra.training.checkpointing import (
    AtomicCheckpointIO,
    RunRecord,
    checkpoint_callback,
    read_run_record,
    write_run_record,
)
from hicra.training.find_checkpoint import LAST, checkpoint_to_resume
from hicra.training.hydra_job import in_sweep, named_run_dir
from hicra.training.preemption import SignalWatch, StopAtSafePoint
from hicra.training.resume import ResumePoint, config_snapshot, describe_changes, resume_point
from hicra.training.run_lock import RunLocks
from hicra.training.sharded_checkpoint import recover_interrupted_save, wait_for_recovery


def find_resume_point(cfg: DictConfig, out_dir: Path, locks: RunLocks) -> ResumePoint:
    """Where the run starts: a new run, or with `ckpt_path=...` the checkpoint and the MLflow run it continues.

    Locks the run folder's checkpoints, completes a sharded save that a kill interrupted in it (with the lock held:
    no other process writes there), finds the checkpoint (hicra/training/find_checkpoint.py: never one that would
    overwrite what the run folder holds), locks its folder too (one process per run, see run_lock.py), then checks
    that it may continue under `cfg`.
    """
    locks.acquire(out_dir / "checkpoints")
    if locks.enabled:  # rank 0 (the other ranks of a job hold no lock and read what rank 0 left)
        recovered = recover_interrupted_save(out_dir / "checkpoints" / LAST)
        if recovered:
            print(f"hicra-train: {recovered}", flush=True)
    else:
        wait_for_recovery(out_dir / "checkpoints" / LAST)
    ckpt = checkpoint_to_resume(cfg.get("ckpt_path"), out_dir, Path(cfg.paths.output_dir), named_run_dir(out_dir),
                                config_snapshot(cfg), sweep_job=in_sweep())
    if ckpt is None:
        return ResumePoint()
    locks.acquire(ckpt.parent)
    return resume_point(ckpt, cfg, read_run_record(ckpt))


def resume_line(resume: ResumePoint) -> str:
    """`resuming <ckpt> at step 4 (MLflow run ab12...), changed: trainer.max_steps (4 -> 8)`."""
    run = f" (MLflow run {resume.mlflow_run_id})" if resume.mlflow_run_id else ""
    changed = f", changed: {describe_changes(resume.changes)}" if resume.changes else ""
    return f"resuming {resume.checkpoint} at step {resume.step}{run}{changed}"


def checkpointing(cfg: DictConfig, out_dir: Path, callbacks: list, logger, watch: SignalWatch,
                  is_main: bool = True) -> dict:
    """Trainer arguments for crash-safe `last.ckpt` every `checkpoint_every_n_steps` (0 = none), with the run record in
    it and beside it (`run.json`) that lets `ckpt_path=...` continue the same MLflow run, and for the stop at a safe
    point, with a checkpoint, on SIGTERM or SIGUSR1 (StopAtSafePoint). Appends its callbacks to `callbacks`."""
    every = int(cfg.checkpoint_every_n_steps)
    if every < 0:
        raise ConfigError(f"checkpoint_every_n_steps={every} is not allowed; use 0 (off) or an integer >= 1")
    folder = out_dir / "checkpoints"
    if every > 0:
        record = {"mlflow_run_id": logger.run_id if logger is not None else None,
                  "tracking_uri": logger._tracking_uri if logger is not None else None,
                  "run_dir": str(out_dir.resolve()), "config": config_snapshot(cfg)}
        if is_main:  # Lightning writes the checkpoint itself on rank 0 only
            write_run_record(folder, record)
        callbacks += [RunRecord(record), checkpoint_callback(folder, every)]
    saves = folder / LAST if every > 0 else None
    watch.checkpoint = saves or watch.checkpoint
    callbacks.append(StopAtSafePoint(watch, saves))  # a Checkpoint too: Lightning then wants this flag on
    callbacks.append(StopOnOutage(logger if hasattr(logger, "outage") else None, saves, out_dir))
    return {"enable_checkpointing": True, "plugins": [AtomicCheckpointIO()]}
