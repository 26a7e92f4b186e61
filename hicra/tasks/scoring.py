"""Rewards of untrusted completions: a scorer that raises (or returns NaN) on one completion costs that sample,
never the run. Counted and reported by the trainer as `faults/reward_errors`.

The training reward can add a format term to correctness (`shaped_rewards`); accuracy always counts correctness
alone (``score >= 1``), so a format bonus can never make a wrong answer look right."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class ScoredBatch:
    scores: list[float]  # one correctness score per completion in [0, 1]; 0.0 where the scorer failed
    in_form: list[bool] = field(default_factory=list)  # the answer is given in the asked form (Task.answer_in_form)
    errors: list[str] = field(default_factory=list)  # one line per failed completion


def score_completions(task, texts: list[str], examples: list, truncated: list[bool] | None = None) -> ScoredBatch:
    """`task.score(text, example)` for each pair; an exception or a non-finite value scores 0 and is recorded.

    A completion flagged in `truncated` (cut at the token budget, no EOS) scores 0 and is not in form without
    reaching the verifier: the reply never finished, so whatever it boxed on the way is a draft, not its answer.
    """
    batch = ScoredBatch(scores=[])
    for index, (text, example) in enumerate(zip(texts, examples, strict=True)):
        if truncated is not None and truncated[index]:
            batch.scores.append(0.0)
            batch.in_form.append(False)
            continue
        try:
            score = float(task.score(text, example))
            if not math.isfinite(score):
                raise ValueError(f"non-finite reward {score}")
        except Exception as err:  # noqa: BLE001 - any scorer failure on model text is that sample's problem
            batch.errors.append(f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''} "
                                f"| completion starts {text[:120]!r}")
            score = 0.0
        batch.scores.append(score)
        batch.in_form.append(bool(task.answer_in_form(text)))
    return batch


def shaped_rewards(correctness: Tensor, in_form: Tensor, format_weight: float) -> Tensor:
    """Training reward (B,): correctness (B,) in [0, 1] plus `format_weight` where the answer is in form (B,) bool.

    A small model that rarely writes the asked answer form (SmolLM2-135M boxes <10% of sampled replies) gives strict
    correctness almost no mixed groups; the format term gives those groups a gradient toward the form, after which
    correctness separates the replies. format_weight=0 returns `correctness` unchanged.
    """
    return correctness + format_weight * in_form.to(correctness.dtype)
