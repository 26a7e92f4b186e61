"""A rollout must fit the model's context: the longest prompt plus the generation budget. Past it, positions have no
trained embedding and a huge budget (rollout.max_new_tokens=1e9) would generate for hours; refused before any MLflow
run exists and before the step-0 validation starts."""

from __future__ import annotations

from hicra.errors import ConfigError
from hicra.tasks.prompts import Demonstrations, build_chat_prompt


def longest_prompt_tokens(tokenizer, task, system_prompt: str | None, max_prompt_tokens: int,
                          demonstrations: Demonstrations = None) -> int:
    """Tokens of the longest training or validation prompt as the sampler sees it (cut at max_prompt_tokens)."""
    questions = [ex.question for ex in (*task.train_examples(), *task.val_examples())]
    prompts = [build_chat_prompt(tokenizer, q, task.instruction, system_prompt, demonstrations=demonstrations)
               for q in questions]
    lengths = tokenizer(prompts, add_special_tokens=False)["input_ids"] if prompts else []
    return min(max(map(len, lengths), default=0), max_prompt_tokens)


def check_fits_context(model_config, longest_prompt: int, sampler) -> None:
    """ConfigError when the longest prompt plus rollout.max_new_tokens (or val_max_new_tokens) exceeds the model's
    max_position_embeddings; a model config without one (no fixed context) is not checked."""
    context = getattr(model_config, "max_position_embeddings", None)
    if not isinstance(context, int):
        return
    budgets = {"rollout.max_new_tokens": sampler.max_new_tokens}
    if sampler.val_max_new_tokens != sampler.max_new_tokens:
        budgets["rollout.val_max_new_tokens"] = sampler.val_max_new_tokens
    for key, budget in budgets.items():
        if longest_prompt + budget > context:
            raise ConfigError(f"{key}={budget} plus the longest prompt ({longest_prompt} tokens) exceeds the model's "
                              f"context of {context} tokens (max_position_embeddings); allowed: {key} <= "
                              f"{context - longest_prompt}")
