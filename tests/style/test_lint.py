"""The code passes ruff: the rules of the ruff minor version pyproject.toml pins (the dev extra), with its settings.

A lint gate inside the suite, so `make test` and CI hold it without a separate step. The pin is the promise: ruff's
default rules change between minor versions, so an unpinned ruff could fail this test on a fresh machine for code
nobody changed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import PROJECT_ROOT

RUFF = Path(sys.executable).with_name("ruff")


def test_ruff_finds_nothing():
    done = subprocess.run([str(RUFF), "check", "--no-cache", "--output-format", "concise", "."], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"ruff check . found:\n{done.stdout}{done.stderr}"
