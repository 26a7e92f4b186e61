"""Tasks: where questions come from, how prompts are built, and how completions are scored.

A Hydra ``task`` option instantiates one `Task`, e.g. ``_target_: hicra.tasks.ReasoningGymTask`` with
``dataset: chain_sum`` and difficulty knobs at the top level, or ``_target_: hicra.tasks.LocalFileTask``.

`ChampTask` (math-verify) and `ReasoningGymTask` (reasoning-gym) are imported on first use: the trainer imports this
package for `extract_boxed`, and a run on another task (or a machine without those packages, such as the GPU
benchmark host) should not pay for, or need, either verifier library.
"""

from hicra.tasks.answers import extract_boxed
from hicra.tasks.base import DEFAULT_INSTRUCTION, Example, Task
from hicra.tasks.eval_file import EvalFileTask
from hicra.tasks.local_file import LocalFileTask
from hicra.tasks.prompts import build_chat_prompt

_LAZY = {"ChampTask": "hicra.tasks.champ", "ReasoningGymTask": "hicra.tasks.reasoning_gym_task"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
