"""Checks on the command line that must fail in one line, before Hydra launches anything.

Hydra reports an unknown option as a multi-line block; users get `unknown algorithm 'foo'; allowed: ...` instead.
Then every job's keys and values are checked against the schema (hicra.config.schema), a sweep's jobs included.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from hicra.config.placement import check_one_run_folder
from hicra.errors import ConfigError

# Hydra's flags that print (help, the config, ...) instead of running a job: they show a config with bad values too.
PRINTS_ONLY = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc")


def group_options(conf_dir: Path, group: str) -> list[str]:
    """Options of a group, nested folders included (`experiment=hicra_vs_grpo/hicra`)."""
    folder = conf_dir / group
    return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml"))


def hydra_group_options(conf_dir: Path, group: str) -> list[str]:
    """Options of Hydra's own groups (`hydra/launcher`, `hydra/sweeper`, ...): Hydra's package, its installed plugins
    (joblib, submitit_slurm, optuna) and conf/hydra/<group>/ presets, as Hydra itself resolves them."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            return sorted(GlobalHydra.instance().config_loader().get_group_options(group))
    finally:
        GlobalHydra.instance().clear()


def check_group_choices(args: list[str], conf_dir: Path) -> None:
    """Every `group=option` (sweeps included) names a file conf/<group>/<option>.yaml."""
    candidates = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except HydraException as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        raise ConfigError(f"cannot parse the overrides {candidates}: {first}") from err
    for override in overrides:
        group = override.key_or_group
        if override.is_delete() or not (group.startswith("hydra/") or (conf_dir / group).is_dir()):
            continue
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        # group=[a,b] selects several options of one group (extra_loggers=[tensorboard,wandb]): each must exist
        values = [option for value in values for option in (value if isinstance(value, list) else [value])]
        allowed = hydra_group_options(conf_dir, group) if group.startswith("hydra/") else group_options(conf_dir, group)
        for value in values:
            if value is None or str(value) == "null":
                continue
            if str(value) not in allowed:
                raise ConfigError(f"unknown {group} '{value}'; allowed: {', '.join(allowed)}")


def _first_of_each_sweep(args: list[str]) -> list[str]:
    """`seed=0,1,2` -> `seed=0`: one composition stands for the sweep (group options are checked separately)."""
    candidates = [a for a in args if "=" in a and not a.startswith("-") or a.startswith("~")]
    single = []
    for override in OverridesParser.create().parse_overrides(candidates):
        key = override.key_or_group
        if key.startswith("hydra") and key not in ("hydra.run.dir", "hydra.sweep.dir") and \
                not key.startswith(("hydra/launcher", "hydra.launcher.")):
            continue  # hydra.* are Hydra's own business; output folders and the launcher's allocation are checked here
        if override.is_sweep_override():
            single.append(f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}")
        else:
            single.append(override.input_line)
    return single


def check_composes(args: list[str], conf_dir: Path, config_name: str, job_name: str = "app"):
    """Compose the config once with the user's overrides, turning Hydra's multi-line errors into one line.

    Returns the composed config (with its `hydra` node) for the checks that need values, e.g. the output folder, and
    for `--help` (hicra.config.help); `job_name` is `hydra.job.name` (Hydra's main names the job after its file).
    Composing imports none of the `_target_`s (torch, the model, ...): nothing is instantiated here.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf.errors import OmegaConfBaseException

    overrides = _first_of_each_sweep(args)
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3", job_name=job_name):
            return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_composition_error(err)) from err
    finally:
        GlobalHydra.instance().clear()


def _composition_error(err: Exception) -> str:
    """Hydra's and OmegaConf's multi-line composition errors in one line."""
    lines = [line.strip().rstrip(".") for line in str(err).strip().splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("full_key", "object_type", "reference_type"))]
    return "; ".join(useful[:3]) or repr(err)


def check_every_job(args: list[str], cfg, conf_dir: Path, config_name: str, schema) -> None:
    """Every job's config against `schema` (hicra.config.schema) before the first job starts: a sweep's jobs are
    composed one by one (hicra.config.sweep), a single run's config is `cfg`. Keys and values are checked for all
    jobs before any `_target_` is imported, so a bad value is answered at once."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf.errors import OmegaConfBaseException

    from hicra.config.placement import check_placement
    from hicra.config.sweep import jobs, varying
    from hicra.config.values import check_keys, check_target_arguments, check_values

    multirun = bool({"-m", "--multirun"} & set(args)) or str(cfg.hydra.get("mode")).endswith("MULTIRUN")
    overrides = jobs(args, cfg.hydra.sweeper.get("params")) if multirun else [[]]
    configs = [cfg]
    if multirun:
        try:
            with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
                configs = [compose(config_name=config_name, overrides=job) for job in overrides]
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(_composition_error(err)) from err
        finally:
            GlobalHydra.instance().clear()

    # The launcher only runs a multirun's jobs; its node is the main composition's (Hydra builds it once per sweep).
    launcher = cfg.hydra.get("launcher") if multirun else None

    def keys_and_values(job_cfg) -> None:
        check_keys(job_cfg, schema)
        check_values(job_cfg, schema)
        check_placement(job_cfg, launcher)  # the processes a job starts: sampler, SLURM allocation
        check_placebo_task(job_cfg)

    # A `_target_`'s arguments need its import (torch, Lightning: seconds): checked here for a sweep, whose jobs must
    # all pass before the first starts; a single run's job checks them itself before its model loads (`preflight`).
    for check in (keys_and_values, check_target_arguments) if multirun else (keys_and_values,):
        for number, (job, job_cfg) in enumerate(zip(overrides, configs)):
            try:
                check(job_cfg)
            except ConfigError as err:
                if not multirun:
                    raise
                named = " ".join(varying(job, overrides))
                raise ConfigError(f"job {number} of {len(configs)}{f' ({named})' if named else ''}: {err}") from None


