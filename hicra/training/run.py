"""What `hicra-train` runs once its command line is checked (hicra.training.cli): preflight checks, the logger, the
model and LightningModule, checkpointing, fit, the summary, and the sweepers' objective.

Kept apart from the CLI so that a bad option or `--help` is answered before torch, Lightning and transformers load
(seconds): hicra.training.cli imports this module only inside Hydra's main.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import sys
import warnings
from pathlib import Path

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from hicra.config.instantiate import build
from hicra.config.schema import TRAIN
from hicra.config.values import check_config
from hicra.errors import ConfigError
from hicra.models.lora import save_final_model
from hicra.models.reference import build_reference
from hicra.tracking.dataset_input import log_task_datasets
from hicra.tracking.extra_loggers import build_extra_loggers, check_extra_loggers, finish_extra_loggers
from hicra.tracking.model_logging import check_model_logging, log_final_model
from hicra.tracking.outage import StopOnOutage
from hicra.tracking.run_end import ended_on_failure
from hicra.tracking.store import (
    absolute_artifact_location,
    absolute_tracking_uri,
    check_run_resumable,
    check_store,
    check_tracking_uri,
    default_run_name,
    describe_run,
    ensure_experiment,
    log_run_metadata,
    mark_running,
    not_stored_note,
    quiet_mlflow,
    run_description,
    store_lock,
)
from hicra.training.callbacks import CompletionSampleLogger, CorrectCompletionsRecorder
from hicra.training.checkpointing import (
    AtomicCheckpointIO,
    RunRecord,
    checkpoint_callback,
    read_run_record,
    write_run_record,
)
from hicra.training.cli import COMMAND_LINE_ENV
from hicra.training.context_length import check_fits_context, longest_prompt_tokens
from hicra.training.data import PromptDataModule, check_ranks_divide
from hicra.training.distributed import full_state_dict
from hicra.training.find_checkpoint import LAST, checkpoint_to_resume
from hicra.training.memory_check import log_plan, plan_run
from hicra.training.module import PolicyGradientModule
from hicra.training.precision import check_updates_survive
from hicra.training.preemption import SignalWatch, StopAtSafePoint
from hicra.training.resume import ResumePoint, check_model_fits, config_snapshot, describe_changes, resume_point
from hicra.training.run_lock import RunLocks
from hicra.training.summary import format_summary
from hicra.training.system_metrics import SystemMetrics

# Lightning notices that prompts bypass device transfer (on purpose: they are strings) and advertises services.
warnings.filterwarnings("ignore", message=".*transfer_batch_to_device.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


class LightningChatter(logging.Filter):
    """Lightning's info lines that give a user nothing to act on: advertisements ("💡 Tip: ... litlogger / litmodels"),
    device availability ("GPU available: False, used: False", "TPU available: ..."; `device_line` says it in one
    line), echoes of settings hicra-train chose ("`Trainer(val_check_interval=1)` was configured so ...") and the
    normal end of fit ("`Trainer.fit` stopped: `max_steps=2` reached."; the summary follows). Its other info lines
    (resuming from a checkpoint, mixed precision, ...) and all its warnings still show."""

    NOISE = re.compile(r"💡 Tip: |(GPU|TPU) available: |`Trainer\(\w+=1(\.0)?\)` was configured so |"
                       r"`Trainer\.fit` stopped: `max_steps=")

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.NOISE.match(record.getMessage())


# rank_zero_info logs to the rank_zero logger of whichever Lightning package set it last (lightning_utilities' module
# global): the standalone packages here, the unified `lightning` package elsewhere.
for _name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
              "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(LightningChatter())


def hydra_choices() -> dict[str, str]:
    """The config groups' chosen options; an optional group left unset (`experiment`) is absent, not "None"."""
    if not HydraConfig.initialized():
        return {}
    return {g: str(o) for g, o in HydraConfig.get().runtime.choices.items()
            if not g.startswith("hydra") and o is not None}


SWEEP_FUNCTION = re.compile(r"^(range|choice|interval|glob)\(")


def is_sweep(value: str) -> bool:
    """Hydra's sweep syntax: `a,b` (a comma outside a list, dict or quoted string) or a sweep function."""
    return bool(SWEEP_FUNCTION.match(value)) or ("," in value and not value.startswith(("[", "{", "'", '"')))


