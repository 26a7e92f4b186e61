"""The TRL side: GRPOTrainer (TRL 1.16, the optional `bench` extra) on the work the hicra GRPO arm does.

Same weights (the `model` config node built again), the same prompt batches in the same order (a dataset of the
rendered prompt strings, unshuffled), G, T, temperature/top-p/top-k, clip range, beta = 0, one optimizer step per
rollout batch in the same micro-batches (TRL: per-device batch x gradient accumulation), token-mean loss ("dapo"), group-scaled advantages, AdamW with hicra's lr/betas and
a constant schedule, grad-norm clip, and hicra's task.score as the one reward function.
"""

from __future__ import annotations

import tempfile
import time

import torch
from bench_hicra import peak_gib, prompt_batches, release_memory
from bench_support import sync
from omegaconf import DictConfig

from hicra.config.instantiate import build

# hicra aggregation -> TRL loss_type with the same normaliser (one rollout batch = one optimizer step here).
LOSS_TYPES = {"token_mean": "dapo", "seq_mean_token_mean": "grpo", "seq_mean_token_sum_norm": "dr_grpo"}


def trl_version() -> str | None:
    """TRL's version, or None when the `bench` extra is not installed (then the TRL side is skipped)."""
    try:
        import datasets  # noqa: F401  (TRL needs it; a half-installed extra counts as absent)
        import trl
    except ImportError:
        return None
    return trl.__version__


def grpo_config(cfg: DictConfig, num_steps: int, fixed_length: bool, gradient_checkpointing: bool, out_dir: str):
    from trl import GRPOConfig

    P, G, T = cfg.prompts_per_step, cfg.algorithm.group_size, cfg.rollout.max_new_tokens
    # hicra's micro-batch as TRL's per-device batch, accumulated over the rollout batch: one generation of P x G, one
    # optimizer step, the loss normalised over the whole batch (dapo: the accumulated batch's tokens) on both sides
    micro = cfg.micro_batch_size
    accumulate = P * G // micro
    on_gpu = torch.cuda.is_available() and cfg.trainer.accelerator != "cpu"
    alg, optim = cfg.algorithm, cfg.optim
    return GRPOConfig(
        output_dir=out_dir, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
        max_steps=num_steps, seed=cfg.seed, shuffle_dataset=False, dataloader_num_workers=0,
        per_device_train_batch_size=micro, gradient_accumulation_steps=accumulate, steps_per_generation=accumulate,
        num_iterations=1,
        num_generations=G, max_completion_length=T, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
        top_k=cfg.rollout.top_k, generation_kwargs={"min_new_tokens": T} if fixed_length else None,
        beta=0.0, epsilon=alg.clip_low, epsilon_high=alg.clip_high, loss_type=LOSS_TYPES[alg.aggregation],
        scale_rewards=alg.advantage_fn.scale, mask_truncated_completions=alg.exclude_truncated,
        learning_rate=optim.lr, adam_beta1=optim.betas[0], adam_beta2=optim.betas[1], weight_decay=optim.weight_decay,
        optim="adamw_torch", lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=cfg.max_grad_norm or 0.0,
        gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        bf16=on_gpu and cfg.model.dtype == "bfloat16", fp16=False, use_cpu=not on_gpu)


def run_trl(cfg: DictConfig, num_steps: int, fixed_length: bool, gradient_checkpointing: bool, turns=None,
            arm: str = "trl") -> dict:
    """Train `num_steps` steps on hicra's prompt batches; per-step wall times (step begin to step end), peak memory,
    response tokens and TRL's own logs. With `turns`, every step waits for this arm's turn (bench_turns.py)."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOTrainer

    # TRL turns checkpointing on itself (its own args); stock SDPA attention, no hicra prompt sharing.
    bundle = build(cfg.model, gradient_checkpointing=False, share_prompt_prefix=False)
    batches, task = prompt_batches(cfg, bundle.tokenizer, num_steps)
    prompts = [p for b in batches for p in b["prompts"]]
    examples = [e for b in batches for e in b["examples"]]
    dataset = Dataset.from_dict({"prompt": prompts, "example_index": list(range(len(prompts)))})

    def task_score(prompts, completions, example_index, **_):
        return [float(task.score(c, examples[i])) for c, i in zip(completions, example_index, strict=True)]

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.peaks, self.logs = [], [], []

        def on_step_begin(self, args, state, control, **kwargs):
            if turns is not None:
                turns.take(arm)
            sync()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            self.times.append(time.perf_counter() - self.t0)
            self.peaks.append(peak_gib())
            print(f"[bench]     {arm} step {len(self.times)}: {self.times[-1]:.2f} s", flush=True)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                self.logs.append(dict(logs))

    timer = Timer()
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as tmp:
        args = grpo_config(cfg, num_steps, fixed_length, gradient_checkpointing, tmp)
        trainer = GRPOTrainer(model=bundle.model, reward_funcs=task_score, args=args, train_dataset=dataset,
                              processing_class=bundle.tokenizer, callbacks=[timer])
        trainer.remove_callback(PrinterCallback)  # its per-step log dicts would bury the benchmark's own lines
        trainer.train()
    batch = cfg.prompts_per_step * cfg.algorithm.group_size
    result = {"step_s": list(timer.times), "peak_memory_gib": list(timer.peaks),
              "tokens": [log["completions/mean_length"] * batch for log in timer.logs],
              "trl_step_time_s": [log.get("step_time") for log in timer.logs],
              "reward_mean": [log.get("reward") for log in timer.logs]}
    del trainer, bundle
    release_memory()
    return result