BUNDLED_PLACEBO = "bundled://placebo_grams_"  # bundled://placebo_grams_<dataset>.txt: drawn from that task's replies
GRAM_DATA = Path(__file__).resolve().parents[1] / "planning" / "data"  # hicra/planning/data/, read without torch


def check_placebo_task(cfg) -> None:
    """A shipped placebo list holds random n-grams of one task's replies (`bundled://placebo_grams_<dataset>.txt`,
    conf/planner/placebo_grams.yaml picks the task's own): on another task they are not its phrases and mark nothing
    like the grams' share, so a task without a shipped list draws its own."""
    planner, task = cfg.get("planner"), cfg.get("task")
    path = str(planner.get("grams_path") or "") if planner is not None else ""
    if not path.startswith(BUNDLED_PLACEBO):
        return
    drawn_from = path[len(BUNDLED_PLACEBO):].removesuffix(".txt")
    shipped = sorted(p.stem[len("placebo_grams_"):] for p in GRAM_DATA.glob("placebo_grams_*.txt"))
    dataset = task.get("dataset") if task is not None else None
    if dataset != drawn_from or drawn_from not in shipped:
        name = dataset or (task.get("path") if task is not None else None) or "without a dataset"
        raise ConfigError(f"planner.grams_path={path}: hicra ships placebo lists (random n-grams of a task's replies) "
                          f"for {', '.join(shipped)} only, but the task is {name}; allowed: a list drawn from this "
                          f"task's replies, `hicra-grams placebo --mlflow-run <a run of this task> --out placebo.txt`, "
                          f"then planner.grams_path=placebo.txt")


def check_output_folder(cfg, multirun: bool) -> None:
    """The run (or sweep) folder can be created: checked on its nearest existing ancestor, without creating it
    (Hydra creates it, with a stack trace when it cannot)."""
    import tempfile

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    folder = Path(str(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir)).expanduser().absolute()
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    try:
        if not ancestor.is_dir():
            raise NotADirectoryError(f"{ancestor} is a file")
        with tempfile.NamedTemporaryFile(dir=ancestor, prefix=".hicra-write-check-"):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise ConfigError(f"{key}={folder} cannot be created ({reason} at {ancestor}); "
                          f"set paths.output_dir (or {key}) to a folder you can write to") from None



def run_dir_template(cfg) -> str:
    """hydra.run.dir as composed, its interpolations (`${now:...}`) not resolved."""
    from omegaconf import OmegaConf

    return str(OmegaConf.to_container(cfg.hydra.run, resolve=False).get("dir", ""))


def run_checked(prog: str, hydra_main, conf_dir: Path, config_name: str, job_name: str,
                output_folder: bool = False, schema=None) -> None:
    """A console script's whole entry point: check the command line (options, composition, the run folder for a
    job that writes one, and every job's keys and values against `schema`) and answer `--help`, then hand over to
    Hydra. Options, composition, `--help` and values are answered before anything heavy loads.

    A mistake is one line `<prog>: error: ...` and exit status 2.
    """
    import sys

    from hicra.config.help import app_help, wants_help

    args = sys.argv[1:]
    try:
        check_group_choices(args, conf_dir)
        cfg = check_composes(args, conf_dir, config_name, job_name=job_name)
        help_text = app_help(cfg, args, conf_dir) if wants_help(args) else None
        if help_text is None and output_folder:
            check_output_folder(cfg, multirun=bool({"-m", "--multirun"} & set(args)))
            if not {"-m", "--multirun"} & set(args):  # a sweep's jobs get the sweep folder Hydra resolved once
                check_one_run_folder(args, run_dir_template(cfg), os.environ)
        if schema is not None and not set(args) & set(PRINTS_ONLY):
            check_every_job(args, cfg, conf_dir, config_name, schema)
    except ConfigError as err:
        print(f"{prog}: error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    if help_text is not None:
        print(help_text)  # Hydra's --help text, without its 1.5 s of listing config groups (hicra.config.help)
        return
    hydra_main()
