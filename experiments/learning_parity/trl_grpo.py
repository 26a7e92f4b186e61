"""The TRL arm of the learning-parity study: TRL's GRPOTrainer trained on exactly what `hicra-train algorithm=grpo
planner=none` trains on, validated with hicra's own held-out protocol, logged to the same MLflow store.

    .venv/bin/python experiments/learning_parity/trl_grpo.py --seed 0 [hydra overrides ...]

Same by construction, from one composed hicra config (conf/train.yaml + `algorithm=grpo planner=none` + overrides):
the weights (the `model` node), the prompt batches in hicra's order for this seed (rendered with the same chat
template, system prompt and instruction), G, prompts per step, token budget, temperature/top-p/top-k, the clip range,
beta 0, token-mean loss, group-scaled advantages, AdamW lr/betas/weight decay with a constant schedule, grad-norm
clip and steps (benchmarks/bench_trl.grpo_config maps them), and the reward: hicra's `score_completions` (a reply cut at the
budget scores 0) as two TRL reward functions, correctness and answer-in-form, weighted [1, format_reward].
Validation: `hicra.evaluation.generation.sample_answers` (greedy, strict, the task's held-out questions, the
rollout's validation budget) at step 0, every `val_every_n_steps` and at the end: what hicra's module does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the hicra -> TRL config mapping lives with the step benchmark

from bench_hicra import compose, prompt_batches
from bench_trl import grpo_config
from omegaconf import open_dict

from hicra.config.instantiate import build
from hicra.evaluation.generation import sample_answers
from hicra.rollout.hf import eos_token_ids
from hicra.tasks.scoring import score_completions
from hicra.tracking.store import log_run_metadata
from hicra.training.run import build_logger
from hicra.training.run_context import demonstrations

# TRL's log keys -> hicra's names for the same quantity (both logged; TRL's under trl/*).
TRL_TO_HICRA = {"reward": "train/reward_mean", "rewards/correctness/mean": "train/accuracy",
                "rewards/answer_form/mean": "train/boxed_frac", "completions/mean_length": "train/response_length",
                "completions/clipped_ratio": "train/truncated_frac", "entropy": "policy/entropy",
                "grad_norm": "optim/grad_norm"}


def validation_metrics(model, tokenizer, task, sampler, cfg) -> dict[str, float]:
    """val/* exactly as hicra's module computes them: one greedy reply per held-out question, strict scoring."""
    was_training = model.training
    records = sample_answers(model, tokenizer, task, task.val_examples(), sampler, num_samples=1, greedy=True,
                             batch_size=cfg.val_batch_size, system_prompt=cfg.system_prompt, desc="val",
                             demonstrations=demonstrations(cfg))
    model.train(was_training)
    n = len(records)
    return {"val/accuracy": sum(r["correct"] for r in records) / n,
            "val/response_length": sum(r["num_tokens"] for r in records) / n,
            "val/boxed_frac": sum(r["boxed"] for r in records) / n,
            "val/truncated_frac": sum(r["truncated"] for r in records) / n}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--experiment", default="learning_parity")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for hicra-train")
    args = parser.parse_args()

    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOTrainer

    cfg = compose(["experiment=chain_sum_default", "algorithm=grpo", "planner=none", f"seed={args.seed}",
                   f"logger.experiment_name={args.experiment}", *args.overrides])
    with open_dict(cfg):
        cfg.logger.run_name = f"trl_grpo__s{args.seed}"
        cfg.logger.tags = {"framework": "trl"}
    choices = {"algorithm": "grpo", "planner": "none"}
    started = time.time()
    logger = build_logger(cfg, choices)
    out_dir = ROOT / cfg.paths.output_dir / "learning_parity" / logger.run_id
    log_run_metadata(logger, cfg, choices, out_dir)

    steps = int(cfg.trainer.max_steps)
    bundle = build(cfg.model, gradient_checkpointing=False, share_prompt_prefix=False)  # stock SDPA, as TRL runs it
    batches, task = prompt_batches(cfg, bundle.tokenizer, steps)
    prompts = [p for b in batches for p in b["prompts"]]
    examples = [e for b in batches for e in b["examples"]]
    dataset = Dataset.from_dict({"prompt": prompts, "example_index": list(range(len(prompts)))})
    sampler = build(cfg.rollout)

    eos_ids = set(eos_token_ids(bundle.tokenizer, bundle.model))

    last: dict = {}

    def scored(completions, completion_ids, example_index):
        """hicra's own scoring of TRL's completions (a reply without EOS, cut at the budget, scores 0 and is not in
        form); both reward functions see the same batch, so it is verified once."""
        key = (tuple(completions), tuple(example_index))
        if last.get("key") != key:
            truncated = [not eos_ids.intersection(ids) for ids in completion_ids]
            last.update(key=key, value=score_completions(task, completions, [examples[i] for i in example_index],
                                                         truncated))
        return last["value"]

    def correctness(prompts, completions, completion_ids, example_index, **_):
        return scored(completions, completion_ids, example_index).scores

    def answer_form(prompts, completions, completion_ids, example_index, **_):
        return [float(x) for x in scored(completions, completion_ids, example_index).in_form]

    class Validate(TrainerCallback):
        def _validate(self, model, step: int) -> None:
            metrics = validation_metrics(model, bundle.tokenizer, task, sampler, cfg)
            logger.log_metrics(metrics, step=step)
            print(f"[trl] step {step}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()), flush=True)

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self._validate(model, 0)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % cfg.val_every_n_steps == 0 or state.global_step == steps:
                self._validate(model, state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:  # a training step's log (TRL logs every step: logging_steps=1)
                step = state.global_step - 1  # the rollout was sampled by the policy before this update: hicra's axis
                metrics = {f"trl/{k}": float(v) for k, v in logs.items() if isinstance(v, (int, float))}
                metrics |= {name: float(logs[key]) for key, name in TRL_TO_HICRA.items() if key in logs}
                logger.log_metrics(metrics, step=step)

    with tempfile.TemporaryDirectory(prefix="parity-trl-") as tmp:
        trl_args = grpo_config(cfg, steps, fixed_length=False, gradient_checkpointing=False, out_dir=tmp)
        trl_args.reward_weights = [1.0, float(cfg.format_reward)]
        trainer = GRPOTrainer(model=bundle.model, reward_funcs=[correctness, answer_form], args=trl_args,
                              train_dataset=dataset, processing_class=bundle.tokenizer, callbacks=[Validate()])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    logger.log_metrics({"perf/run_wall_s": time.time() - started}, step=steps)
    logger.finalize("success")
    print(f"[trl] seed {args.seed}: MLflow run {logger.run_id} in '{args.experiment}', {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
