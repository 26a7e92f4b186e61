"""A Markdown report as one self-contained HTML page, the form MLflow's artifact viewer displays with its figures.

MLflow shows a `.md` artifact as text, so `![...](figure.png)` stays a raw link there; it renders `.html` in a
frame, but a frame cannot fetch sibling artifacts. Here the figures are embedded as data URIs, so the page shows
everything wherever it is opened (MLflow, a browser, an e-mail).

The reports are built from what runs carry (names, tags, params), which anyone with access to a shared MLflow server
can set: that text is data. Two layers keep it so. Where run-derived text enters the Markdown it goes through
`md_text` / `md_code`, so it renders as exactly that text (no table cell split by `|`, no link, `<missing>` shown).
And the page itself is rendered with raw HTML turned off and only http(s)/mailto/relative links kept, so that
text missed by the first layer still cannot run a script in the browser that opens the report.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

IMAGE = re.compile(r'<img alt="([^"]*)" src="([^"]+\.png)"')
STYLE = ("body{font:14px/1.5 system-ui,sans-serif;max-width:1200px;margin:24px auto;padding:0 16px;color:#222}"
         "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
         "th{background:#f3f3f3}code{background:#f3f3f3;padding:0 3px}img{max-width:100%;border:1px solid #eee}")

# --- run-derived text into Markdown ---

CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")  # a newline would end a table row or start a heading
MD_SPECIAL = re.compile(r"([\\`*\[\]|])|(?<!\w)_|_(?!\w)")  # intra-word `_` (strategic_grams) is never emphasis
MARKUP = re.compile(r"<(?=[A-Za-z/!?])|&(?=[#A-Za-z])")  # what starts a tag or an entity; `2 < 4` reads as is
ENTITIES = {"&": "&amp;", "<": "&lt;"}


def md_text(value) -> str:
    """`value` as Markdown that renders as exactly its text, on one line: Markdown syntax backslash-escaped, a `<` or
    `&` that would start a tag or an entity as an entity (also where MLflow renders the Markdown itself: `<missing>`
    would vanish there as an unknown tag)."""
    text = CONTROL.sub(" ", str(value))
    text = MD_SPECIAL.sub(lambda m: "\\" + m[0], text)
    return MARKUP.sub(lambda m: ENTITIES[m[0]], text)


def md_code(value) -> str:
    """`value` as one inline code span, whatever backticks it holds (the fence is longer than any run inside)."""
    text = CONTROL.sub(" ", str(value))
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


# --- Markdown into a safe page ---

SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):", re.IGNORECASE)
LINK_SCHEMES = ("http", "https", "mailto")


def safe_url(url: str, schemes: tuple[str, ...]) -> bool:
    """A relative URL, or one whose scheme is in `schemes`: read as a browser reads it (entities decoded, blanks and
    control characters dropped), so `java&#58;script:` or `java\\nscript:` is still `javascript:`."""
    compact = re.sub(r"[\x00-\x20\x7f]+", "", html.unescape(url))
    scheme = SCHEME.match(compact)
    return scheme is None or scheme[1].lower() in schemes


def _renderer():
    import markdown
    from markdown.treeprocessors import Treeprocessor

    class DropUnsafeUrls(Treeprocessor):
        def run(self, root):
            for el in root.iter():
                for attr, schemes in (("href", LINK_SCHEMES), ("src", ())):  # images: only the report's own files
                    if el.get(attr) is not None and not safe_url(el.get(attr), schemes):
                        del el.attrib[attr]

    md = markdown.Markdown(extensions=["tables", "fenced_code"])
    md.preprocessors.deregister("html_block")  # raw HTML, block or inline, is shown as text
    md.inlinePatterns.deregister("html")
    md.treeprocessors.register(DropUnsafeUrls(md), "drop_unsafe_urls", 0)
    return md


def markdown_page(markdown_text: str, folder: Path, title: str) -> str:
    """The page for `markdown_text`, its PNG links to files of `folder` embedded; a missing figure stays a link."""
    body = _renderer().convert(markdown_text)
    root = folder.resolve()

    def embed(match: re.Match) -> str:
        path = (folder / html.unescape(match[2])).resolve()
        if path.parent != root or not path.is_file():  # never a file from elsewhere on the disk
            return match[0]
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'<img alt="{match[1]}" src="data:image/png;base64,{data}"'

    return (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style>\n"
            f"{IMAGE.sub(embed, body)}\n")