def swept_overrides() -> dict[str, str]:
    """{key: this job's value} for the keys a multirun sweeps (`key=a,b` or `range(...)` on its command line, or
    `hydra.sweeper.params` in a config): what tells the jobs of one sweep apart. Empty for a single run."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}
    hydra = HydraConfig.get()
    argv = json.loads(os.environ.get(COMMAND_LINE_ENV, "null")) or sys.argv[1:]  # set by hicra-train's main
    pairs = [a.split("=", 1) for a in argv if "=" in a and not a.startswith("-")]
    swept = {key.lstrip("+~") for key, value in pairs if is_sweep(value)}
    swept |= set((hydra.sweeper.get("params") or {}).keys())
    own = dict(o.lstrip("+~").split("=", 1) for o in hydra.overrides.task if "=" in o)
    return {key: own[key] for key in sorted(swept) if key in own}


def preflight(cfg: DictConfig, choices: dict[str, str]):
    """Everything that can be checked before a model loads (seconds, not minutes)."""
    check_config(cfg, TRAIN)  # keys, typed values, `_target_` arguments; the CLI checked them for every job already
    algorithm = build(cfg.algorithm)  # probes its bound functions
    if algorithm.needs_planning_mask and not getattr(get_class(cfg.planner._target_), "marks_planning", True):
        raise ConfigError(
            f"algorithm={choices.get('algorithm', 'hicra')} needs planning tokens but "
            f"planner={choices.get('planner', 'none')} marks none (it would silently be GRPO); "
            f"allowed: planner=strategic_grams or planner=high_entropy")
    for group in ("planner", "diagnostics"):  # a missing, non-UTF-8 or gram-less grams file fails before the model
        if cfg.get(group) is not None and cfg[group].get("grams_path") is not None:
            from hicra.planning.strategic_grams import load_grams

            try:
                load_grams(cfg[group].grams_path)
            except ConfigError as err:
                raise ConfigError(f"{group}.grams_path={cfg[group].grams_path}: {err}") from None
    sampler = build(cfg.rollout)
    if cfg.get("lora") is not None and not getattr(sampler, "supports_lora", True):
        raise ConfigError(f"rollout={choices.get('rollout', 'hf')} does not support LoRA policies; allowed: "
                          f"lora=none, or rollout=hf with lora={choices.get('lora', 'default')}")
    task = build(cfg.task)
    task.train_examples(), task.val_examples()  # a missing or malformed data file fails here, before the model
    check_devices(cfg)  # after the config's own values: a missing task.path is the first thing to hear about
    # Dr.GRPO's constant normaliser must not change with micro-batch or step: default to the generation budget.
    algorithm = dataclasses.replace(algorithm, norm_length=algorithm.norm_length or sampler.max_new_tokens)
    return algorithm, sampler, task


def check_devices(cfg: DictConfig) -> None:
    """A trainer the machine cannot run fails here, in one line, not deep inside Lightning."""
    import torch

    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    strategy = str(cfg.trainer.get("strategy", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} needs a CUDA GPU and none is visible; "
                          f"allowed here: trainer=cpu")
    if "fsdp" in strategy.lower() and (accelerator == "cpu" or not torch.cuda.is_available()):
        raise ConfigError(f"trainer.strategy={strategy} (FSDP) needs CUDA GPUs; allowed on CPU: strategy=auto or ddp")
    devices, nodes = cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1)
    if isinstance(devices, int) and isinstance(nodes, int):  # known before launch: fail before ranks start
        check_ranks_divide(int(cfg.prompts_per_step), devices * nodes)  # (devices=auto: each rank checks, data.py)


def build_logger(cfg: DictConfig, choices: dict[str, str], resume_run_id: str | None = None,
                 uses_planner: bool = True):
    """The MLflow logger: a new run, or with `resume_run_id` the run a checkpoint belongs to. `uses_planner`: the
    algorithm reads the planning mask, so the run's default name names the planner."""
    if not cfg.logger.get("_target_"):
        return None
    quiet_mlflow()  # no "INFO mlflow.store.db.utils: Creating initial MLflow database tables..." on a new store
    uri = absolute_tracking_uri(cfg.logger.tracking_uri)
    artifact_location = absolute_artifact_location(cfg.logger.get("artifact_location"))
    with store_lock(uri):
        check_tracking_uri(uri)
        ensure_experiment(uri, cfg.logger.experiment_name, artifact_location)
        if resume_run_id is not None:
            check_run_resumable(uri, resume_run_id)
    name = cfg.logger.get("run_name") or default_run_name(choices, cfg.seed, swept_overrides(), uses_planner)
    return build(cfg.logger, tracking_uri=uri, artifact_location=artifact_location, run_id=resume_run_id,
                 run_name=name)


