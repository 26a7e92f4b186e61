"""Everything hicra-train refuses before a model or an MLflow run exists, each in one line (ConfigError).

`check_run` runs before the model loads (seconds): the config's values, the algorithm's planner, grams files, LoRA
support, the task's data, the devices, the extra trackers, model logging and the memory plan. `check_loaded_model`
runs once the weights are loaded, still before any MLflow run: the checkpoint's shapes, the weights' precision and
the model's context length.
"""

from __future__ import annotations

import dataclasses

from hydra.utils import get_class
from omegaconf import DictConfig

from hicra.config.instantiate import build
from hicra.config.schema import TRAIN
from hicra.config.values import check_config
from hicra.errors import ConfigError
from hicra.tracking.extra_loggers import check_extra_loggers
from hicra.tracking.model_logging import check_model_logging
from hicra.training.context_length import check_fits_context, longest_prompt_tokens
from hicra.training.data import check_ranks_divide
from hicra.training.memory_check import PlannedRun, plan_run
from hicra.training.precision import check_updates_survive
from hicra.training.resume import ResumePoint, check_model_fits
from hicra.training.run_context import demonstrations


def check_run(cfg: DictConfig, choices: dict[str, str]) -> tuple[object, object, object, PlannedRun | None]:
    """Every check that needs no model (seconds, not minutes): (algorithm, sampler, task, memory plan or None)."""
    algorithm, sampler, task = preflight(cfg, choices)
    check_extra_loggers(cfg)  # extra_loggers=wandb without wandb installed: one line, before the model loads
    check_model_logging(cfg)
    memory = plan_run(cfg, algorithm, sampler, task)  # refuses, in one line, a run that cannot fit the device
    return algorithm, sampler, task, memory


def preflight(cfg: DictConfig, choices: dict[str, str]):
    """The config's own checks, then (algorithm, sampler, task) built and probed."""
    check_config(cfg, TRAIN)  # keys, typed values, `_target_` arguments; the CLI checked them for every job already
    algorithm = build(cfg.algorithm)  # probes its bound functions
    if algorithm.needs_planning_mask and not getattr(get_class(cfg.planner._target_), "marks_planning", True):
        raise ConfigError(
            f"algorithm={choices.get('algorithm', 'hicra')} needs planning tokens but "
            f"planner={choices.get('planner', 'none')} marks none (it would silently be GRPO); "
            f"allowed: planner=strategic_grams or planner=high_entropy")
    check_grams_files(cfg)
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


def check_grams_files(cfg: DictConfig) -> None:
    """A missing, non-UTF-8 or gram-less grams file (planner or diagnostics) fails before the model."""
    for group in ("planner", "diagnostics"):
        if cfg.get(group) is not None and cfg[group].get("grams_path") is not None:
            from hicra.planning.strategic_grams import load_grams

            try:
                load_grams(cfg[group].grams_path)
            except ConfigError as err:
                raise ConfigError(f"{group}.grams_path={cfg[group].grams_path}: {err}") from None


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


def check_loaded_model(cfg: DictConfig, resume: ResumePoint, bundle, module, sampler, task) -> None:
    """Once the weights are loaded, before any MLflow run: a checkpoint of another shape, updates that the weights'
    precision rounds away, and rollouts longer than the model's context are refused."""
    check_model_fits(resume, module)
    check_updates_survive(bundle.model, cfg.optim, cfg.trainer.get("precision", "32-true"))
    longest = longest_prompt_tokens(bundle.tokenizer, task, cfg.system_prompt, sampler.max_prompt_tokens,
                                    demonstrations(cfg))
    check_fits_context(bundle.model.config, longest, sampler)
