"""Renamed metrics: runs logged before a rename stay readable by hicra-analyze, hicra-compare and the studies.

The hierarchy diagnostics were logged under `hicra/*` until 2026-12; GRPO runs log them too, so they now live under
`hierarchy/*`. Readers map an old name to its current one when they load a run (`current_name`).
"""

from __future__ import annotations

RENAMED_PREFIXES = {"hicra/": "hierarchy/"}


def current_name(key: str) -> str:
    """`hicra/semantic_entropy` -> `hierarchy/semantic_entropy`; any other name as is."""
    for old, new in RENAMED_PREFIXES.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def legacy_names(key: str) -> list[str]:
    """The names a metric may have been logged under, current first."""
    return [key] + [old + key[len(new):] for old, new in RENAMED_PREFIXES.items() if key.startswith(new)]
