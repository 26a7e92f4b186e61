"""MkDocs hook: links from a docs page to a file outside docs/ (`../hicra/training/run.py`, `../README.md`).

They are right on GitHub and in an editor, but MkDocs only knows the files under docs/ and warns (strict: fails) on
every one. Here each such link is checked against the repository instead: a target that does not exist is a warning,
so the strict build still fails on it; one that exists is pointed, in the built site, at the file relative to the
built page (right when the site is opened from its folder inside the checkout, e.g. `site/`).
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger("mkdocs.hooks.repo_links")  # under "mkdocs": a warning here fails a strict build

LINK = re.compile(r"(\]\()([^)\s]+)(\))")  # [text](target) and ![alt](target)
FENCE = re.compile(r"^(```|~~~)")
SCHEME = "hicra-repo:"  # a placeholder MkDocs leaves alone (it has a scheme), replaced in the rendered HTML


def _outside_target(page_src: str, target: str) -> str | None:
    """`../hicra/x.py` from `scaling.md` -> `hicra/x.py` (relative to the repository); None for links inside docs/."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path or parts.path.startswith("/"):
        return None
    joined = posixpath.normpath(posixpath.join("docs", posixpath.dirname(page_src), parts.path))
    return None if joined == "docs" or joined.startswith("docs/") else joined


def on_page_markdown(markdown: str, page, config, files) -> str:
    repo = Path(config.config_file_path).parent
    out, fenced = [], False
    for line in markdown.splitlines(keepends=True):
        fenced = fenced != bool(FENCE.match(line.lstrip()))
        if not fenced:
            line = LINK.sub(lambda m: _rewrite(m, page.file.src_uri, repo), line)
        out.append(line)
    return "".join(out)


def _rewrite(match: re.Match, page_src: str, repo: Path) -> str:
    target = match.group(2)
    path = _outside_target(page_src, target)
    if path is None:
        return match.group(0)
    if not (repo / path).exists():
        log.warning("Doc file '%s' links to '%s', but '%s' is not in the repository.", page_src, target, path)
        return match.group(0)
    fragment = target[len(target.split("#", 1)[0]):]
    return f"{match.group(1)}{SCHEME}{path}{fragment}{match.group(3)}"


def on_page_content(html: str, page, config, files) -> str:
    repo = Path(config.config_file_path).parent
    page_dir = (Path(config.site_dir) / page.file.dest_uri).parent
    root = Path(posixpath.relpath(repo.resolve(), page_dir.resolve())).as_posix()
    return html.replace(SCHEME, root + "/")
