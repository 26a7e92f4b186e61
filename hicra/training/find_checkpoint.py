"""Which checkpoint `ckpt_path=...` names, and whether the run folder may take it.

`ckpt_path=last` means the newest checkpoint of one run. With the run folder named on the command line
(`hydra.run.dir=...`, or `hydra.sweep.dir=...` for a job of a sweep), that folder's own. Without one it is looked for
under `paths.output_dir`, which a team often shares: only checkpoints the invoking user owns and whose recorded
experiment config matches the command's (hicra.training.resume.config_changes) qualify, so another user's file is
never opened and an unrelated run is never continued; when they belong to more than one run the choice is refused,
not guessed. Within a run, the newest is the one at the highest step: `last.ckpt`, or a `last-v<N>.ckpt` that
Lightning's version counter wrote beside it when a moved run folder was resumed before hicra turned that counter off.

`ckpt_path=auto` means this run folder's own checkpoint when it has one, else a new run: what a job that SLURM
requeues (hydra/launcher=slurm_gpu) runs with, since it re-runs the same command in the same folder after a stop.
It never looks elsewhere, so it cannot continue another run.

A checkpoint is a file, or under trainer=fsdp a folder of shards (hicra/training/sharded_checkpoint.py): both are
found, compared and refused the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hicra.errors import ConfigError
from hicra.options import CKPT_KEYWORDS
from hicra.training.resume import RUN_KEY, config_changes, load_checkpoint

LAST = "last.ckpt"
KEYWORD_LAST, AUTO = CKPT_KEYWORDS  # ckpt_path=auto: the run folder's own checkpoint if any, else start
ALLOWED = "last, auto, a .ckpt file or sharded .ckpt folder, or a run folder or its checkpoints/"
NAMES = (LAST, "last-v*.ckpt")  # what a run's checkpoint folder may hold
SEARCHED = ("runs", "multiruns")  # where `ckpt_path=last` looks under paths.output_dir


@dataclass(frozen=True)
class Candidate:
    """A readable checkpoint: the run it belongs to (its MLflow run id, else its folder), its step and the config
    it was trained with (None for checkpoints from before run records)."""

    path: Path
    run: str
    step: int
    mtime: float
    config: dict[str, Any] | None


def peek(path: Path) -> dict[str, Any] | None:
    """The checkpoint (weights_only, memory-mapped), or None when it is not a readable hicra checkpoint."""
    try:
        return load_checkpoint(path)
    except ConfigError:
        return None


def exists(path: Path) -> bool:
    """A checkpoint by its name: a file, or a folder (sharded; whether it reads is `peek`'s question)."""
    return path.is_file() or path.is_dir()


def candidate(path: Path) -> Candidate | None:
    state = peek(path)
    if state is None:
        return None
    record = state.get(RUN_KEY) or {}
    run = record.get("mlflow_run_id") or str(path.parent.resolve())
    return Candidate(path, run, int(state.get("global_step", 0)), path.stat().st_mtime, record.get("config"))


def newest_in(folder: Path) -> Path | None:
    """The checkpoint at the highest step in a run's checkpoint folder (then the latest written); `last.ckpt` when
    none of several is readable, so that loading it says what is wrong. None when the folder holds none."""
    files = sorted({p for name in NAMES for p in folder.glob(name) if exists(p)})
    if len(files) <= 1:
        return files[0] if files else None
    readable = [c for c in map(candidate, files) if c is not None]
    if readable:
        return max(readable, key=lambda c: (c.step, c.mtime)).path
    return folder / LAST if exists(folder / LAST) else files[0]


def checkpoint_at(value: str) -> Path:
    """An explicit `ckpt_path`: a file, a sharded checkpoint folder, or a folder holding a run's checkpoints (the run
    folder or its `checkpoints/`)."""
    from hicra.training.sharded_checkpoint import is_sharded

    path = Path(value).expanduser()
    if is_sharded(path):
        return path
    if path.is_dir():
        found = newest_in(path) or newest_in(path / "checkpoints")
        if found is None:
            raise ConfigError(f"ckpt_path={value} is a folder without a checkpoint (no {LAST} in it or in its "
                              f"checkpoints/); allowed: {ALLOWED}")
        return found
    if not path.exists():
        raise ConfigError(f"ckpt_path={value} does not exist; allowed: {ALLOWED}")
    if not path.is_file():
        raise ConfigError(f"ckpt_path={value} is not a file; allowed: {ALLOWED}")
    return path


def resolve_checkpoint(ckpt_path: str, output_dir: Path, run_dir: Path | None = None,
                       config: dict[str, Any] | None = None, sweep_job: bool = False) -> Path | None:
    """The checkpoint `ckpt_path` names. `run_dir`: the run folder the command names (None: not named); `config`:
    the command's config_snapshot, which a checkpoint found under `output_dir` must match. A job of a sweep
    (`sweep_job`) that finds no checkpoint of its own gets None: it starts, so that rerunning an interrupted sweep
    with `ckpt_path=last` continues what it can and starts the rest. A single run is refused instead."""
    if str(ckpt_path) != KEYWORD_LAST:
        return checkpoint_at(str(ckpt_path))
    if run_dir is not None:
        own = newest_in(run_dir / "checkpoints")
        if own is None and not sweep_job:
            raise ConfigError(f"ckpt_path=last: no {LAST} in the run folder the command names ({run_dir}); "
                              f"pass ckpt_path=<file>, or start the run without ckpt_path")
        return own
    return yours_for(output_dir, config or {}, sweep_job)


def yours_for(output_dir: Path, config: dict[str, Any], sweep_job: bool) -> Path | None:
    """The newest checkpoint under `output_dir` that the invoking user owns and that was trained with `config`'s
    experiment; refused when they belong to several runs (which one to continue is the user's call)."""
    files = sorted({p for top in SEARCHED for name in NAMES for p in (output_dir / top).glob(f"**/checkpoints/{name}")
                    if exists(p)})
    mine = [p for p in files if p.stat().st_uid == os.geteuid()]  # another user's file is never even opened
    found = [c for c in map(candidate, mine) if c is not None and c.config is not None
             and not config_changes(c.config, config)[0]]
    newest = {}
    for c in sorted(found, key=lambda c: (c.step, c.mtime)):
        newest[c.run] = c
    if len(newest) > 1:
        listed = ", ".join(f"{c.path} at step {c.step}" for c in list(newest.values())[-3:])
        raise ConfigError(f"ckpt_path=last is ambiguous: {len(newest)} runs under {output_dir} were trained with "
                          f"this experiment ({listed}); pass ckpt_path=<one of them>, or its run folder as "
                          f"hydra.run.dir=...")
    if newest:
        return next(iter(newest.values())).path
    if sweep_job:
        return None
    others = f"; {len(files) - len(mine)} belong to other users" if len(mine) < len(files) else ""
    raise ConfigError(f"ckpt_path=last: none of the {len(files)} checkpoints under {output_dir}/runs and "
                      f"{output_dir}/multiruns is yours and trained with this experiment{others}; pass "
                      f"ckpt_path=<file>, name the run folder with hydra.run.dir=..., or start the run without ckpt_path")


def checkpoint_to_resume(ckpt_path: str | None, out_dir: Path, output_dir: Path, run_dir: Path | None,
                         config: dict[str, Any], sweep_job: bool) -> Path | None:
    """The checkpoint this run continues (None: a new run), after checking that nothing already written is
    overwritten: a run folder that holds a checkpoint or a final model is refused unless this run continues a
    checkpoint of that very folder."""
    if str(ckpt_path) == AUTO:
        ckpt = newest_in(out_dir / "checkpoints")  # this run folder's own, or None: a new run
    else:
        ckpt = resolve_checkpoint(ckpt_path, output_dir, run_dir, config, sweep_job) if ckpt_path else None
    own = out_dir / "checkpoints" / LAST
    for existing in (own, out_dir / "final_model"):
        if existing.exists() and (ckpt is None or ckpt.parent.resolve() != own.parent.resolve()):
            raise ConfigError(f"{existing} already exists and would be overwritten; choose another hydra.run.dir "
                              f"(or resume it with ckpt_path={own})")
    return ckpt
