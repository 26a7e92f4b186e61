"""Where a run's processes go, checked on the command line before anything loads (hicra.config.checks runs it for
every job): combinations that would otherwise fail minutes in, once the model has loaded.

- A sampler whose engines span several ranks (`rollout.tensor_parallel_size`, rollout=vllm: one engine per that
  many consecutive ranks) must cut the ranks into whole engines. Known here when trainer.devices is a number; with
  devices=auto each rank checks at the first rollout (hicra/rollout/vllm_groups.py), with the same line.
- A SLURM launcher must allocate what Lightning will ask for: one task per device on every node (Lightning's
  SLURMEnvironment refuses any other `--ntasks-per-node` or `--nodes` at Trainer construction), and a GPU per task.

Plain config values only: nothing is imported here, so a mistake is answered before torch loads.
"""

from __future__ import annotations

from hicra.errors import ConfigError

SLURM_LAUNCHER = "SlurmLauncher"  # hydra-submitit's class: its jobs run under SLURM, whose settings Lightning checks


def devices_per_node(trainer) -> int | None:
    """How many processes Lightning starts on each node; None when it decides on the machine (devices=auto or -1)."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return devices if devices >= 0 else None
    return len(devices) if hasattr(devices, "__len__") and not isinstance(devices, str) else None


def check_tensor_parallel(tp: int, ranks: int) -> None:
    """Every engine takes `tp` whole ranks (hicra/rollout/vllm_groups.py asks the same of the running group)."""
    if ranks % tp:
        raise ConfigError(f"rollout.tensor_parallel_size={tp} does not divide the {ranks} training ranks (trainer."
                          f"devices x trainer.num_nodes); allowed: a divisor of {ranks}, e.g. 1")


def check_rollout_ranks(cfg) -> None:
    """A sampler's tensor-parallel size against the ranks the trainer starts, when both are known numbers."""
    tp = (cfg.get("rollout") or {}).get("tensor_parallel_size")
    trainer = cfg.get("trainer") or {}
    devices, nodes = devices_per_node(trainer), trainer.get("num_nodes", 1)
    if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1 or not devices or not isinstance(nodes, int):
        return  # no such sampler, a bad value (the sampler refuses it), or ranks Lightning counts at launch
    check_tensor_parallel(tp, devices * nodes)


def check_slurm_allocation(trainer, launcher) -> None:
    """Under a SLURM launcher: tasks per node = trainer.devices, nodes = trainer.num_nodes, and at least one GPU per
    task unless the trainer runs on CPU. `launcher` is the composed `hydra.launcher` node (or None)."""
    if launcher is None or SLURM_LAUNCHER not in str(launcher.get("_target_", "")):
        return
    devices, nodes = devices_per_node(trainer), trainer.get("num_nodes", 1)
    if devices is None:  # checked first: the slurm_gpu preset's typed task count interpolates it
        raise ConfigError(f"trainer.devices={trainer.get('devices')} under a SLURM launcher: SLURM must know how many "
                          f"tasks to start; allowed: trainer.devices=<GPUs per node> (an integer)")
    tasks, gpus = launcher.get("tasks_per_node"), launcher.get("gpus_per_node")
    if tasks != devices:
        raise ConfigError(f"hydra.launcher.tasks_per_node={tasks} but trainer.devices={devices}: Lightning runs one "
                          f"SLURM task per device; allowed: hydra.launcher.tasks_per_node={devices} (hydra/launcher="
                          f"slurm_gpu sets it from trainer.devices)")
    if launcher.get("nodes") != nodes:
        raise ConfigError(f"hydra.launcher.nodes={launcher.get('nodes')} but trainer.num_nodes={nodes}; allowed: "
                          f"hydra.launcher.nodes={nodes} (hydra/launcher=slurm_gpu sets it from trainer.num_nodes)")
    if isinstance(gpus, int) and str(trainer.get("accelerator", "auto")) != "cpu" and gpus < devices:
        raise ConfigError(f"hydra.launcher.gpus_per_node={gpus} but trainer.devices={devices}: each task needs its "
                          f"own GPU; allowed: hydra.launcher.gpus_per_node >= {devices} (hydra/launcher=slurm_gpu "
                          f"sets it from trainer.devices)")


def outside_launcher(environ) -> str | None:
    """The launcher that started this process as one of several, when it is not Lightning's own: "torchrun" (or any
    torch.distributed launcher: WORLD_SIZE > 1) or "srun" (SLURM_NTASKS > 1, outside the interactive shells that
    Lightning's SLURMEnvironment also ignores); None for a single process."""
    if int(environ.get("WORLD_SIZE") or 1) > 1:
        return "torchrun"
    if int(environ.get("SLURM_NTASKS") or 1) > 1 and environ.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return "srun"
    return None


def check_one_run_folder(args: list[str], run_dir_template: str, environ) -> None:
    """Every rank must write to one run folder. A time-based `hydra.run.dir` (the default `${now:...}`) is read from
    each process's own clock; Lightning's launcher hands its ranks rank 0's folder, but torchrun and srun start every
    rank as a separate command, and ranks started a second apart would write (checkpoints, run.json, corpus) to
    different folders. No shared value can stand in for the time (TORCHELASTIC_RUN_ID is "none" unless --rdzv-id is
    given; SLURM_JOB_ID is not a time), and a broadcast after the process group exists comes after Hydra has made each
    rank's folder and the run's lock and resume point were taken in it: so the command must name the folder.
    `run_dir_template`: the composed hydra.run.dir, unresolved."""
    launcher = outside_launcher(environ)
    named = [a.split("=", 1)[1] for a in args if a.lstrip("+~").startswith("hydra.run.dir=")]
    template = named[-1] if named else run_dir_template
    if launcher is None or "${now:" not in template:
        return
    raise ConfigError(f"hydra.run.dir={template} is read from each rank's own clock under {launcher}, so ranks can "
                      f"write to different run folders; name one folder for all ranks: hydra.run.dir=<folder>, e.g. "
                      f"hydra.run.dir=outputs/runs/$SLURM_JOB_ID")


def check_placement(cfg, launcher=None) -> None:
    """One job's config (`cfg`, without its hydra node) against its sampler and, in a multirun, its launcher."""
    check_rollout_ranks(cfg)
    check_slurm_allocation(cfg.get("trainer") or {}, launcher)
