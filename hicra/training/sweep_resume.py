"""Continuing an interrupted sweep is one command: the same `hicra-train -m ...` with `ckpt_path=last`.

Each job then continues its own checkpoint when it has one and starts when it has none (find_checkpoint.py: its
folder's when `hydra.sweep.dir` is named, else the invoking user's checkpoint of that job's experiment under
`paths.output_dir`). Which job does what is decided here for every job before the first starts, with the checks a
resume makes (the checkpoint readable and of this experiment; nothing overwritten), so that a refusal is not met by
job 2 after job 1 has trained; and two jobs may not continue one run (jobs that differ only in keys a resume may
change, such as `trainer.max_steps`), which would train it twice.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from hicra.errors import ConfigError


def check_sweep_resume(args: list[str], conf_dir: Path, config_name: str) -> str:
    """Raises ConfigError (one line naming the job) when a job cannot start as asked; returns what will happen."""
    from hicra.config.sweep import jobs, varying
    from hicra.training.checkpointing import read_run_record
    from hicra.training.find_checkpoint import checkpoint_to_resume
    from hicra.training.resume import config_snapshot, resume_point

    hydra_args = [a for a in args if a.startswith(("hydra.", "hydra/")) and "=" in a]
    named = any(a.startswith("hydra.sweep.dir=") for a in args)
    first = _compose(conf_dir, config_name, jobs(args)[:1], hydra_args)[0]
    if not str(first.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):  # Optuna draws its jobs as it goes
        return f"ckpt_path={first.ckpt_path}: each trial looks for its own checkpoint as it starts"
    overrides = jobs(args, first.hydra.sweeper.get("params"))
    plans, continued = [], {}
    for number, (job, cfg) in enumerate(zip(overrides, _compose(conf_dir, config_name, overrides, hydra_args))):
        label = f"job {number} of {len(overrides)} ({' '.join(varying(job, overrides))})"
        out_dir, cfg = _job_folder(cfg, number), _without_hydra(cfg)
        try:
            ckpt = checkpoint_to_resume(cfg.get("ckpt_path"), out_dir, Path(cfg.paths.output_dir),
                                        out_dir if named else None, config_snapshot(cfg), sweep_job=True)
            point = resume_point(ckpt, cfg, read_run_record(ckpt)) if ckpt is not None else None
        except ConfigError as err:
            raise ConfigError(f"{label}: {err}") from None
        if point is not None:
            run = point.mlflow_run_id or str(ckpt.parent.resolve())
            if run in continued:
                raise ConfigError(f"{label} and {continued[run]} would both continue {ckpt} (they differ only in keys "
                                  f"a resume may change); sweep those keys in separate commands")
            continued[run] = label
        plans.append(f"job {number} {'continues step ' + str(point.step) if point else 'starts'}")
    return f"ckpt_path={first.ckpt_path}: " + ", ".join(plans)


def _compose(conf_dir: Path, config_name: str, overrides: list[list[str]], extra: list[str] = ()) -> list[DictConfig]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            return [compose(config_name=config_name, overrides=[*job, *extra], return_hydra_config=True)
                    for job in overrides]
    finally:
        GlobalHydra.instance().clear()


def _job_folder(cfg: DictConfig, number: int) -> Path:
    """`hydra.sweep.dir/hydra.sweep.subdir` of job `number`, as the launcher will name it."""
    with open_dict(cfg):
        cfg.hydra.job.num = number
    return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)


def _without_hydra(cfg: DictConfig) -> DictConfig:
    """The job's own config, as its run sees it (the record in a checkpoint has no `hydra` node)."""
    return OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
