"""Every value key of conf/, with what it may be: one table per root config (train.yaml, eval.yaml).

The tables are what the one-line errors quote ("allowed: ..."), so a value is refused before any model loads and
before any MLflow run exists (hicra.config.values applies them; hicra.config.checks runs them for every job of a
sweep before the first starts). tests/config/test_schema.py composes every option of every group and fails on a
value key without a rule here, so a new setting cannot skip the check.

Which keys a node may hold:
- a node with a `_target_` takes the arguments of its callable: its signature is the documentation of the
  group's free-form keys (`+trainer.fast_dev_run=true` is a Lightning Trainer argument, reasoning-gym's difficulty
  knobs go through ReasoningGymTask's **difficulty); any other key is refused (hicra.config.values);
- a node without one (the root, `faults`, `lora`, `paths`) holds exactly the keys listed here, so a typo'd new key
  (`+prompts_per_stepp=4`) is refused.
Ranges mirror what the code refuses later (Algorithm.__post_init__, HFSampler, ...); the options of an enum come
from hicra/options.py, which the code checks against too (Lightning's precisions are Lightning's, checked by the test).
"""

from __future__ import annotations

import os

from hicra.config.rules import (
    Rule,
    any_text,
    either,
    flag,
    integer,
    integers,
    mapping,
    names,
    node,
    number,
    numbers,
    one_of,
    text,
    worked_examples,
)
from hicra.options import (
    ADVANTAGE_SCALES,
    AGGREGATIONS,
    CACHE_IMPLEMENTATIONS,
    CKPT_KEYWORDS,
    KL_ESTIMATORS,
    LR_DECAYS,
    MODEL_DTYPES,
    PLACEBO_MODES,
    REINFORCE_PP_BASELINES,
    SAMPLER_CORRECTIONS,
)

SEED = integer(0, 2**32 - 1)  # numpy's and Lightning's seed range
FRACTION = number(0, 1, lo_open=True)  # (0, 1]
# Lightning's `precision` values (lightning_fabric's _PRECISION_INPUT): its canonical names, then its aliases.
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", "32", "16", "bf16", "64", 32, 16, 64)
ARITHMETIC_OPERATORS = ("+", "-", "*", "/")  # reasoning-gym basic_arithmetic
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def _under(prefix: str, rules: dict[str, Rule]) -> dict[str, Rule]:
    return {f"{prefix}.{key}": rule for key, rule in rules.items()}


SCALAR = Rule(lambda v: isinstance(v, (str, int, float, bool)), "a string, number or boolean")

ALGORITHM = {
    "group_size": integer(2), "clip_low": number(0, 1, lo_open=True, hi_open=True),
    "clip_high": number(0, 1, lo_open=True, hi_open=True), "aggregation": one_of(*AGGREGATIONS),
    "norm_length": integer(1, null=True), "kl_coef": number(0), "kl_estimator": one_of(*KL_ESTIMATORS),
    "kl_reward_coef": number(0), "kl_reward_estimator": one_of(*KL_ESTIMATORS), "entropy_coef": number(0),
    "num_iterations": integer(1), "needs_planning_mask": flag(), "exclude_truncated": flag(),
    "alpha": number(0, 1, hi_open=True, null=True),
    "overlong_buffer": integer(0), "overlong_penalty": number(0),
    "sampler_correction": one_of(*SAMPLER_CORRECTIONS), "sampler_correction_cap": number(1),
    "dynamic_sampling_rounds": integer(0),
    "advantage_fn.scale": one_of(*ADVANTAGE_SCALES), "advantage_fn.eps": number(0, lo_open=True),
    "advantage_fn.baseline": one_of(*REINFORCE_PP_BASELINES),
}

PLANNER = {
    "grams_path": text(null=True), "rho": FRACTION, "mode": one_of(*PLACEBO_MODES),
    "fraction": number(0, 1, lo_open=True, null=True), "group_size": integer(1), "seed": SEED,
}

