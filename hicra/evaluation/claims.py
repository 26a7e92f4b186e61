"""Claims, so that two hicra-eval processes on one study do not both evaluate a training run.

A claim is an exclusive `flock` on a file in the training run's folder (the one place every evaluator of that run
reads: its final_model/ is there), one file per (store, training run, eval settings). It is held while that
checkpoint is evaluated and logged. The OS drops it when the process ends, however it ends, so a killed hicra-eval
leaves no stale claim to clean up; the empty file stays behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FOLDER = "eval_claims"


def claim_file(run_dir: Path, store: str, source_run_id: str, settings: dict[str, str]) -> Path:
    """Where the claim on evaluating `source_run_id` with `settings` in `store` lives."""
    key = json.dumps([store, source_run_id, sorted(settings.items())])
    return run_dir / FOLDER / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.lock"


@contextmanager
def claim(path: Path | None) -> Iterator[bool | None]:
    """Yields True while this process holds the claim at `path`, False when another process holds it, and None when
    no claim can be taken (`path` None, or a folder this user cannot write: evaluated unclaimed)."""
    if path is None:
        yield None
        return
    try:
        path.parent.mkdir(exist_ok=True)
        handle = path.open("a")
    except OSError:
        yield None
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
