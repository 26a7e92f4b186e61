"""The README's local links and pictures point at files of the repository: a screenshot referenced but never committed
(or a file renamed without its link) is a broken image or a dead link on the project's front page."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def local_targets(markdown: str) -> list[str]:
    """Relative link targets without their #anchor: `docs/reliability.md#x` -> `docs/reliability.md`."""
    targets = (m.split("#", 1)[0] for m in LINK.findall(markdown) if "://" not in m and not m.startswith(("#", "mailto:")))
    return sorted({t for t in targets if t})


def test_local_targets_reads_links_and_images_without_anchors():
    text = "[a](docs/x.md#part) ![b](docs/s/y.png) [c](https://e.org/z.png) [d](#section) [e](hicra/)"
    assert local_targets(text) == ["docs/s/y.png", "docs/x.md", "hicra/"]


def test_every_local_link_of_the_readme_exists():
    missing = [t for t in local_targets((ROOT / "README.md").read_text()) if not (ROOT / t).exists()]
    assert missing == []


def test_every_picture_of_the_readme_is_committed():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    pictures = [t for t in local_targets((ROOT / "README.md").read_text()) if t.endswith((".png", ".svg", ".jpg"))]
    assert any(p.startswith("docs/screenshots/") for p in pictures)  # the MLflow front end, shown
    tracked = subprocess.run(["git", "ls-files", "--", *pictures], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert sorted(set(pictures) - set(tracked)) == []  # on disk but untracked counts as missing