MODEL = {
    "name_or_path": text(), "tokenizer_name_or_path": text(), "dtype": one_of(*MODEL_DTYPES),
    "attn_implementation": text(null=True), "gradient_checkpointing": flag(), "share_prompt_prefix": flag(),
    "hidden_size": integer(1), "num_hidden_layers": integer(1), "num_attention_heads": integer(1),
    "num_key_value_heads": integer(1), "intermediate_size": integer(1), "seed": SEED,
}

LORA = {"r": integer(1), "alpha": number(0, lo_open=True), "dropout": number(0, 1, hi_open=True),
        "target_modules": names(single="all-linear")}

OPTIM = {"lr": number(0, lo_open=True), "weight_decay": number(0), "betas": numbers(2, 0, 1, hi_open=True),
         "eps": number(0, lo_open=True), "kahan_sum": flag()}

LR_SCHEDULE = {"decay": one_of(*LR_DECAYS), "warmup_steps": integer(0), "total_steps": integer(1),
               "min_ratio": number(0, 1)}

TASK = {
    "dataset": text(), "train_size": integer(1), "val_size": integer(0), "seed": SEED, "instruction": any_text(),
    "last_number_fallback": flag(), "path": text(), "question_key": text(null=True), "answer_key": text(),
    "val_path": text(null=True),
    # reasoning-gym's difficulty knobs (conf/task/*.yaml), passed through to its dataset config
    "min_terms": integer(1), "max_terms": integer(1), "min_digits": integer(1), "max_digits": integer(1),
    "allow_parentheses": flag(), "allow_negation": flag(), "min_numbers": integer(1), "max_numbers": integer(1),
    "min_value": integer(), "max_value": integer(), "min_target": integer(), "max_target": integer(),
    "difficulty": number(0, lo_open=True),
    "operators": Rule(lambda v: isinstance(v, list) and len(v) > 0 and all(o in ARITHMETIC_OPERATORS for o in v),
                      f"a non-empty list of {', '.join(ARITHMETIC_OPERATORS)}"),  # basic_arithmetic's
}

ROLLOUT = {
    "temperature": number(0, 10, lo_open=True), "top_p": FRACTION, "top_k": integer(0),
    "max_new_tokens": integer(1), "max_prompt_tokens": integer(1), "val_max_new_tokens": integer(1, null=True),
    "min_new_tokens": integer(0), "cache_implementation": one_of(*CACHE_IMPLEMENTATIONS, null=True),
    "prompt_bucket": integer(0, meaning="0 = off"), "packed_linears": flag(), "gpu_memory_utilization": FRACTION,
    "enforce_eager": flag(), "tensor_parallel_size": integer(1), "enable_sleep_mode": flag(),
    "dtype": one_of("auto", *MODEL_DTYPES), "max_model_len": integer(1, null=True), "seed": SEED,
}

TRAINER = {
    "accelerator": one_of(*ACCELERATORS), "devices": either(integer(1), one_of(-1, "auto"), integers(0)),
    "num_nodes": integer(1), "precision": one_of(*PRECISIONS), "max_steps": integer(1),
    "log_every_n_steps": integer(1), "num_sanity_val_steps": integer(-1), "enable_checkpointing": flag(),
    "enable_model_summary": flag(), "use_distributed_sampler": flag(), "strategy": either(text(), node()),
    "strategy.save_distributed_checkpoint": flag(),
}

LOGGER = {"experiment_name": text(), "tracking_uri": text(), "artifact_location": text(null=True),
          "run_name": text(null=True), "tags": mapping(SCALAR), "log_model": either(flag(), one_of("all")),
          "outage_timeout_s": number(0, lo_open=True), "log_final_model": flag(),
          "registered_model_name": text(null=True)}

# Trackers beside MLflow (conf/extra_loggers/, hicra/tracking/extra_loggers.py): Lightning's loggers' arguments.
EXTRA_LOGGERS = {"tensorboard": node(), "tensorboard.save_dir": text(null=True), "tensorboard.name": text(null=True),
                 "tensorboard.version": either(any_text(null=True), integer(0)), "tensorboard.default_hp_metric": flag(),
                 "wandb": node(), "wandb.project": text(null=True), "wandb.name": text(null=True),
                 "wandb.save_dir": text(null=True), "wandb.offline": flag()}

