"""Question/answer data from local files (GSM8K, MATH, DAPO-style dumps), scored with math-verify."""

from __future__ import annotations

import random
from pathlib import Path

from hicra.errors import ConfigError
from hicra.tasks.answers import extract_boxed
from hicra.tasks.base import DEFAULT_INSTRUCTION, Example, Task, question_key
from hicra.tasks.data_files import check_data_file, read_records, text_value
from hicra.tasks.math_equivalence import answers_match


class LocalFileTask(Task):
    """Questions and reference answers read from a JSONL/JSON/Parquet file.

    Reference answers are normalised so that they compare with a boxed model answer: a GSM8K solution
    (``... #### 42``) keeps only the part after ``####``, and a MATH/DAPO-style worked solution keeps the content
    of its last ``\\boxed{}``. Validation is `val_path` if given; otherwise `val_size` distinct questions are held out
    of the training file by a `seed`-ed shuffle (the training split always keeps at least one question). Either
    way validation is held out: it holds each question once, and no training row repeats a validation question
    (rows are dropped from training; questions compare with whitespace runs collapsed). Answers that are not
    strings follow `hicra.tasks.data_files.text_value`. Files are read on first use; a missing file is reported at
    construction.
    """

    def __init__(
        self,
        path: str,
        question_key: str = "question",
        answer_key: str = "answer",
        val_path: str | None = None,
        val_size: int = 64,
        seed: int = 0,
        instruction: str = DEFAULT_INSTRUCTION,
        last_number_fallback: bool = False,
    ) -> None:
        check_data_file(path)
        if val_path is not None:
            check_data_file(val_path)
        if not isinstance(val_size, int) or val_size < 0:
            raise ConfigError(f"task.val_size must be a non-negative integer, got {val_size!r}")
        self.path, self.val_path = path, val_path
        self.question_key, self.answer_key = question_key, answer_key
        self.val_size, self.seed = val_size, seed
        self.instruction = instruction
        self.last_number_fallback = last_number_fallback
        self.name = Path(path).stem
        self._splits: tuple[list[Example], list[Example]] | None = None

    def train_examples(self) -> list[Example]:
        return self._load()[0]

    def val_examples(self) -> list[Example]:
        return self._load()[1]

    def score_answer(self, prediction: str, example: Example) -> float:
        """1.0 if math-verify finds `prediction` equivalent to the reference answer, else 0.0."""
        return 1.0 if answers_match(example.answer, prediction) else 0.0

    def _load(self) -> tuple[list[Example], list[Example]]:
        if self._splits is None:
            examples = self._read(self.path)
            if self.val_path is not None:
                val = list(_first_rows(self._read(self.val_path)).values())
                held_out = {question_key(ex.question) for ex in val}
                train = [ex for ex in examples if question_key(ex.question) not in held_out]
                if not train:
                    raise ConfigError(f"every question of task.path '{self.path}' is also in task.val_path "
                                      f"'{self.val_path}': nothing is left to train on")
                self._splits = (train, val)
            else:
                self._splits = _holdout_split(examples, self.val_size, self.seed)
        return self._splits

    def _read(self, path: str) -> list[Example]:
        return [self._example(path, where, record) for where, record in read_records(path)]

    def _example(self, path: str, where: str, record: dict) -> Example:
        question = _field(path, where, record, self.question_key)
        answer = normalize_reference(_field(path, where, record, self.answer_key))
        if not answer:
            raise ConfigError(f"data file '{path}' {where}: key '{self.answer_key}' has no final answer")
        return Example(question=question, answer=answer, meta={"source": f"{path} {where}"})


def normalize_reference(answer: str) -> str:
    """The final answer inside a reference solution: after GSM8K's ``####``, else inside its last box."""
    if "####" in answer:
        return answer.rsplit("####", 1)[1].strip()
    boxed = extract_boxed(answer)
    return boxed if boxed is not None else answer.strip()


def _field(path: str, where: str, record: dict, key: str) -> str:
    value = record.get(key)
    if value is None:  # a gap in a Parquet text column; a NaN (a number column's gap) is text_value's to refuse
        keys = ", ".join(map(str, record)) or "none"
        raise ConfigError(f"data file '{path}' {where}: missing key '{key}' (keys: {keys})")
    return text_value(value, path, where, key)


def _first_rows(examples: list[Example]) -> dict[str, Example]:
    """The first row of each distinct question, in file order, keyed by `question_key`."""
    firsts: dict[str, Example] = {}
    for example in examples:
        firsts.setdefault(question_key(example.question), example)
    return firsts


def _holdout_split(examples: list[Example], val_size: int, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out `val_size` distinct questions chosen by a seeded shuffle: validation gets each one's first row, and
    every row repeating one leaves training. Both splits keep file order. (A file without repeats splits exactly as
    a shuffle of its rows would.)"""
    firsts = _first_rows(examples)
    questions = list(firsts)
    order = list(range(len(questions)))
    random.Random(seed).shuffle(order)  # a private RNG: the split depends on `seed` only
    held_out = {questions[i] for i in order[: min(val_size, len(questions) - 1)]}
    train = [ex for ex in examples if question_key(ex.question) not in held_out]
    val = [firsts[q] for q in questions if q in held_out]
    return train, val
