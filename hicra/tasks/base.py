"""What a task is: questions with reference answers, split into train/validation, plus a scorer.

Every task shares one answer convention: the model's final answer is the content of the last ``\\boxed{}`` in
its raw completion. `Task.score` applies that convention once, so a completion with no box scores 0 on every
task, and subclasses only compare an extracted answer with the reference (`score_answer`).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from hicra.tasks.answers import extract_boxed, extract_last_number
from hicra.tasks.bounded import DEFAULT_TIMEOUT_S, VerifierFaults, VerifierTimeout, VerifierUnavailable, time_limit

# Short, imperative, and naming the exact output format: a 135M model follows a concrete format request far
# more often than an abstract one ("reason carefully ..."), and the box is the only thing the scorer reads.
DEFAULT_INSTRUCTION = "Think step by step, then give the final answer in \\boxed{}."

# A decimal digit other than 0-9 (Arabic-Indic ٤٢, fullwidth ４２, Devanagari ४२, ...: Unicode category Nd, which
# `\d`, `int`, `float` and `Decimal` all read). Every task reads ASCII digits only, so an answer written with these
# scores 0 everywhere: the prompt and every reference use ASCII, the last-number reader and math-verify read ASCII
# only, and reasoning-gym's `Decimal`/`float` verifiers would otherwise pay for the same number spelled another way.
_NON_ASCII_DIGIT = re.compile(r"(?![0-9])\d")


VERIFIED = ("boxed", "last number")  # read_answer's rules whose answer the verifier scores


def question_key(question: str) -> str:
    """What makes two questions the same question: their text with whitespace runs collapsed (held-out checks)."""
    return " ".join(question.split())


@dataclass(frozen=True)
class Example:
    """One question with its reference answer.

    `answer` is the normalised reference (e.g. ``42``, ``\\frac{1}{2}``); `meta` holds whatever the task's
    scorer needs beyond it (the reasoning-gym entry, the source line of a data file, ...).
    """

    question: str
    answer: str
    meta: dict = field(default_factory=dict)


class Task(ABC):
    """A source of train/validation examples and a reward for completions.

    Subclasses set `name` and implement `train_examples`, `val_examples` and `score_answer`.
    `instruction` is appended to every question when the prompt is built (see `hicra.tasks.prompts`).
    """

    name: str = "task"
    instruction: str = DEFAULT_INSTRUCTION
    # When a completion has no box, read its last number instead (off = the paper's strict boxed match).
    last_number_fallback: bool = False
    # Wall-clock bound (s) on one completion's verifier call in the worker process (`hicra.tasks.bounded`).
    verify_timeout_s: float = DEFAULT_TIMEOUT_S
    # Extracted answers longer than max(max_answer_chars, 2 * len(reference)) score 0 without reaching a verifier:
    # a final answer is a number or a short expression (long references, e.g. reasoning-gym boards, get twice their
    # length), a verifier's cost grows with length (math-verify: ~1.5 s for 500 characters of `x` on the 2-core VM),
    # and model text can be megabytes long.
    max_answer_chars: int = 512

    @abstractmethod
    def train_examples(self) -> list[Example]:
        """The training questions, in a fixed order (the data module shuffles)."""

    @abstractmethod
    def val_examples(self) -> list[Example]:
        """Held-out questions for validation: none of them is also a training question."""

    @abstractmethod
    def score_answer(self, prediction: str, example: Example) -> float:
        """Score an already extracted answer against `example`, in [0, 1]; `score` pays only 1.0 (fully correct)."""

    def score(self, completion: str, example: Example) -> float:
        """Reward of a raw completion: 1.0 correct, else 0.0 (no ``\\boxed{}`` answer, or, with
        `last_number_fallback`, no number at all; a wrong answer; an answer with non-ASCII digits).

        All or nothing: a verifier's partial credit (reasoning-gym's chain_sum pays len(gold)/len(answer) when the
        gold answer is a substring of the answer, gsm_symbolic 0.01 for any wrong number, countdown 0.01-0.05 for
        any well-formed expression) is not passed on, because a constant answer farms it: on the default task's
        1,550 training questions ``\\boxed{10}`` earned a mean 0.048, more than any single answer is right on (3.6%).

        The completion is untrusted input and this never raises because of it: extraction is linear-time, an
        over-long answer scores 0, and a verifier that passes `verify_timeout_s`, raises, or returns NaN/inf scores
        0 and is counted in `verifier_faults`. Only a verifier worker that cannot start at all
        (`VerifierUnavailable`, an environment problem) propagates.
        """
        prediction, rule = self.read_answer(completion, example)
        if rule not in VERIFIED:
            return 0.0
        try:
            with time_limit(self.verify_timeout_s):
                reward = float(self.score_answer(prediction, example))
        except VerifierTimeout:
            self.verifier_faults.add(timeouts=1)
            return 0.0
        except VerifierUnavailable:
            raise
        except Exception:  # noqa: BLE001 - a verifier failing on model text costs this sample, not the run
            self.verifier_faults.add(errors=1)
            return 0.0
        if not math.isfinite(reward):
            self.verifier_faults.add(errors=1)
            return 0.0
        return 1.0 if reward >= 1.0 else 0.0

    def read_answer(self, completion: str, example: Example) -> tuple[str | None, str]:
        """(the answer `score` reads from `completion`, how it was read): `boxed` or `last number` (the fallback)
        go to the verifier; `no answer`, `too long` and `non-ASCII digits` score 0 without it. The completions
        page shows both, so a reward can be audited."""
        prediction, rule = extract_boxed(completion), "boxed"
        if prediction is None and self.last_number_fallback:
            prediction, rule = extract_last_number(completion), "last number"
        if prediction is None:
            return None, "no answer"
        if len(prediction) > max(self.max_answer_chars, 2 * len(example.answer)):
            return prediction, "too long"
        if _NON_ASCII_DIGIT.search(prediction):
            return prediction, "non-ASCII digits"
        return prediction, rule

    def answer_in_form(self, completion: str) -> bool:
        """Whether `completion` commits to an answer in the form the prompt asks for: a closed ``\\boxed{}``.

        What a format reward pays for (`hicra.tasks.scoring.shaped_rewards`), right or wrong; never the accuracy.
        """
        return extract_boxed(completion) is not None

    @property
    def verifier_faults(self) -> VerifierFaults:
        """Verifier timeouts and errors of this task's `score` calls since the last ``verifier_faults.read()``."""
        faults = self.__dict__.get("_verifier_faults")
        if faults is None:  # subclasses do not call Task.__init__, so created on first use
            faults = self.__dict__.setdefault("_verifier_faults", VerifierFaults())
        return faults