DIAGNOSTICS = {"grams_path": text(null=True), "top_entropy_fraction": FRACTION, "following_words": integer(0),
               "semantic_entropy_occurrences": integer(1), "seed": SEED}

def names_a_checkpoint(value: object) -> bool:
    """`last`, `auto` or a path. A bare word that is neither a keyword nor an existing file or folder is a misspelt
    keyword (`ckpt_path=latest`), refused before anything loads; a path that does not exist is refused as the run
    starts (hicra/training/find_checkpoint.py), which is where a sweep's jobs are told apart."""
    return isinstance(value, str) and value.strip() != "" and (
        value in CKPT_KEYWORDS or "/" in value or value.endswith(".ckpt") or os.path.exists(value))


TRAIN: dict[str, Rule] = {
    "seed": SEED,
    "prompts_per_step": integer(1),
    "micro_batch_size": integer(1),
    "val_every_n_steps": integer(1),
    "val_batch_size": integer(1),
    "completions_every_n_steps": integer(0, meaning="0 = off"),
    "completions_per_sample": integer(1),
    "system_metrics_every_s": number(0),  # 0 = off
    "save_final_model": flag(),
    "checkpoint_every_n_steps": integer(0, meaning="0 = off"),
    "ckpt_path": Rule(lambda v: v is None or names_a_checkpoint(v), "null, last, auto, or a checkpoint file or run "
                                                                      "folder (a path)"),
    "system_prompt": any_text(null=True),
    "demonstrations": worked_examples(null=True),
    "optimized_metric": text(null=True),
    "max_grad_norm": number(0, lo_open=True, null=True),
    "reference_offload": flag(), "reduce_gradients_every_micro_batch": flag(),  # trainer=fsdp only
    # below a correct answer's 1, so a right answer always outscores a well-formatted wrong one
    "format_reward": number(0, 1, hi_open=True),
    "score_truncated": flag(),
    # GiB one device may hold, for the memory plan (hicra/training/memory_check.py); null = the GPU's own memory
    "device_memory_gib": number(0, lo_open=True, null=True),
    "faults.max_skipped_updates_in_a_row": integer(1),
    "paths.output_dir": text(),
    **_under("algorithm", ALGORITHM), **_under("planner", PLANNER), **_under("model", MODEL),
    **_under("lora", LORA), **_under("optim", OPTIM), **_under("task", TASK), **_under("rollout", ROLLOUT),
    **_under("lr_schedule", LR_SCHEDULE),
    **_under("trainer", TRAINER), **_under("logger", LOGGER), **_under("diagnostics", DIAGNOSTICS),
    **_under("extra_loggers", EXTRA_LOGGERS),
}

PROTOCOL = {"name": text(), "num_samples": integer(1), "samples_per_benchmark": mapping(integer(1)),
            "temperature": number(0, 10, lo_open=True), "top_p": FRACTION, "greedy": flag(), "strict": flag(),
            "ks": integers(1), "base_max_new_tokens": integer(1)}

EVAL: dict[str, Rule] = {
    "checkpoint": text(null=True),
    "limit": integer(1, null=True),
    "batch_size": integer(1),
    "max_new_tokens": integer(1, null=True),
    "base_max_new_tokens": integer(1),
    "max_prompt_tokens": integer(1),
    "seed": SEED,
    "system_prompt": any_text(null=True),
    "demonstrations": worked_examples(null=True),
    "device": text(),
    "paths.output_dir": text(),
    "benchmark.name": text(null=True),
    "benchmark.task": node(null=True),  # null = the evaluated run's own task (benchmark=held_out)
    **_under("benchmark.task", TASK), **_under("model", MODEL), **_under("task", TASK),
    **_under("protocol", PROTOCOL), **_under("logger", LOGGER),
}
