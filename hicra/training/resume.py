"""Whether `ckpt_path=...` may continue a run, and as which MLflow run: checked before the model loads or any MLflow
run is touched, so a refusal changes nothing already written.

A checkpoint carries its run record (`RUN_KEY`: MLflow run id, tracking URI, run folder and the config it was
trained with, unresolved). Resuming compares that config with the command's: a change to a key that defines the
experiment is refused in one line naming the keys; a change to a key in `SAFE_TO_CHANGE` is allowed and recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hicra.errors import ConfigError

RUN_KEY = "hicra_run"  # the run record's key in a checkpoint

# What a resumed run may change: how long it trains, how often it observes and stores itself, and where it runs
# and logs (a requeued job may land on other hardware). Every other key defines the experiment (algorithm, planner,
# group size, model, task, seed, optimizer, rollout, precision, prompts per step, ...): changed on resume, the run's
# params and name would describe an experiment it no longer is. A group name covers all its keys.
SAFE_TO_CHANGE = (
    "trainer.max_steps",  # extends a run: the prompt order is a prefix-stable seeded stream
    "val_every_n_steps", "val_batch_size", "completions_every_n_steps", "completions_per_sample",
    "checkpoint_every_n_steps", "save_final_model", "optimized_metric", "faults.max_skipped_updates_in_a_row",
    "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy",
    "trainer.log_every_n_steps", "trainer.enable_progress_bar",
    "paths", "logger", "extra_loggers",  # trackers beside MLflow: where metrics also go, not what is trained
)
_ABSENT = "(absent)"


@dataclass(frozen=True)
class ResumePoint:
    """Where a run starts: nothing (a new run), or a checkpoint with the MLflow run it continues."""

    checkpoint: Path | None = None
    mlflow_run_id: str | None = None
    step: int = 0
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # safe keys changed: key -> (before, now)
    weight_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def config_snapshot(cfg: DictConfig) -> dict[str, Any]:
    """The config as dotted keys with unresolved values (`${paths.data_dir}/x` stays as written, so a moved project
    folder is no change), without `ckpt_path` (where a run resumed from is no setting of it); plain types only, so
    the checkpoint still loads with torch.load(weights_only=True)."""
    snapshot = flat_keys(OmegaConf.to_container(cfg, resolve=False))
    snapshot.pop("ckpt_path", None)
    return snapshot


def flat_keys(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat |= flat_keys(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def is_safe_to_change(key: str) -> bool:
    return any(key == safe or key.startswith(safe + ".") for safe in SAFE_TO_CHANGE)


def config_changes(before: dict[str, Any], now: dict[str, Any]) -> tuple[dict, dict]:
    """(experiment keys changed, safe keys changed), each {key: (before, now)}."""
    unsafe, safe = {}, {}
    for key in sorted(before.keys() | now.keys()):
        old, new = before.get(key, _ABSENT), now.get(key, _ABSENT)
        if old != new and not (old == _ABSENT and _is_off(new)):
            (safe if is_safe_to_change(key) else unsafe)[key] = (old, new)
    return unsafe, safe


def _is_off(value: Any) -> bool:
    """A key newer than the checkpoint, at the value that leaves its feature off (every new option ships off), is what
    the run was trained with: without this, each new key would make every older checkpoint unresumable."""
    return value is None or value is False or value == "none" or value == {} or (
        type(value) in (int, float) and value == 0)


def describe_changes(changes: dict[str, tuple[Any, Any]], limit: int = 6) -> str:
    shown = [f"{key} ({_short(old)} -> {_short(new)})" for key, (old, new) in list(changes.items())[:limit]]
    more = len(changes) - limit
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _short(value: Any, width: int = 60) -> str:
    text = str(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def load_checkpoint(path: Path) -> dict:
    """The checkpoint with its tensors memory-mapped (reading the record copies no weights), loaded with
    `weights_only=True`: tensors, plain containers and numbers, nothing that runs code. hicra's own checkpoints hold
    nothing else (see `config_snapshot`, `rng_state`), so a file that needs more was planted or written by other
    code, and is refused before any of it runs. A truncated or empty file is refused in one line too: the run it
    belongs to is left exactly as it is. A sharded checkpoint (a `last.ckpt` folder, trainer=fsdp): its `meta.pt`,
    everything but the weights and optimizer state (hicra/training/sharded_checkpoint.py)."""
    import pickle

    import torch

    try:
        if path.is_dir():
            return _sharded_meta(path)
        if path.stat().st_size == 0:
            raise EOFError("empty file")
        if not _is_torch_zip(path):
            raise ConfigError(f"ckpt_path={path} is not a hicra checkpoint (not a file torch.save writes); it was "
                              f"not loaded and nothing was changed")
        return torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as err:
        held = re.search(r"GLOBAL (\S+)", str(err))
        raise ConfigError(f"ckpt_path={path} is not a hicra checkpoint: it holds objects hicra does not load "
                          f"({held.group(1) if held else 'not tensors or plain values'}); it was not loaded and "
                          f"nothing was changed") from None
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure to read means the file cannot be resumed
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ConfigError(f"ckpt_path={path} is damaged ({reason}); nothing was changed: restore the file, resume "
                          f"from another checkpoint, or start a new run without ckpt_path") from None


def _sharded_meta(path: Path) -> dict:
    """A sharded checkpoint's `meta.pt`, once its shards' index (DCP's `.metadata`) reads as data too."""
    from hicra.training.sharded_checkpoint import DCP_METADATA, META, is_sharded, read_meta, weight_shapes

    if not is_sharded(path):
        raise ConfigError(f"ckpt_path={path} is a folder but not a sharded checkpoint (no {META} or {DCP_METADATA} "
                          f"in it); it was not loaded and nothing was changed")
    for part in (META, DCP_METADATA):
        if not (path / part).is_file():
            raise FileNotFoundError(f"{part} is missing")
    weight_shapes(path)  # unpickles the index with the restricted unpickler: refused here, not at the resume
    return read_meta(path)


def _is_torch_zip(path: Path) -> bool:
    """torch.save's format is a zip archive; a truncated one still starts with the zip header (and reads as
    damaged), anything else is no checkpoint at all."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def resume_point(checkpoint: Path, cfg: DictConfig, run_json: dict[str, Any] | None) -> ResumePoint:
    """Reads `checkpoint` and checks it may continue under `cfg`. `run_json`: the record beside it (None when
    missing or unreadable), used only for checkpoints written before checkpoints carried their own record."""
    state = load_checkpoint(checkpoint)
    record, safe = state.get(RUN_KEY), {}
    if record is not None:
        unsafe, safe = config_changes(record["config"], config_snapshot(cfg))
        if unsafe:
            raise ConfigError(f"ckpt_path={checkpoint} was trained with another experiment: "
                              f"{describe_changes(unsafe, limit=8)}; a resumed run may change only "
                              f"{', '.join(SAFE_TO_CHANGE)} (start a new run to change the others)")
    run_id = (record or run_json or {}).get("mlflow_run_id")
    if run_id is None and cfg.logger.get("_target_"):
        if record is None and run_json is None:
            raise ConfigError(f"ckpt_path={checkpoint}: cannot tell which MLflow run it belongs to (its run.json is "
                              f"missing or damaged and the checkpoint predates run records); restore "
                              f"{checkpoint.parent / 'run.json'} or start a new run without ckpt_path")
        raise ConfigError(f"ckpt_path={checkpoint} was trained without MLflow (logger=none); resume it with "
                          f"logger=none (a new MLflow run would hold only part of its history)")
    check_strategy_loads(checkpoint, cfg)
    shapes = saved_weight_shapes(checkpoint, state)
    return ResumePoint(checkpoint, run_id, int(state.get("global_step", 0)), safe, shapes)


def saved_weight_shapes(checkpoint: Path, state: dict) -> dict[str, tuple[int, ...]]:
    if checkpoint.is_dir():
        from hicra.training.sharded_checkpoint import weight_shapes

        return weight_shapes(checkpoint)
    return {key: tuple(value.shape) for key, value in state.get("state_dict", {}).items()}


def check_strategy_loads(checkpoint: Path, cfg: DictConfig) -> None:
    """A sharded checkpoint resumes only under a strategy that reads shards (trainer=fsdp, on any number of ranks);
    said before anything loads, instead of a stack trace from Lightning's loader."""
    if not checkpoint.is_dir():
        return
    from hydra.utils import get_object

    target = OmegaConf.select(cfg, "trainer.strategy._target_", default=None)
    try:
        loads = getattr(get_object(target), "loads_sharded_checkpoints", False) if target else False
    except Exception:  # noqa: BLE001 - a target that does not import cannot load shards either
        loads = False
    if not loads:
        raise ConfigError(f"ckpt_path={checkpoint} is a sharded checkpoint (trainer=fsdp); resume it with "
                          f"trainer=fsdp (any trainer.devices), or export its weights with hicra-export")


def check_model_fits(point: ResumePoint, module) -> None:
    """A model of another size than the checkpoint's is refused before the MLflow run is touched (for checkpoints
    without a run record, whose config cannot be compared)."""
    if point.checkpoint is None:
        return
    now = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    for key in sorted(now.keys() | point.weight_shapes.keys()):
        before, current = point.weight_shapes.get(key, _ABSENT), now.get(key, _ABSENT)
        if before != current:
            raise ConfigError(f"ckpt_path={point.checkpoint} holds another model ({key}: {before} in the checkpoint, "
                              f"{current} now); resume with the model settings it was trained with")
