"""What a completions JSON (`completions/completions_stepNNNNNN.json`, written by hicra-train's sample logger) must
hold for the token viewer to show it; anything else is skipped with one line naming the file.

The file is read from a run's artifacts, which anyone with write access to the store can replace: its shape is
checked before anything is rendered, so a hand-edited or truncated file loses its own page only, not the report.
"""

from __future__ import annotations

from numbers import Real


def _number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _step(value) -> int | None:
    """The step as an int: an integer, or a string of digits (as some writers keep it); None otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None


def _row_problem(row) -> str | None:
    if not isinstance(row, dict):
        return f"is a {type(row).__name__}, not an object"
    pieces = row.get("pieces", [])
    if not isinstance(pieces, list) or not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                                               for p in pieces):
        return "'pieces' is not a list of [token text, is planning] pairs"
    advantages = row.get("token_advantages")
    if advantages is not None and not (isinstance(advantages, list) and
                                       all(a is None or _number(a) for a in advantages)):
        return "'token_advantages' is not a list of numbers"
    wrong = [key for key in ("reward", "advantage") if key in row and not _number(row[key])]
    return f"'{wrong[0]}' is not a number" if wrong else None


def checked_sample(data) -> tuple[dict | None, str | None]:
    """(the sample with an int `step`, None) when the viewer can show it, else (None, what is wrong)."""
    if not isinstance(data, dict):
        return None, f"holds a JSON {type(data).__name__}, not an object with 'step' and 'rows'"
    if "step" not in data:
        return None, "has no 'step'"
    step = _step(data["step"])
    if step is None:
        return None, f"'step' is {data['step']!r:.40}, not an integer"
    if not isinstance(data.get("rows"), list):
        return None, "'rows' is not a list"
    for i, row in enumerate(data["rows"]):
        problem = _row_problem(row)
        if problem:
            return None, f"row {i} {problem}" if problem.startswith("is ") else f"row {i}: {problem}"
    return {**data, "step": step}, None