def find_resume_point(cfg: DictConfig, out_dir: Path, locks: RunLocks) -> ResumePoint:
    """Where the run starts: a new run, or with `ckpt_path=...` the checkpoint and the MLflow run it continues.

    Locks the run folder's checkpoints, finds the checkpoint (hicra/training/find_checkpoint.py: never one that
    would overwrite what the run folder holds), locks its folder too (one process per run, see run_lock.py), then
    checks that it may continue under `cfg`.
    """
    locks.acquire(out_dir / "checkpoints")
    ckpt = checkpoint_to_resume(cfg.get("ckpt_path"), out_dir, Path(cfg.paths.output_dir), named_run_dir(out_dir),
                                config_snapshot(cfg), sweep_job=in_sweep())
    if ckpt is None:
        return ResumePoint()
    locks.acquire(ckpt.parent)
    return resume_point(ckpt, cfg, read_run_record(ckpt))


def in_sweep() -> bool:
    """A job of `hicra-train -m`: with `ckpt_path=last` and no checkpoint of its own it starts instead of failing."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def named_run_dir(out_dir: Path) -> Path | None:
    """`out_dir` when the command names the run folder (`hydra.run.dir=...`, or `hydra.sweep.dir=...` for a job of a
    multirun): there `ckpt_path=last` means this run's own checkpoint, not the newest one anywhere."""
    if not HydraConfig.initialized():
        return None
    named = {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.hydra}
    folder = "hydra.sweep.dir" if in_sweep() else "hydra.run.dir"  # the other one does not place this job
    return out_dir if folder in named else None


def run_dir(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir) / "runs" / "manual"


def demonstrations(cfg: DictConfig) -> list[dict] | None:
    """The worked examples shown before each question as earlier chat turns (`demonstrations`), as plain dicts."""
    shots = cfg.get("demonstrations")
    return None if shots is None else OmegaConf.to_container(shots, resolve=True)


def build_module(cfg: DictConfig, algorithm, sampler, task, num_batches: int):
    """The model (loaded now), the prompt datamodule and the LightningModule of a run: (bundle, datamodule, module)."""
    bundle = build(cfg.model)
    datamodule = PromptDataModule(task, bundle.tokenizer, cfg.prompts_per_step, num_batches, seed=cfg.seed,
                                  val_batch_size=cfg.val_batch_size, system_prompt=cfg.system_prompt,
                                  demonstrations=demonstrations(cfg),
                                  updates_per_batch=algorithm.num_iterations,
                                  max_prompt_tokens=sampler.max_prompt_tokens)
    module = PolicyGradientModule(bundle.model, bundle.tokenizer, algorithm, build(cfg.planner, tokenizer=bundle.tokenizer),
                                  task, sampler, optimizer_factory=instantiate(cfg.optim),
                                  micro_batch_size=cfg.micro_batch_size, max_grad_norm=cfg.max_grad_norm,
                                  max_skipped_updates_in_a_row=cfg.faults.max_skipped_updates_in_a_row,
                                  diagnostics=build(cfg.diagnostics, tokenizer=bundle.tokenizer)
                                  if cfg.get("diagnostics") else None,
                                  reference=build_reference(bundle.model, needed=algorithm.needs_reference),
                                  format_reward=cfg.format_reward, score_truncated=cfg.score_truncated,
                                  lr_schedule=instantiate(cfg.lr_schedule) if cfg.get("lr_schedule") else None,
                                  refill=datamodule.refill)
    return bundle, datamodule, module


def train(cfg: DictConfig, choices: dict[str, str] | None = None) -> dict:
    """Fit one run; returns the summary numbers (also printed). Raises ConfigError on a user's mistake, Preempted
    when SIGTERM or SIGUSR1 stops it (hicra/training/preemption.py)."""
    choices = choices if choices is not None else hydra_choices()
    algorithm, sampler, task = preflight(cfg, choices)
    check_extra_loggers(cfg)  # extra_loggers=wandb without wandb installed: one line, before the model loads
    check_model_logging(cfg)
    memory = plan_run(cfg, algorithm, sampler, task)  # refuses, in one line, a run that cannot fit the device
    out_dir = run_dir(cfg)
    # Under DDP/FSDP Lightning starts this same command once per rank; only rank 0 owns the MLflow run and the files
    # (and so holds the run's locks).
    is_main = rank_zero_only.rank == 0
    with RunLocks(enabled=is_main) as locks, SignalWatch() as watch:
        resume = find_resume_point(cfg, out_dir, locks)
        if is_main and cfg.logger.get("_target_"):  # a deleted experiment or run: said before the model loads
            check_store(cfg.logger, resume.mlflow_run_id)
        watch.checkpoint = resume.checkpoint  # what a stop names until this run writes its own
        if is_main and resume.checkpoint is not None:
            print(f"hicra-train: {resume_line(resume)}", flush=True)
        elif is_main and cfg.get("ckpt_path"):  # a job of a sweep continued with ckpt_path=last, none of its own
            print("hicra-train: ckpt_path=last: this job of the sweep has no checkpoint yet; starting it", flush=True)
        if is_main and memory is not None:
            print(f"hicra-train: {memory.text}", flush=True)
        return fit_run(cfg, choices, (algorithm, sampler, task, memory), out_dir, resume, watch, is_main)


