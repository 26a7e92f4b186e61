"""What `hicra-train` runs once its command line is checked (hicra.training.cli): `train(cfg)`, one page from the
preflight to the summary, and the pieces it builds (the model and LightningModule, the MLflow logger, the trainer).

Kept apart from the CLI so that a bad option or `--help` is answered before torch, Lightning and transformers load
(seconds): hicra.training.cli imports this module only inside Hydra's main. Importing it changes no global state.
"""

from __future__ import annotations

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from hicra.config.instantiate import build
from hicra.errors import ConfigError
from hicra.models.lora import save_final_model
from hicra.models.reference import build_reference
from hicra.tracking.dataset_input import log_task_datasets
from hicra.tracking.extra_loggers import build_extra_loggers, finish_extra_loggers
from hicra.tracking.model_logging import log_final_model
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
    store_lock,
)
from hicra.training.callbacks import CompletionSampleLogger, CorrectCompletionsRecorder
from hicra.training.console import device_line, quiet_lightning
from hicra.training.data import PromptDataModule
from hicra.training.distributed import full_state_dict
from hicra.training.fail_together import FailTogether
from hicra.training.hydra_job import hydra_choices, run_dir, swept_overrides
from hicra.training.memory_check import log_plan
from hicra.training.module import PolicyGradientModule
from hicra.training.preemption import SignalWatch
from hicra.training.preflight import check_loaded_model, check_run, preflight  # noqa: F401 (preflight: benchmarks)
from hicra.training.resume import ResumePoint, describe_changes
from hicra.training.run_checkpoints import checkpointing, find_resume_point, resume_line
from hicra.training.run_context import RunContext, demonstrations
from hicra.training.run_lock import RunLocks
from hicra.training.summary import description, format_summary, run_summary, run_title
from hicra.training.system_metrics import SystemMetrics


def train(cfg: DictConfig, choices: dict[str, str] | None = None) -> dict:
    """Fit one run; returns the summary numbers (also printed). Raises ConfigError on a user's mistake, Preempted
    when SIGTERM or SIGUSR1 stops it (hicra/training/preemption.py)."""
    quiet_lightning()
    choices = choices if choices is not None else hydra_choices()
    # Under DDP/FSDP Lightning starts this same command once per rank; only rank 0 owns the MLflow run and the files
    # (and so holds the run's locks).
    run = RunContext(cfg, choices, *check_run(cfg, choices), out_dir=run_dir(cfg), is_main=rank_zero_only.rank == 0)
    with RunLocks(enabled=run.is_main) as locks, SignalWatch() as watch:
        resume = find_resume_point(cfg, run.out_dir, locks)
        if run.is_main and cfg.logger.get("_target_"):  # a deleted experiment or run: said before the model loads
            check_store(cfg.logger, resume.mlflow_run_id)
        watch.checkpoint = resume.checkpoint  # what a stop names until this run writes its own
        announce_start(run, resume)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        bundle, datamodule, module = build_module(cfg, run.algorithm, run.sampler, run.task, run.num_batches)
        check_loaded_model(cfg, resume, bundle, module, run.sampler, run.task)  # still before any MLflow run
        watch.raise_if_signalled()  # stopped while the model loaded: no MLflow run exists yet
        logger = watch.logger = \
            build_logger(cfg, choices, resume.mlflow_run_id, run.algorithm.needs_planning_mask) if run.is_main else None
        with ended_on_failure(logger):  # from here on, a failure ends the MLflow run instead of leaving it RUNNING
            log_start(run, logger, resume, module)
            # The run's own name (a resumed or `logger.run_name` run's), read once for the pages and the description.
            name = logger.experiment.get_run(logger.run_id).info.run_name if logger is not None else None
            extras = build_extra_loggers(cfg, run.out_dir, name) if run.is_main else []  # after MLflow, same metrics
            trainer = build_trainer(run, logger, extras, watch, name)
            if resume.checkpoint is None:
                trainer.validate(module, datamodule=datamodule, verbose=False)  # step 0: the starting accuracy
                mark_running(logger)  # Lightning's validate marked the MLflow run FINISHED; it has only begun
            # weights_only: Lightning's own load of the checkpoint takes tensors and plain values only
            trainer.fit(module, datamodule=datamodule,
                        ckpt_path=str(resume.checkpoint) if resume.checkpoint is not None else None, weights_only=True)
            if not module.val_history or module.val_history[-1]["step"] != trainer.global_step:
                trainer.validate(module, datamodule=datamodule, verbose=False)
            save_final(run, bundle, logger)
            summary = run_summary(run, trainer, module, logger)
            if logger is not None:
                close_mlflow_run(run, logger, watch, name, trainer.global_step, module.val_history)
            finish_extra_loggers(extras)
            if run.is_main:
                print(format_summary(summary), flush=True)
            return summary


def announce_start(run: RunContext, resume: ResumePoint) -> None:
    """Rank 0 says where the run starts and prints its memory plan."""
    if run.is_main and resume.checkpoint is not None:
        print(f"hicra-train: {resume_line(resume)}", flush=True)
    elif run.is_main and run.cfg.get("ckpt_path"):  # ckpt_path=auto, or a sweep's job with ckpt_path=last: none yet
        print(f"hicra-train: ckpt_path={run.cfg.ckpt_path}: no checkpoint of this run yet; starting it", flush=True)
    if run.is_main and run.memory is not None:
        print(f"hicra-train: {run.memory.text}", flush=True)


