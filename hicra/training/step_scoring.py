"""A rollout's replies as text, and their scores: what the training step and a validation pass share."""

from __future__ import annotations

from hicra.rollout.hf import RolloutBatch
from hicra.tasks.scoring import ScoredBatch, score_completions


def decode_replies(tokenizer, rollout: RolloutBatch) -> list[str]:
    ids = rollout.response_ids.masked_fill(~rollout.response_mask, tokenizer.pad_token_id)  # (B,T)
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def score_replies(module, texts: list[str], examples: list, rollout: RolloutBatch) -> ScoredBatch:
    """Correctness and answer form (0 for a reply cut at the token budget unless `score_truncated`); a scorer
    failure scores that sample 0 and is counted (faults/reward_errors)."""
    truncated = None if module.score_truncated else rollout.truncated.tolist()
    scored = score_completions(module.task, texts, examples, truncated)
    module.faults.count_scoring(scored.errors, module.task, module.loggers)
    return scored


def score_rollout(module, rollout: RolloutBatch, examples: list, group_size: int) -> tuple[list[str], ScoredBatch]:
    """The replies (B,) as text and their scores; rows come grouped prompt by prompt, `group_size` per example."""
    texts = decode_replies(module.tokenizer, rollout)
    return texts, score_replies(module, texts, [ex for ex in examples for _ in range(group_size)], rollout)
