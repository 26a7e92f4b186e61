"""Procedurally generated tasks from reasoning-gym, scored by each dataset's own verifier.

Difficulty knobs are the fields of the dataset's config dataclass (minus ``size`` and ``seed``, which this
class sets). For the datasets we use (reasoning-gym 0.1.25):

* ``chain_sum``: ``min_terms`` (2), ``max_terms`` (6), ``min_digits`` (1), ``max_digits`` (4),
  ``allow_negation`` (False). Easiest: ``min_terms=2 max_terms=2 min_digits=1 max_digits=2``.
* ``basic_arithmetic``: the same four ranges, plus ``operators`` (``+ - * /``), ``allow_parentheses`` (True),
  ``allow_negation`` (True), ``format_style`` ("simple"), ``whitespace`` ("single").
* ``gsm_symbolic``: ``difficulty`` (1.0, the only value it accepts).
* ``countdown``: ``min_numbers`` (4), ``max_numbers`` (6), ``min_value`` (1), ``max_value`` (100),
  ``min_target`` (100), ``max_target`` (999), ``operators``, ``shuffle`` (True).

Any other registered dataset works too; a wrong knob name raises a ConfigError listing the allowed ones.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import fields

import reasoning_gym
from reasoning_gym.factory import DATASETS

from hicra.errors import ConfigError
from hicra.tasks.base import DEFAULT_INSTRUCTION, Example, Task, question_key
from hicra.tasks.bounded import run_bounded
from hicra.tasks.reasoning_gym_verifiers import IN_PROCESS_DATASETS, score_in_worker

# Items are generated from Random(seed + index), so validation seeds must sit far from any training index
# range; otherwise val item i would be train item i + offset, word for word.
VAL_SEED_OFFSET = 1_000_003
# Validation candidates drawn per requested validation question, so that dropping the ones also in train
# (common at low difficulty, where the question space is small) still leaves `val_size` questions.
_VAL_OVERSAMPLE = 4
_RESERVED = ("size", "seed")  # set by this class, not difficulty knobs


class ReasoningGymTask(Task):
    """A reasoning-gym dataset as a task.

    Validation: `val_size` distinct questions from seed ``seed + 1_000_003``. Training: the items of
    ``create_dataset(dataset, size=train_size, seed=seed, **difficulty)`` whose question is not a validation
    question, so validation is held out even when the question space is small. Built on first use, cached.

    `score_answer` returns the dataset's own ``score_answer`` as a float in [0, 1]. It is 1.0 for a correct
    answer; some datasets give partial credit (the default verifier and chain_sum give len(oracle)/len(answer) when
    the oracle is a substring of the answer; countdown gives 0.01-0.05 for well-formed wrong expressions), which
    `Task.score` does not pass on: the reward is 1.0 or 0.0.
    """

    def __init__(
        self,
        dataset: str,
        train_size: int = 2000,
        val_size: int = 64,
        seed: int = 0,
        instruction: str = DEFAULT_INSTRUCTION,
        last_number_fallback: bool = False,
        **difficulty,
    ) -> None:
        _check_sizes(train_size, val_size)
        self.name = dataset
        self.instruction = instruction
        self.last_number_fallback = last_number_fallback
        self.train_size = train_size
        self.val_size = val_size
        self.seed = seed
        self.difficulty = {key: _plain(value) for key, value in difficulty.items()}
        _check_config(dataset, self.difficulty, seed)  # fail at construction, not mid-run
        self._train: list[Example] | None = None
        self._val: list[Example] | None = None
        self._scorer = None

    def val_examples(self) -> list[Example]:
        """`val_size` distinct questions from the validation seed; they are withheld from training."""
        if self._val is None:
            candidates = self._create(self.val_size * _VAL_OVERSAMPLE, self.seed + VAL_SEED_OFFSET)
            self._val, seen = [], set()
            for index in range(len(candidates)):
                if len(self._val) == self.val_size:
                    break
                entry = candidates[index]  # generated lazily, so stopping early saves the rest
                if question_key(entry["question"]) not in seen:
                    seen.add(question_key(entry["question"]))
                    self._val.append(_to_example(entry))
        return self._val

    def train_examples(self) -> list[Example]:
        """Up to `train_size` items from the training seed, minus any validation question.

        Validation is chosen first: at low difficulty the question space is small (1-digit a+b has 200), so
        filtering validation against a 2,000-item training set would leave nothing to validate on.
        """
        if self._train is None:
            held_out = {question_key(example.question) for example in self.val_examples()}
            data = self._create(self.train_size, self.seed)
            self._scorer = data
            self._train = [_to_example(entry) for entry in data if question_key(entry["question"]) not in held_out]
            if not self._train:
                raise ConfigError(f"task '{self.name}': every training question is a validation question; "
                                  f"lower task.val_size ({self.val_size}) or raise the difficulty")
        return self._train

    def score_answer(self, prediction: str, example: Example) -> float:
        """The dataset's own verdict on `prediction` (partial credit included; `Task.score` keeps only 1.0).

        Verifiers audited as evaluating nothing and linear-time (`IN_PROCESS_DATASETS`: chain_sum, basic_arithmetic,
        gsm_symbolic) run here. Every other dataset's verifier runs in the bounded worker, where the ones that would
        evaluate model text (countdown's ``parse_expr``, ``eval`` in the matrix puzzles) are guarded; see
        `hicra.tasks.reasoning_gym_verifiers`. A verifier that raises is reported to `Task.score` (scored 0, counted).
        """
        entry = example.meta["entry"]
        if self.name in IN_PROCESS_DATASETS:
            if self._scorer is None:
                self._scorer = self._create(1, self.seed)  # score_answer depends on the config, not on the items
            return float(self._scorer.score_answer(prediction, entry))
        return float(run_bounded(score_in_worker, self.name, self.difficulty, self.seed, prediction, entry))

    def _create(self, size: int, seed: int):
        return reasoning_gym.create_dataset(self.name, size=max(size, 1), seed=seed, **self.difficulty)


def _to_example(entry: dict) -> Example:
    return Example(question=entry["question"], answer=str(entry["answer"]), meta={"entry": entry})


def _plain(value):
    """Hydra hands lists over as ListConfig; reasoning-gym expects plain tuples (its defaults are tuples)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(value)
    return value


def _check_sizes(train_size: int, val_size: int) -> None:
    if not isinstance(train_size, int) or train_size < 1:
        raise ConfigError(f"task.train_size must be a positive integer, got {train_size!r}")
    if not isinstance(val_size, int) or val_size < 0:
        raise ConfigError(f"task.val_size must be a non-negative integer, got {val_size!r}")


def _check_config(dataset: str, difficulty: dict, seed: int) -> None:
    """Raise a one-line ConfigError for an unknown dataset, an unknown knob or a rejected knob value."""
    if dataset not in DATASETS:
        suggestions = difflib.get_close_matches(str(dataset), DATASETS, n=3) or sorted(DATASETS)[:5]
        raise ConfigError(
            f"unknown reasoning-gym dataset '{dataset}'; did you mean: {', '.join(suggestions)} "
            f"({len(DATASETS)} datasets in reasoning_gym.factory.DATASETS)"
        )
    config_cls = DATASETS[dataset][1]
    allowed = [f.name for f in fields(config_cls) if f.name not in _RESERVED]
    for key in difficulty:
        if key not in allowed:
            raise ConfigError(
                f"unknown difficulty option '{key}' for reasoning-gym dataset '{dataset}'; "
                f"allowed: {', '.join(allowed) or '(none)'}"
            )
    try:
        config = config_cls(size=1, seed=seed, **difficulty)
        if hasattr(config, "validate"):
            config.validate()
    except (AssertionError, TypeError, ValueError) as err:
        settings = ", ".join(f"{k}={v!r}" for k, v in difficulty.items())
        reason = str(err) or "invalid value"
        raise ConfigError(f"reasoning-gym dataset '{dataset}' rejects {settings}: {reason}") from err
