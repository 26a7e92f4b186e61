"""Text from runs (names, tags, swept values, the experiment's name, completion samples) is data in every HTML page
hicra writes: report.html of hicra-compare and hicra-analyze, the token viewer, the completions pages. Checked on the
HTML itself (its elements and attributes), on a store built by tests/compare/hostile_store.py; the same pages open in
a real browser in tests/tracking/test_browser.py."""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import hostile_store
from hostile_store import EXPERIMENT, LINK_NAME, OVERRIDE, PROMPT, RUN_NAME, TOKEN, completions, make_hostile_store
from support import exit_code

from hicra.tracking.html_report import markdown_page

REPORT_TAGS = {"meta", "title", "style", "h1", "h2", "h3", "p", "ul", "li", "table", "thead", "tbody", "tr", "th",
               "td", "code", "strong", "em", "img", "a"}


class Page(HTMLParser):
    """The elements, attributes, visible text and tables (cells per row) of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.attrs, self.text, self.tables, self._in = [], [], [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, name, value or "") for name, value in attrs]
        self._in.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append(0)
        elif tag in ("td", "th"):
            self.tables[-1][-1] += 1

    def handle_endtag(self, tag):
        if tag in self._in:
            del self._in[len(self._in) - 1 - self._in[::-1].index(tag):]

    def handle_data(self, data):
        if not {"style", "script", "title"} & set(self._in):
            self.text.append(data)

    @property
    def visible(self) -> str:
        return "".join(self.text)


def assert_inert(page: Page, allowed_tags: set[str] | None = None, own_scripts: int = 0) -> None:
    """No element or attribute that runs script: no <script> but the page's own, no <svg>/<iframe>, no on* handler,
    no javascript: URL; every table row as wide as its header (no `|` in a name split a row)."""
    if allowed_tags is not None:
        assert set(page.tags) <= allowed_tags, set(page.tags) - allowed_tags
    assert page.tags.count("script") == own_scripts
    assert not set(page.tags) & {"svg", "iframe", "object", "embed", "math"}, page.tags
    assert all(len(set(table)) == 1 for table in page.tables), page.tables
    assert not [a for a in page.attrs if a[1].startswith("on")], page.attrs
    urls = [(tag, value) for tag, name, value in page.attrs if name in ("href", "src")]
    assert all(not value.strip().lower().startswith(("javascript:", "vbscript:")) for _, value in urls), urls


def assert_report(path: Path) -> Page:
    page = Page(path.read_text(encoding="utf-8"))
    assert_inert(page, REPORT_TAGS)
    assert all(value.startswith("data:image/png;base64,") for tag, name, value in page.attrs if name == "src")
    return page


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return make_hostile_store(tmp_path_factory.mktemp("hostile"))


def test_markdown_is_rendered_without_raw_html_or_script_urls(tmp_path):
    (tmp_path / "fig.png").write_bytes(b"\x89PNG")
    (tmp_path.parent / "secret.png").write_bytes(b"secret")
    text = ("# <script>x()</script>\n\n<div onclick=x>raw</div>\n\n| a |\n|---|\n| <img src=x onerror=y> |\n\n"
            "[a](javascript:x) [b](java&#58;script:x) [c](JaVa\nScRiPt:x) [d](https://example.org) "
            "[e](token_viewer.html) ![f](fig.png) ![g](../secret.png) ![h](javascript:x)\n")
    page = Page(markdown_page(text, tmp_path, "<t>"))
    assert_inert(page, REPORT_TAGS)
    assert {"<script>x()</script>", "<div onclick=x>raw</div>", "<img src=x onerror=y>"} <= set(page.text)
    links = [value for tag, name, value in page.attrs if name == "href"]
    assert links == ["https://example.org", "token_viewer.html"]  # the others keep their text, lose the URL
    images = [value for tag, name, value in page.attrs if name == "src"]
    assert images[0].startswith("data:image/png;base64,") and images[1] == "../secret.png"  # never read, a dead link
    assert len(images) == 2


@pytest.mark.parametrize("value", [RUN_NAME, LINK_NAME, "<missing>", "a\nb | c \\ `d` _e_ strategic_grams"])
def test_md_text_and_md_code_render_exactly_the_text(value, tmp_path):
    from hicra.tracking.html_report import md_code, md_text

    flat = value.replace("\n", " ")
    page = Page(markdown_page(f"| h | i |\n|---|---|\n| {md_text(value)} | {md_code(value)} |\n", tmp_path, "t"))
    assert page.tables == [[2, 2]] and page.text.count(flat) == 2, page.text  # one row, text as given, twice
    # report.md stays readable: nothing escaped that cannot start markup
    assert md_text("strategic_grams: step 2 < 4 & 5") == "strategic_grams: step 2 < 4 & 5"


def test_compare_report_shows_run_text_as_text(hostile, tmp_path):
    from hicra.compare.cli import main

    uri, ids = hostile
    out = tmp_path / "cmp"
    assert exit_code(main, ["--experiment", EXPERIMENT, "--tracking-uri", uri, "--out", str(out), "--no-log"]) == 0
    page = assert_report(out / "report.html")
    text = page.visible
    for value in (EXPERIMENT, RUN_NAME, LINK_NAME, hostile_store.MATH_NAME, f"algorithm.alpha={OVERRIDE}", "algorithm=<missing>",
                  *ids):
        assert value in text, value
    assert len(page.tables) >= 4


def test_analyze_report_token_viewer_and_completions_page_show_run_text_as_text(hostile, tmp_path):
    from hicra.analyze.cli import main
    from hicra.training.callbacks import render_completions

    uri, ids = hostile
    out = tmp_path / "analysis"
    assert exit_code(main, [*ids, "--tracking-uri", uri, "--out", str(out), "--no-log"]) == 0
    page = assert_report(out / "report.html")
    assert RUN_NAME in page.visible and LINK_NAME in page.visible and page.tables[0] == [8] * (1 + len(ids))
    assert hostile_store.MATH_NAME in page.visible and (out / "validation.png").is_file()  # `$...$` drawn as text

    viewer = Page((out / "token_viewer.html").read_text(encoding="utf-8"))
    assert_inert(viewer, own_scripts=1)  # the step and colouring switch (tests/tracking/test_browser.py)
    assert PROMPT in viewer.visible and TOKEN in viewer.visible and RUN_NAME in viewer.visible

    rows = [{**row, "pieces": [tuple(p) for p in row["pieces"]]} for row in completions()["rows"]]
    samples = Page(render_completions(1, rows, title=RUN_NAME))
    assert_inert(samples)
    assert PROMPT in samples.visible and TOKEN in samples.visible and RUN_NAME in samples.visible
