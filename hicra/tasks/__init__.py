"""Tasks: where questions come from, how prompts are built, and how completions are scored.

A Hydra ``task`` option instantiates one `Task`, e.g. ``_target_: hicra.tasks.ReasoningGymTask`` with
``dataset: chain_sum`` and difficulty knobs at the top level, or ``_target_: hicra.tasks.LocalFileTask``.
"""

from hicra.tasks.answers import extract_boxed
from hicra.tasks.base import DEFAULT_INSTRUCTION, Example, Task
from hicra.tasks.champ import ChampTask
from hicra.tasks.eval_file import EvalFileTask
from hicra.tasks.local_file import LocalFileTask
from hicra.tasks.prompts import build_chat_prompt
from hicra.tasks.reasoning_gym_task import ReasoningGymTask

__all__ = [
    "DEFAULT_INSTRUCTION",
    "ChampTask",
    "EvalFileTask",
    "Example",
    "LocalFileTask",
    "ReasoningGymTask",
    "Task",
    "build_chat_prompt",
    "extract_boxed",
]
