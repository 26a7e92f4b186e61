"""`hicra-train`: compose the config, check it, build the pieces, fit, summarise.

    hicra-train                                   # HICRA on SmolLM2-135M-Instruct, reasoning-gym chain_sum, MLflow
    hicra-train algorithm=grpo planner=none trainer.max_steps=50
    hicra-train -m algorithm=grpo,hicra,entropy_reg seed=0,1,2   # 9 runs in one MLflow experiment
"""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from pathlib import Path

import hydra
import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from hicra.completions_html import CompletionSampleLogger, CorrectCompletionsRecorder
from hicra.cli_checks import check_composes, check_group_choices
from hicra.data import PromptDataModule
from hicra.errors import ConfigError
from hicra.lit_module import PolicyGradientModule
from hicra.summary import format_summary
from hicra.tracking import (PROJECT_ROOT, absolute_artifact_location, absolute_tracking_uri, check_tracking_uri,
                            default_run_name, log_run_metadata)

CONF_DIR = PROJECT_ROOT / "conf"
# Lightning notices that prompts bypass device transfer (on purpose: they are strings) and advertises services.
warnings.filterwarnings("ignore", message=".*transfer_batch_to_device.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def build(node: DictConfig, **kwargs):
    """`hydra.utils.instantiate`, with a user's bad value reported as a one-line ConfigError."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, (ConfigError, ValueError, TypeError, OmegaConfBaseException)):
            raise ConfigError(str(cause).splitlines()[0]) from err
        raise


def hydra_choices() -> dict[str, str]:
    if not HydraConfig.initialized():
        return {}
    return {g: str(o) for g, o in HydraConfig.get().runtime.choices.items() if not g.startswith("hydra")}


def preflight(cfg: DictConfig, choices: dict[str, str]):
    """Everything that can be checked before a model loads (seconds, not minutes)."""
    algorithm = build(cfg.algorithm)  # validates its own values and probes its bound functions
    if algorithm.needs_planning_mask and not getattr(get_class(cfg.planner._target_), "marks_planning", True):
        raise ConfigError(
            f"algorithm={choices.get('algorithm', 'hicra')} needs planning tokens but "
            f"planner={choices.get('planner', 'none')} marks none (it would silently be GRPO); "
            f"allowed: planner=strategic_grams or planner=high_entropy")
    for key in ("prompts_per_step", "micro_batch_size", "val_batch_size", "val_every_n_steps"):
        if int(cfg[key]) < 1:
            raise ConfigError(f"{key}={cfg[key]} is not allowed; use an integer >= 1")
    if int(cfg.trainer.max_steps) < 1:
        raise ConfigError(f"trainer.max_steps={cfg.trainer.max_steps} is not allowed; use an integer >= 1")
    sampler = build(cfg.rollout)
    task = build(cfg.task)
    task.train_examples(), task.val_examples()  # a missing or malformed data file fails here, before the model
    # Dr.GRPO's constant normaliser must not change with micro-batch or step: default to the generation budget.
    algorithm = dataclasses.replace(algorithm, norm_length=algorithm.norm_length or sampler.max_new_tokens)
    return algorithm, sampler, task


def build_logger(cfg: DictConfig, choices: dict[str, str]):
    if not cfg.logger.get("_target_"):
        return None
    uri = absolute_tracking_uri(cfg.logger.tracking_uri)
    check_tracking_uri(uri)
    return build(cfg.logger, tracking_uri=uri,
                 artifact_location=absolute_artifact_location(cfg.logger.get("artifact_location")),
                 run_name=cfg.logger.get("run_name") or default_run_name(choices, cfg.seed))


def run_dir(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir) / "runs" / "manual"


def train(cfg: DictConfig, choices: dict[str, str] | None = None) -> dict:
    """Fit one run; returns the summary numbers (also printed). Raises ConfigError on a user's mistake."""
    choices = choices if choices is not None else hydra_choices()
    algorithm, sampler, task = preflight(cfg, choices)
    logger = build_logger(cfg, choices)
    out_dir = run_dir(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    bundle = build(cfg.model)
    detector = build(cfg.planner, tokenizer=bundle.tokenizer)
    num_batches = math.ceil(cfg.trainer.max_steps / algorithm.num_iterations)
    datamodule = PromptDataModule(task, bundle.tokenizer, cfg.prompts_per_step, num_batches, seed=cfg.seed,
                                  val_batch_size=cfg.val_batch_size, system_prompt=cfg.system_prompt)
    module = PolicyGradientModule(bundle.model, bundle.tokenizer, algorithm, detector, task, sampler,
                                  optimizer_factory=instantiate(cfg.optim), micro_batch_size=cfg.micro_batch_size,
                                  max_grad_norm=cfg.max_grad_norm,
                                  diagnostics=build(cfg.diagnostics, tokenizer=bundle.tokenizer)
                                  if cfg.get("diagnostics") else None)
    if logger is not None:
        log_run_metadata(logger, cfg, choices, out_dir)
    callbacks = [CompletionSampleLogger(cfg.completions_every_n_steps, cfg.completions_per_sample,
                                        out_dir / "completions"), CorrectCompletionsRecorder(out_dir),
                 TQDMProgressBar(refresh_rate=1)]
    trainer = build(cfg.trainer, logger=logger or False, callbacks=callbacks, default_root_dir=str(out_dir),
                    val_check_interval=min(cfg.val_every_n_steps, num_batches))

    trainer.validate(module, datamodule=datamodule, verbose=False)  # step 0: the starting accuracy
    trainer.fit(module, datamodule=datamodule)
    if not module.val_history or module.val_history[-1]["step"] != trainer.global_step:
        trainer.validate(module, datamodule=datamodule, verbose=False)

    if cfg.save_final_model:
        bundle.model.save_pretrained(out_dir / "final_model")
        bundle.tokenizer.save_pretrained(out_dir / "final_model")
    summary = {"choices": choices, "seed": cfg.seed, "steps": trainer.global_step, "run_dir": str(out_dir),
               "train_history": module.train_history, "val_history": module.val_history,
               "mlflow": {"tracking_uri": logger._tracking_uri, "run_id": logger.run_id,
                          "experiment": cfg.logger.experiment_name} if logger is not None else None}
    if logger is not None:
        logger.finalize("success")
    print(format_summary(summary), flush=True)
    return summary


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except (ConfigError, OmegaConfBaseException) as err:
        print(f"hicra-train: error: {str(err).strip().splitlines()[0]}", file=sys.stderr, flush=True)
        sys.exit(2)


def main() -> None:
    """Console entry point: one-line errors for bad options, then Hydra."""
    try:
        check_group_choices(sys.argv[1:], CONF_DIR)
        check_composes(sys.argv[1:], CONF_DIR, "train")
    except ConfigError as err:
        print(f"hicra-train: error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
