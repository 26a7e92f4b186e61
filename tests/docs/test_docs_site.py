"""The documentation site (mkdocs.yml over docs/) builds strictly, offline: a broken link or anchor, a link to a
repository file that is not there, a nav entry without its page or a page left out of the nav fails the build.

The site is built into tmp_path; the faults are proved on a small site of their own that uses the real mkdocs.yml
(its validation settings and its hook) with only the nav changed, so each failure is the config's doing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "mkdocs.yml"


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner, not a finding
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)]
    return subprocess.run(command, check=False, cwd=config.parent, env=env, capture_output=True, text=True, timeout=120)


def nav_pages(config_text: str) -> list[str]:
    return re.findall(r"^\s*-\s.*?:?\s*([\w/]+\.md)\s*$", config_text.split("\nnav:", 1)[1], flags=re.MULTILINE)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The real site, built once for the tests that read it."""
    site = tmp_path_factory.mktemp("docs") / "site"
    return site, build(CONFIG, site)


def test_the_site_builds_strictly_with_every_page_in_its_nav(built):
    site, result = built
    assert result.returncode == 0, result.stderr
    pages = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    assert sorted(nav_pages(CONFIG.read_text())) == pages
    for page in pages:  # use_directory_urls: x.md -> x/index.html, index.md -> index.html
        html = "index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html"
        assert (site / html).is_file(), page


def test_links_to_the_code_point_at_the_repository_from_the_built_page(built):
    site, result = built
    assert result.returncode == 0, result.stderr
    html = (site / "reliability" / "index.html").read_text()
    hrefs = re.findall(r'href="([^"]*hicra/training/run\.py)"', html)
    assert hrefs and all((site / "reliability" / h).resolve() == ROOT / "hicra/training/run.py" for h in hrefs)


# --- the faults, on a small site under the real config -------------------------------------------------------------

GOOD_INDEX = "# Home\n\n[the page](page.md#a-heading), [the readme](../README.md#readme)\n"
FAULTS = {  # fault: (file, what is written to it, what the build's warning names)
    "a link to a missing page": ("index.md", GOOD_INDEX + "\n[gone](missing.md)\n", "'missing.md'"),
    "an anchor that names no heading": ("index.md", GOOD_INDEX + "\n[gone](page.md#no-such-heading)\n",
                                        "'page.md#no-such-heading'"),
    "an in-page anchor that names no heading": ("index.md", GOOD_INDEX + "\n[gone](#recipes)\n", "'#recipes'"),
    "a link to a repository file that is not there": ("index.md", GOOD_INDEX + "\n[gone](../hicra/gone.py)\n",
                                                      "'hicra/gone.py' is not in the repository"),
    "a page left out of the nav": ("orphan.md", "# Orphan\n", "orphan.md"),
    "a nav entry without its page": ("mkdocs.yml", "  - Gone: gone.md\n", "'gone.md'"),
}


def small_site(root: Path, fault: tuple[str, str, str] | None) -> Path:
    """root/mkdocs.yml (the real one, nav replaced, hook path absolute), root/docs/{index,page}.md, root/README.md."""
    text = CONFIG.read_text().split("\nnav:", 1)[0]
    text = text.replace("- docs/hooks/", f"- {ROOT}/docs/hooks/") + "\nnav:\n  - Home: index.md\n  - Page: page.md\n"
    (root / "docs").mkdir(parents=True)
    (root / "README.md").write_text("# Readme\n")
    (root / "docs" / "index.md").write_text(GOOD_INDEX)
    (root / "docs" / "page.md").write_text("# Page\n\n## A heading\n")
    if fault is not None:
        name, content, _ = fault
        if name == "mkdocs.yml":
            text += content
        else:
            (root / "docs" / name).write_text(content)
    (root / "mkdocs.yml").write_text(text)
    return root / "mkdocs.yml"


def test_the_small_site_builds_without_a_fault(tmp_path):
    result = build(small_site(tmp_path / "src", None), tmp_path / "site")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
def test_the_strict_build_fails_on(fault, tmp_path):
    result = build(small_site(tmp_path / "src", FAULTS[fault]), tmp_path / "site")
    assert result.returncode != 0 and "in strict mode" in result.stdout
    assert "WARNING" in result.stderr and FAULTS[fault][2] in result.stderr.split("WARNING", 1)[1], result.stderr
