"""The README and the docs pages hold to the code: their links and pictures point at files of the repository, every
module of hicra/ is in the layout, every option of conf/ is in a config map, and every `#anchor` names a heading.

Where each fact lives: the module-by-module layout is docs/layout.md (the README keeps the package-level tree, and
each package must be in it); the training config map is the README's table, hicra-eval's is docs/evaluation.md's
(both headed `| group | options |`); anchors use GitHub's heading ids, as the docs site does (mkdocs.yml)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
LAYOUT = ROOT / "docs" / "layout.md"
CONFIG_MAPS = [README, ROOT / "docs" / "evaluation.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
BACKTICKED = re.compile(r"`([^`]+)`")


def markdown_pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def unfenced_lines(markdown: str) -> list[str]:
    """The lines outside fenced code blocks (a `# comment` in a bash block is not a heading, a link there not a link)."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def local_targets(markdown: str) -> list[str]:
    """Relative link targets without their #anchor: `docs/reliability.md#x` -> `docs/reliability.md`."""
    targets = (m.split("#", 1)[0] for m in LINK.findall(markdown) if "://" not in m and not m.startswith(("#", "mailto:")))
    return sorted({t for t in targets if t})


# --- anchors -----------------------------------------------------------------------------------------------------

def github_slug(heading: str) -> str:
    """GitHub's heading id: the rendered text lower-cased, characters other than word characters, '-' and ' ' dropped,
    spaces turned into '-' (pymdownx.slugs.slugify(case='lower') in mkdocs.yml computes the same)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link or picture: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading id of a page; a repeated id gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    ids = set()
    for line in unfenced_lines(markdown):
        if match := HEADING.match(line):
            slug = github_slug(match.group(2))
            ids.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return ids


def unresolved_anchors(page: Path, root: Path = ROOT) -> list[str]:
    """`target#anchor` links of a page whose anchor is no heading of the target (the page itself for `#anchor`)."""
    bad = []
    for link in LINK.findall("\n".join(unfenced_lines(page.read_text()))):
        target, sep, anchor = link.partition("#")
        if not sep or "://" in target or not (target == "" or target.endswith(".md")):
            continue  # no anchor, another site, or a file with no headings (`x.py#L10`)
        target_page = page if target == "" else (page.parent / target).resolve()
        if not target_page.is_file() or anchor not in anchors(target_page.read_text()):
            bad.append(f"{page.relative_to(root)}: {link}")
    return bad


def test_github_slug_matches_the_ids_github_gives():
    assert github_slug("The maths, with pointers to the code") == "the-maths-with-pointers-to-the-code"
    assert github_slug("`make train` learns, scored strictly (3 seeds)") == "make-train-learns-scored-strictly-3-seeds"
    assert github_slug("Study: HICRA vs GRPO and Placebo HICRA, scored strictly (3 seeds)") == \
        "study-hicra-vs-grpo-and-placebo-hicra-scored-strictly-3-seeds"
    assert github_slug("Evaluation: `hicra-eval`") == "evaluation-hicra-eval"
    assert github_slug("The GPU path, several ranks and versions") == "the-gpu-path-several-ranks-and-versions"


def test_anchors_number_repeated_headings_and_skip_code_blocks():
    text = "# Setup\n\n## Setup\n\n```bash\n# not a heading\n```\n"
    assert anchors(text) == {"setup", "setup-1"}


def test_an_anchor_that_names_no_heading_is_reported(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Part two\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[ok](#page) [ok](other.md#part-two) [bad](#recipes) [bad](other.md#part-three)\n")
    assert unresolved_anchors(page, tmp_path) == ["page.md: #recipes", "page.md: other.md#part-three"]


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_anchor_resolves_to_a_heading(page):
    assert unresolved_anchors(page) == []


# --- links and pictures ------------------------------------------------------------------------------------------

def test_local_targets_reads_links_and_images_without_anchors():
    text = "[a](docs/x.md#part) ![b](docs/s/y.png) [c](https://e.org/z.png) [d](#section) [e](hicra/)"
    assert local_targets(text) == ["docs/s/y.png", "docs/x.md", "hicra/"]


def test_every_local_link_of_the_readme_exists():
    missing = [t for t in local_targets(README.read_text()) if not (ROOT / t).exists()]
    assert missing == []


def test_every_picture_of_the_readme_is_committed():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    pictures = [t for t in local_targets(README.read_text()) if t.endswith((".png", ".svg", ".jpg"))]
    assert any(p.startswith("docs/screenshots/") for p in pictures)  # the MLflow front end, shown
    tracked = subprocess.run(["git", "ls-files", "--", *pictures], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert sorted(set(pictures) - set(tracked)) == []  # on disk but untracked counts as missing


# --- layout ------------------------------------------------------------------------------------------------------

def layout_sections(markdown: str) -> dict[str, set[str]]:
    """docs/layout.md's `## `hicra/pkg/`` sections -> the `*.py` names written in backticks in each."""
    sections: dict[str, set[str]] = {}
    current = None
    for line in unfenced_lines(markdown):
        if match := re.match(r"^##\s+`(hicra/(?:\w+/)*)`\s*$", line):
            current = sections.setdefault(match.group(1), set())
        elif line.startswith("#"):
            current = None
        elif current is not None:
            current.update(n for n in BACKTICKED.findall(line) if re.fullmatch(r"\w+\.py", n))
    return sections


