"""A local benchmark file (AIME / MATH500 style): every record is an evaluation question, scored with math-verify.

Records need a question (`problem` as in MATH500/AIME dumps, or `question`) and an `answer`: a final answer
(``"204"``, ``"\\frac{1}{2}"``) or a worked solution whose last ``\\boxed{}`` (or GSM8K ``#### 42``) is the answer.
Unlike `LocalFileTask` there is no train/validation split: nothing trains on a benchmark.
"""

from __future__ import annotations

from pathlib import Path

from hicra.errors import ConfigError
from hicra.tasks.base import DEFAULT_INSTRUCTION, Example, Task
from hicra.tasks.data_files import check_data_file, read_records, text_value
from hicra.tasks.local_file import normalize_reference
from hicra.tasks.math_equivalence import answers_match

QUESTION_KEYS = ("problem", "question")  # tried in this order when question_key is null


class EvalFileTask(Task):
    """All records of a JSONL/JSON/Parquet file, in file order, as evaluation questions."""

    def __init__(self, path: str, question_key: str | None = None, answer_key: str = "answer",
                 instruction: str = DEFAULT_INSTRUCTION, last_number_fallback: bool = False) -> None:
        check_data_file(path)  # a missing file fails at construction, before any model loads
        self.path, self.question_key, self.answer_key = path, question_key, answer_key
        self.instruction, self.last_number_fallback = instruction, last_number_fallback
        self.name = Path(path).stem
        self._examples: list[Example] | None = None

    def train_examples(self) -> list[Example]:
        raise ConfigError(f"'{self.path}' is an evaluation benchmark: it has no training split "
                          "(train on it with task=local_file)")

    def val_examples(self) -> list[Example]:
        if self._examples is None:
            records = read_records(self.path)
            question_key = self.question_key or next((k for k in QUESTION_KEYS if k in records[0][1]), "question")
            self._examples = [self._example(where, record, question_key) for where, record in records]
        return self._examples

    def score_answer(self, prediction: str, example: Example) -> float:
        return 1.0 if answers_match(example.answer, prediction) else 0.0

    def _example(self, where: str, record: dict, question_key: str) -> Example:
        question = self._field(where, record, question_key, "question_key")
        answer = normalize_reference(self._field(where, record, self.answer_key, "answer_key"))
        if not answer:
            raise ConfigError(f"data file '{self.path}' {where}: key '{self.answer_key}' has no final answer")
        return Example(question=question, answer=answer, meta={"source": f"{self.path} {where}"})

    def _field(self, where: str, record: dict, key: str, knob: str) -> str:
        value = record.get(key)
        if value is None:  # a gap in a Parquet text column; a NaN (a number column's gap) is text_value's to refuse
            keys = ", ".join(map(str, record)) or "none"
            raise ConfigError(f"data file '{self.path}' {where}: no '{key}' key (keys found: {keys}); "
                              f"name the right one with benchmark.task.{knob}=<key>")
        return text_value(value, self.path, where, key)
