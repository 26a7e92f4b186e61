"""The jobs of a sweep, expanded on the command line so that each job's values are checked before the first starts.

Hydra's basic sweeper launches the cartesian product of the sweeps in `hydra.sweeper.params` and on the command
line (a later value of a key replacing an earlier one); `jobs` expands them the same way. Optuna's search space
(`hparams_search=...`) is not a list of jobs: its discrete choices are expanded like sweeps and each interval
stands for its two ends, so every value the search can draw lies within values checked here.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from hydra.core.override_parser.overrides_parser import OverridesParser


def jobs(args: list[str], sweeper_params: Mapping[str, str] | None = None) -> list[list[str]]:
    """The override list of every job of `hicra-train -m <args>` (hydra.* overrides left out: they are Hydra's)."""
    lines = [f"{key}={value}" for key, value in (sweeper_params or {}).items()]
    lines += [a for a in args if ("=" in a and not a.startswith("-")) or a.startswith("~")]
    choices: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        if override.key_or_group.startswith("hydra"):
            continue
        key = override.get_key_element()  # with its +, ++ or ~
        if not override.is_sweep_override():
            choices[key] = [override.input_line]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:  # interval(start, end): Optuna draws between its ends
            interval = override.value()
            choices[key] = [f"{key}={interval.start}", f"{key}={interval.end}"]
    return [list(job) for job in itertools.product(*choices.values())]


def varying(job: list[str], all_jobs: list[list[str]]) -> list[str]:
    """The overrides of `job` that differ between jobs: what names it in a message."""
    return [override for override in job if any(override not in other for other in all_jobs)]


def is_sweep(value: str) -> bool:
    """Whether `key=<value>` sweeps (`a,b`, `range(...)`, `choice(...)`, `interval(...)`, `glob(...)`), as Hydra's own
    parser reads it: a comma inside a list, a dict or quotes, or escaped, is part of one value."""
    (override,) = OverridesParser.create().parse_overrides([f"key={value}"])
    return override.is_sweep_override()


def swept_keys(args: list[str]) -> set[str]:
    """The keys that a command line's `key=value` arguments sweep, without their +, ++ or ~."""
    pairs = [a.split("=", 1) for a in args if "=" in a and not a.startswith("-")]
    return {key.lstrip("+~") for key, value in pairs if is_sweep(value)}
