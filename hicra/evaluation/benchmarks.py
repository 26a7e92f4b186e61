"""Benchmarks: a name and the `Task` whose held-out questions are asked and whose scorer judges the answers.

Reusing training's `Task` objects keeps scoring identical to training (same answer extraction, same verifier).
`task=None` (benchmark=held_out) means "the evaluated run's own task": it is filled in per checkpoint, because a
study's runs may have trained on different tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

from hicra.errors import ConfigError
from hicra.tasks import Example, Task


@dataclass
class Benchmark:
    name: str | None  # None = the task's own name (the file stem for benchmark=local_file)
    task: Task | None = None  # None = the training run's task


def questions(task: Task, limit: int | None) -> list[Example]:
    """The task's held-out questions in their fixed order, the first `limit` of them."""
    examples = list(task.val_examples())
    if not examples:
        raise ConfigError(f"benchmark task '{task.name}' has no questions (its val_size is 0?)")
    return examples if limit is None else examples[:limit]


def skipped_count(task: Task) -> int:
    """Problems the task left out because their answer cannot be checked (CHAMP's yes/no, prose, ...)."""
    return len(getattr(task, "skipped", ()))
