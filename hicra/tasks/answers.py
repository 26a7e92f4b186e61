"""Pull the final answer out of a model completion or a worked solution.

The convention across every task is that the answer is the content of the *last* ``\\boxed{...}`` (or
``\\fbox{...}``): models often box intermediate results or restate the answer, and the last box is what
they committed to. Completions are untrusted text of any length, so the scan is linear and uses no
backtracking regex.
"""

from __future__ import annotations

_COMMANDS = ("\\boxed", "\\fbox")


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in `text`, or None.

    Nested braces are matched (``\\boxed{\\frac{1}{2}}`` -> ``\\frac{1}{2}``) and escaped braces
    (``\\{``, ``\\}``) do not count. A command not followed by ``{`` (e.g. prose mentioning ``\\boxed``) is
    skipped. If the last real box is never closed (a completion cut off at the length limit) the result is
    None: an earlier box is a draft, not the answer.
    """
    start = _last_open_brace(text)
    if start is None:
        return None
    end = _matching_brace(text, start)
    if end is None:
        return None
    return text[start + 1 : end].strip()


def _last_open_brace(text: str) -> int | None:
    """Index of the ``{`` that opens the last boxed command, searching backwards.

    Only the command whose hit was rejected is searched again, and only before that hit, so text full of
    brace-less ``\\boxed`` mentions is still scanned about once per command (linear, not quadratic).
    """
    hits = {cmd: text.rfind(cmd) for cmd in _COMMANDS}
    while True:
        cmd = max(hits, key=hits.__getitem__)
        pos = hits[cmd]
        if pos < 0:
            return None
        i = pos + len(cmd)
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            return i
        hits[cmd] = text.rfind(cmd, 0, pos)  # `\boxed` without a brace: look further back


def _matching_brace(text: str, open_index: int) -> int | None:
    """Index of the ``}`` closing the brace at `open_index`, skipping backslash escapes; None if unbalanced."""
    depth = 0
    i = open_index
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2  # `\{` and `\}` are literal braces, not grouping
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None