def fit_run(cfg: DictConfig, choices: dict[str, str], parts: tuple, out_dir: Path, resume: ResumePoint,
            watch: SignalWatch, is_main: bool) -> dict:
    """The run itself, once it may start: the model, the MLflow run, step-0 validation, fit, the final model."""
    algorithm, sampler, task, memory = parts
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    num_batches = math.ceil(cfg.trainer.max_steps / algorithm.num_iterations)
    bundle, datamodule, module = build_module(cfg, algorithm, sampler, task, num_batches)
    check_model_fits(resume, module)
    check_updates_survive(bundle.model, cfg.optim, cfg.trainer.get("precision", "32-true"))  # before any MLflow run
    longest = longest_prompt_tokens(bundle.tokenizer, task, cfg.system_prompt, sampler.max_prompt_tokens,
                                    demonstrations(cfg))
    check_fits_context(bundle.model.config, longest, sampler)
    watch.raise_if_signalled()  # stopped while the model loaded: no MLflow run exists yet
    logger = watch.logger = \
        build_logger(cfg, choices, resume.mlflow_run_id, algorithm.needs_planning_mask) if is_main else None
    with ended_on_failure(logger):  # from here on, a failure ends the MLflow run instead of leaving it RUNNING
        return fit_and_summarise(cfg, choices, out_dir, resume, watch, is_main, num_batches, bundle, datamodule,
                                 module, logger, memory)


def fit_and_summarise(cfg: DictConfig, choices: dict[str, str], out_dir: Path, resume: ResumePoint,
                      watch: SignalWatch, is_main: bool, num_batches: int, bundle, datamodule, module, logger,
                      memory=None) -> dict:
    """What the run does once its MLflow run exists: metadata, trainer, step-0 validation, fit, final model."""
    if logger is not None:
        log_run_metadata(logger, cfg, choices, out_dir, resumed_from=resume.checkpoint,
                         resume_changes=describe_changes(resume.changes, limit=50)[:5000])
        log_plan(logger, memory)  # memory_plan.json and the memory_plan tag
        if resume.checkpoint is None:  # the runs table's Dataset column; a resume trains on the same prompts
            log_task_datasets(logger, module.task, choices.get("task") or type(module.task).__name__, cfg.task)
    # The run's own name (a resumed or `logger.run_name` run's), read once for the pages and the description.
    name = logger.experiment.get_run(logger.run_id).info.run_name if logger is not None else None
    extras = build_extra_loggers(cfg, out_dir, name) if is_main else []  # TensorBoard, W&B: after MLflow, same metrics
    callbacks = [CorrectCompletionsRecorder(out_dir), TQDMProgressBar(refresh_rate=1),  # every rank's successes
                 SystemMetrics(float(cfg.get("system_metrics_every_s", 0)))]
    if is_main:
        callbacks.append(CompletionSampleLogger(cfg.completions_every_n_steps, cfg.completions_per_sample,
                                                out_dir / "completions", run_title(logger, name, choices, cfg.seed)))
    loggers = [lg for lg in (logger, *extras) if lg is not None]  # MLflow first: trainer.logger is MLflow's
    trainer = build(cfg.trainer, logger=loggers or False, callbacks=callbacks, default_root_dir=str(out_dir),
                    val_check_interval=min(cfg.val_every_n_steps, num_batches),
                    **checkpointing(cfg, out_dir, callbacks, logger, watch, is_main))
    if is_main:
        print(f"hicra-train: {device_line(trainer)}", flush=True)

    if resume.checkpoint is None:
        trainer.validate(module, datamodule=datamodule, verbose=False)  # step 0: the starting accuracy
        mark_running(logger)  # Lightning's validate marked the MLflow run FINISHED; it has only begun
    # weights_only: Lightning's own load of the checkpoint takes tensors and plain values only, as hicra's check did
    trainer.fit(module, datamodule=datamodule,
                ckpt_path=str(resume.checkpoint) if resume.checkpoint is not None else None, weights_only=True)
    if not module.val_history or module.val_history[-1]["step"] != trainer.global_step:
        trainer.validate(module, datamodule=datamodule, verbose=False)

    sharded_weights = full_state_dict(bundle.model) if cfg.save_final_model else None  # FSDP: all ranks gather
    if cfg.save_final_model and is_main:  # a plain model, LoRA merged, sharded or not
        save_final_model(bundle.model, out_dir / "final_model", sharded_weights)
        bundle.tokenizer.save_pretrained(out_dir / "final_model")
        if getattr(logger, "log_final_model", False):  # the Models column (and the registry, if named)
            log_final_model(logger, out_dir / "final_model")
    summary = {"choices": choices, "seed": cfg.seed, "steps": trainer.global_step, "run_dir": str(out_dir),
               "train_history": module.train_history, "val_history": module.val_history,
               "mlflow": {"tracking_uri": logger._tracking_uri, "run_id": logger.run_id,
                          "experiment": cfg.logger.experiment_name, "experiment_id": logger.experiment_id}
               if logger is not None else None, "memory_plan": memory.record if memory is not None else None}
    if logger is not None:
        if hasattr(logger, "deliver"):  # a tracking server away at the end: wait for it, bounded
            logger.deliver(watch.raise_if_signalled, out_dir)
        describe_run(logger.experiment, logger.run_id,
                     description(logger, name, cfg, choices, trainer.global_step, module.val_history, out_dir)
                     + not_stored_note(logger))
        logger.finalize("success")
    finish_extra_loggers(extras)
    if is_main:
        print(format_summary(summary), flush=True)
    return summary