def code_modules() -> dict[str, set[str]]:
    """Every module of hicra/ but `__init__.py`, by package: {"hicra/training/": {"run.py", ...}, ...}."""
    modules: dict[str, set[str]] = {}
    for path in (ROOT / "hicra").rglob("*.py"):
        if path.name != "__init__.py":
            modules.setdefault(path.parent.relative_to(ROOT).as_posix() + "/", set()).add(path.name)
    return modules


def test_layout_sections_read_the_modules_of_each_package():
    text = "## `hicra/`\n\n- `errors.py`: x\n\n## `hicra/a/b/`\n\n- `c.py` / `d.py`: uses `torch` and `e.py`\n"
    assert layout_sections(text) == {"hicra/": {"errors.py"}, "hicra/a/b/": {"c.py", "d.py", "e.py"}}


def test_every_module_is_in_the_layout_and_every_listed_module_exists():
    listed, actual = layout_sections(LAYOUT.read_text()), code_modules()
    missing = sorted(f"{pkg}{name}" for pkg, names in actual.items() for name in names - listed.get(pkg, set()))
    stale = sorted(f"{pkg}{name}" for pkg, names in listed.items() for name in names - actual.get(pkg, set()))
    assert missing == [], "add them to docs/layout.md with a few words each"
    assert stale == [], "docs/layout.md lists modules that are gone"


def test_the_readme_tree_names_every_package_and_links_the_full_layout():
    readme = README.read_text()
    tree = readme.split("## Layout", 1)[1].split("```", 2)[1]
    packages = sorted(p.name for p in (ROOT / "hicra").iterdir() if (p / "__init__.py").is_file())
    assert [p for p in packages if f"{p}/" not in tree] == []
    assert "docs/layout.md" in local_targets(readme)


def test_the_readme_stays_a_front_door():
    assert len(README.read_text().splitlines()) <= 350


# --- config maps -------------------------------------------------------------------------------------------------

def expand_braces(name: str) -> list[str]:
    """`hicra_vs_grpo/{grpo,hicra}` -> [`hicra_vs_grpo/grpo`, `hicra_vs_grpo/hicra`]."""
    match = re.fullmatch(r"(.*)\{([^}]*)\}(.*)", name)
    return [f"{match.group(1)}{part}{match.group(3)}" for part in match.group(2).split(",")] if match else [name]


def config_map(markdown: str) -> dict[str, set[str]]:
    """The rows of `| group | options | ... |` tables: each backticked group -> its backticked options."""
    groups: dict[str, set[str]] = {}
    in_map = False
    for line in unfenced_lines(markdown):
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else []
        if cells[:2] == ["group", "options"]:
            in_map = True
        elif not cells:
            in_map = False
        elif in_map and len(cells) >= 2 and not set(cells[0]) <= set("-: "):
            options = {o for name in BACKTICKED.findall(cells[1]) for o in expand_braces(name)}
            for group in BACKTICKED.findall(cells[0]):
                groups.setdefault(group, set()).update(options)
    return groups


def test_config_map_reads_groups_options_and_braces():
    text = ("| group | options | what |\n|---|---|---|\n| `a`, `b/c` | `x` (default), `d/{y,z}` | `not.an.option` |\n"
            "\n| key | default |\n|---|---|\n| `e` | `1` |\n")
    assert config_map(text) == {"a": {"x", "d/y", "d/z"}, "b/c": {"x", "d/y", "d/z"}}


def test_every_config_option_is_in_a_config_map():
    documented: dict[str, set[str]] = {}
    for page in CONFIG_MAPS:
        for group, options in config_map(page.read_text()).items():
            documented.setdefault(group, set()).update(options)
    missing = []
    for path in sorted((ROOT / "conf").rglob("*.yaml")):
        parts = path.relative_to(ROOT / "conf").with_suffix("").parts
        if len(parts) == 1 or any(p.startswith("_") for p in parts):
            continue  # a root config (train.yaml, eval.yaml), or a shared base no one picks (`_base.yaml`)
        # the longest documented group the file lies in: conf/hydra/launcher/x.yaml is hydra/launcher=x
        group = next(("/".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)
                      if "/".join(parts[:n]) in documented), "/".join(parts[:-1]))
        option = "/".join(parts[len(group.split("/")):])
        if option not in documented.get(group, set()):
            missing.append(f"{group}={option}")
    assert missing == [], "add them to the config map (README.md, or docs/evaluation.md for hicra-eval's groups)"