def shards_the_model(trainer_cfg: DictConfig) -> bool:
    """Whether the trainer's strategy hands configure_model a device mesh, i.e. shards the model with FSDP2
    (trainer=fsdp: Lightning's ModelParallelStrategy). Building the strategy object starts nothing."""
    from pytorch_lightning.strategies import ModelParallelStrategy

    strategy = trainer_cfg.get("strategy")
    return isinstance(strategy, DictConfig) and isinstance(build(strategy), ModelParallelStrategy)


def build_module(cfg: DictConfig, algorithm, sampler, task, num_batches: int):
    """The model (loaded now), the prompt datamodule and the LightningModule of a run: (bundle, datamodule, module).

    Sharded (trainer=fsdp), only global rank 0 reads the weights: the other ranks build the model and the KL term's
    reference on the meta device, and every rank's shards are filled from rank 0's in configure_model
    (hicra.training.distributed.shard_from_rank0): host memory for one copy of the model per node, not one per rank."""
    sharded = shards_the_model(cfg.trainer)
    reference_offload = bool(cfg.get("reference_offload", False))
    if reference_offload and not sharded:
        raise ConfigError("reference_offload=true needs trainer=fsdp (FSDP2 keeps the reference's shards in host "
                          "memory); allowed with this trainer: reference_offload=false")
    receives_weights = sharded and rank_zero_only.rank != 0
    bundle = build(cfg.model, **({"meta_device": True} if receives_weights else {}))
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
                                  reference=build_reference(bundle.model, needed=algorithm.needs_reference,
                                                            empty=sharded),
                                  reference_offload=reference_offload,
                                  reduce_every_micro_batch=bool(cfg.get("reduce_gradients_every_micro_batch", False)),
                                  format_reward=cfg.format_reward, score_truncated=cfg.score_truncated,
                                  lr_schedule=instantiate(cfg.lr_schedule) if cfg.get("lr_schedule") else None,
                                  refill=datamodule.refill)
    return bundle, datamodule, module


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


def log_start(run: RunContext, logger, resume: ResumePoint, module) -> None:
    """What the MLflow run records before training: metadata, the memory plan and, for a new run, the datasets."""
    if logger is None:
        return
    log_run_metadata(logger, run.cfg, run.choices, run.out_dir, resumed_from=resume.checkpoint,
                     resume_changes=describe_changes(resume.changes, limit=50)[:5000])
    log_plan(logger, run.memory)  # memory_plan.json and the memory_plan tag
    if resume.checkpoint is None:  # the runs table's Dataset column; a resume trains on the same prompts
        log_task_datasets(logger, module.task, run.choices.get("task") or type(module.task).__name__, run.cfg.task)


def build_trainer(run: RunContext, logger, extras: list, watch: SignalWatch, name: str | None) -> pl.Trainer:
    """The Lightning trainer: MLflow first among the loggers (trainer.logger is MLflow's), the completion pages,
    system metrics, checkpoints and the safe-point stop; says where it computes."""
    callbacks = [CorrectCompletionsRecorder(run.out_dir), TQDMProgressBar(refresh_rate=1),  # every rank's successes
                 SystemMetrics(float(run.cfg.get("system_metrics_every_s", 0)))]
    callbacks.append(FailTogether())  # an exception on one rank ends every rank (hicra/training/fail_together.py)
    if run.is_main:
        callbacks.append(CompletionSampleLogger(run.cfg.completions_every_n_steps, run.cfg.completions_per_sample,
                                                run.out_dir / "completions",
                                                run_title(logger, name, run.choices, run.cfg.seed)))
    loggers = [lg for lg in (logger, *extras) if lg is not None]
    trainer = build(run.cfg.trainer, logger=loggers or False, callbacks=callbacks, default_root_dir=str(run.out_dir),
                    val_check_interval=min(run.cfg.val_every_n_steps, run.num_batches),
                    **checkpointing(run.cfg, run.out_dir, callbacks, logger, watch, run.is_main))
    if run.is_main:
        print(f"hicra-train: {device_line(trainer)}", flush=True)
    return trainer


def save_final(run: RunContext, bundle, logger) -> None:
    """`save_final_model=true`: a plain model (LoRA merged, FSDP shards gathered by every rank) and its tokenizer in
    `final_model/`, and in the MLflow run's Models column when `logger.log_final_model`."""
    if not run.cfg.save_final_model:
        return
    sharded_weights = full_state_dict(bundle.model)  # FSDP: all ranks gather
    if run.is_main:
        save_final_model(bundle.model, run.out_dir / "final_model", sharded_weights)
        bundle.tokenizer.save_pretrained(run.out_dir / "final_model")
        if getattr(logger, "log_final_model", False):  # the Models column (and the registry, if named)
            log_final_model(logger, run.out_dir / "final_model")


def close_mlflow_run(run: RunContext, logger, watch: SignalWatch, name: str, steps: int, val_history: list) -> None:
    """Deliver what an outage held back (bounded), describe the run on its page, and mark it FINISHED."""
    if hasattr(logger, "deliver"):  # a tracking server away at the end: wait for it, bounded
        logger.deliver(watch.raise_if_signalled, run.out_dir)
    describe_run(logger.experiment, logger.run_id,
                 description(run, logger, name, steps, val_history) + not_stored_note(logger))
    logger.finalize("success")
