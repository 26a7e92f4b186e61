"""Rewards of untrusted completions: a scorer that raises (or returns NaN) on one completion costs that sample,
never the run. Counted and reported by the trainer as `faults/reward_errors`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class ScoredBatch:
    scores: list[float]  # one reward per completion; 0.0 where the scorer failed
    errors: list[str] = field(default_factory=list)  # one line per failed completion


def score_completions(task, texts: list[str], examples: list) -> ScoredBatch:
    """`task.score(text, example)` for each pair; an exception or a non-finite value scores 0 and is recorded."""
    batch = ScoredBatch(scores=[])
    for text, example in zip(texts, examples, strict=True):
        try:
            score = float(task.score(text, example))
            if not math.isfinite(score):
                raise ValueError(f"non-finite reward {score}")
        except Exception as err:  # noqa: BLE001 - any scorer failure on model text is that sample's problem
            batch.errors.append(f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''} "
                                f"| completion starts {text[:120]!r}")
            score = 0.0
        batch.scores.append(score)
    return batch