def run_title(logger, name: str | None, choices: dict[str, str], seed: int) -> str:
    """How pages name the run: `s1 hicra grams (run 1d42f3a3)`, or its choices when nothing is logged."""
    if logger is None:
        return " ".join(f"{k}={choices[k]}" for k in ("algorithm", "planner") if k in choices) + f" seed={seed}"
    return f"{name} (algorithm {choices.get('algorithm', '?')}, run {logger.run_id[:8]})"


def description(logger, name: str, cfg: DictConfig, choices: dict[str, str], steps: int, val_history: list[dict],
                out_dir: Path) -> str:
    """The MLflow run page's description of a finished run (hicra.tracking.store.run_description)."""
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    pages = sorted((out_dir / "completions").glob("completions_step*.html"))
    return run_description(name, choices, cfg.seed, overrides, steps, val_history,
                           f"completions/{pages[-1].name}" if pages else None,
                           f"#/experiments/{logger.experiment_id}/runs/{logger.run_id}")  # in-app link


def resume_line(resume: ResumePoint) -> str:
    """`resuming <ckpt> at step 4 (MLflow run ab12...), changed: trainer.max_steps (4 -> 8)`."""
    run = f" (MLflow run {resume.mlflow_run_id})" if resume.mlflow_run_id else ""
    changed = f", changed: {describe_changes(resume.changes)}" if resume.changes else ""
    return f"resuming {resume.checkpoint} at step {resume.step}{run}{changed}"


def device_line(trainer) -> str:
    """Where the run computes, e.g. `training on cpu` or `training on 4 x NVIDIA H200` (Lightning's own two lines,
    "GPU available: ..., used: ..." and "TPU available: ...", are filtered out by LightningChatter)."""
    import torch

    device = trainer.strategy.root_device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    count = trainer.num_devices * trainer.num_nodes
    return f"training on {count} x {name}" if count > 1 else f"training on {name}"


def checkpointing(cfg: DictConfig, out_dir: Path, callbacks: list, logger, watch: SignalWatch,
                  is_main: bool = True) -> dict:
    """Trainer arguments for crash-safe `last.ckpt` every `checkpoint_every_n_steps` (0 = none), with the run record in
    it and beside it (`run.json`) that lets `ckpt_path=...` continue the same MLflow run, and for the stop at a safe
    point, with a checkpoint, on SIGTERM or SIGUSR1 (StopAtSafePoint)."""
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


def objective(summary: dict, metric: str | None) -> float | None:
    """The number a sweeper optimises: `metric` at the last validation, else at the last training step."""
    if not metric:
        return None
    for history in (summary["val_history"], summary["train_history"]):
        if history and metric in history[-1]:
            return float(history[-1][metric])
    logged = sorted({k for h in (summary["val_history"], summary["train_history"]) if h for k in h[-1]} - {"step"})
    raise ConfigError(f"optimized_metric={metric!r} was not logged; allowed: {', '.join(logged)}")
