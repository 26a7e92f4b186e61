"""The hicra side: what `hicra-train` builds (same config groups, `preflight`, PolicyGradientModule, PromptDataModule,
the `trainer` group's Lightning Trainer), driven for a fixed number of steps with no validation, logger or checkpoint.
"""

from __future__ import annotations

import gc
import tempfile
import time

import pytorch_lightning as pl
import torch
from bench_support import sync
from omegaconf import DictConfig, OmegaConf, open_dict

from hicra.config.instantiate import build
from hicra.training.cli import CONF_DIR
from hicra.training.data import PromptDataModule
from hicra.training.run import build_module, preflight
from hicra.training.run_context import demonstrations

# The three hicra arms timed against each other; GRPO is the one that does TRL's work.
VARIANTS = {
    "grpo": ["algorithm=grpo", "planner=none", "diagnostics=null"],
    "hicra": ["algorithm=hicra", "planner=strategic_grams", "diagnostics=null"],
    "hicra+diag": ["algorithm=hicra", "planner=strategic_grams"],
}


def compose(overrides: list[str], replace: dict | None = None) -> DictConfig:
    """conf/train.yaml with `overrides` (Hydra's compose API, as the tests do); `replace` swaps whole nodes."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=overrides)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        for key, node in (replace or {}).items():
            cfg[key] = OmegaConf.create(node)
    return cfg


def peak_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


class StepTimer(pl.Callback):
    """Wall time and peak CUDA memory of every training step, from batch start to batch end; with `turns`, each step
    waits for this arm's turn first (bench_turns.py)."""

    def __init__(self, turns=None, arm: str = ""):
        self.times: list[float] = []
        self.peaks: list[float | None] = []
        self.turns, self.arm = turns, arm

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.turns is not None:
            self.turns.take(self.arm)
        sync()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        sync()
        self.times.append(time.perf_counter() - self._t0)
        self.peaks.append(peak_gib())
        print(f"[bench]     {self.arm} step {len(self.times)}: {self.times[-1]:.2f} s", flush=True)


def prompt_batches(cfg: DictConfig, tokenizer, num_batches: int) -> tuple[list[dict], object]:
    """The exact prompt batches (rendered text and examples) a hicra run with `cfg` trains on, step by step, and the
    task that scores them."""
    algorithm, _, task = preflight(cfg, {})
    datamodule = PromptDataModule(task, tokenizer, cfg.prompts_per_step, num_batches, seed=cfg.seed,
                                  val_batch_size=cfg.val_batch_size, system_prompt=cfg.system_prompt,
                                  demonstrations=demonstrations(cfg), updates_per_batch=algorithm.num_iterations)
    return list(datamodule.train_dataloader()), task


def run_hicra(cfg: DictConfig, num_steps: int, turns=None, arm: str = "hicra") -> dict:
    """Fit `num_steps` steps as `hicra.training.run.train` builds them; per-step wall times, peaks and the module's
    history. With `turns`, every step waits for this arm's turn."""
    algorithm, sampler, task = preflight(cfg, {})
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    bundle, datamodule, module = build_module(cfg, algorithm, sampler, task, num_batches=num_steps)
    timer = StepTimer(turns, arm)
    with tempfile.TemporaryDirectory(prefix="bench-hicra-") as tmp:
        trainer = build(cfg.trainer, logger=False, callbacks=[timer], default_root_dir=tmp, max_steps=num_steps,
                        limit_val_batches=0, enable_checkpointing=False, enable_progress_bar=False)
        trainer.fit(module, datamodule=datamodule)
    history = list(module.train_history)
    batch = cfg.prompts_per_step * cfg.algorithm.group_size
    result = {"step_s": timer.times, "peak_memory_gib": timer.peaks,
              "tokens": [h["train/response_length"] * batch for h in history],
              "perf": [{k: v for k, v in h.items() if k.startswith("perf/")} for h in history],
              "reward_mean": [h.get("train/reward_mean") for h in history]}
    del trainer, module, datamodule, bundle
    release_memory()
    return result


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
