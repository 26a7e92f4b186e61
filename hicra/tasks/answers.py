"""Pull the final answer out of a model completion or a worked solution.

The convention across every task is that the answer is the content of the *last* ``\\boxed{...}`` (or
``\\fbox{...}``): models often box intermediate results or restate the answer, and the last box is what
they committed to. Completions are untrusted text of any length, so every scan is a single forward pass
with patterns that cannot backtrack (no nested quantifiers), i.e. linear time: a 1 MB completion, 200,000
unclosed ``\\boxed{`` or 100,000 nested braces take at most ~0.2 s on the 2-core VM (tests/tasks/test_answers.py). Nothing
here evaluates the text, and what is returned may still be arbitrarily long: `Task.score` caps its length before
a verifier sees it.
"""

from __future__ import annotations

import re

# A box opener: the command, optional blanks, then the opening brace. `\boxed` without a brace (prose such as
# "put it in \boxed") does not match.
_OPENER = re.compile(r"\\(?:boxed|fbox)[ \t]*\{")
# What matters for brace matching: an escape (`\{` is a literal brace, not grouping) or a brace.
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in `text`, stripped, or None.

    Nested braces are matched (``\\boxed{\\frac{1}{2}}`` -> ``\\frac{1}{2}``) and escaped braces
    (``\\{``, ``\\}``) do not count. If the last box is never closed (a completion cut off at the length
    limit) the result is None: an earlier box is a draft, not the committed answer.
    """
    last = None
    for last in _OPENER.finditer(text):
        pass
    if last is None:
        return None
    open_index = last.end() - 1
    close_index = _matching_brace(text, open_index)
    if close_index is None:
        return None
    return text[open_index + 1 : close_index].strip()


def _matching_brace(text: str, open_index: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at `open_index`; None if the text ends first."""
    depth = 0
    for token in _BRACE_TOKEN.finditer(text, open_index):
        char = token.group()
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return token.start()
    return None


# ASCII digits only: `\d` would also take fullwidth or Arabic-Indic digits, which `int()` accepts but math-verify
# does not, so the same completion could score differently on the fast and the slow path.
_NUMBER = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?")


def extract_last_number(text: str) -> str | None:
    """The last number in `text` ("... so the answer is 1,234." -> "1234"), or None.

    The fallback answer reader for models too small to follow the boxed format (lm-eval's "flexible extract").
    Linear time, constant memory beyond the answer (no list of every match).
    """
    last = None
    for last in _NUMBER.finditer(text):
        pass
    return last.group().replace(",", "") if last is not None else None
