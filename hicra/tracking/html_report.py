"""A Markdown report as one self-contained HTML page, the form MLflow's artifact viewer displays with its figures.

MLflow shows a `.md` artifact as text, so `![...](figure.png)` stays a raw link there; it renders `.html` in a
frame, but a frame cannot fetch sibling artifacts. Here the figures are embedded as data URIs, so the page shows
everything wherever it is opened (MLflow, a browser, an e-mail).
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


def markdown_page(markdown_text: str, folder: Path, title: str) -> str:
    """The page for `markdown_text`, its PNG links (relative to `folder`) embedded; a missing figure stays a link."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code"])

    def embed(match: re.Match) -> str:
        path = folder / html.unescape(match[2])
        if not path.is_file():
            return match[0]
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'<img alt="{match[1]}" src="data:image/png;base64,{data}"'

    return (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style>\n"
            f"{IMAGE.sub(embed, body)}\n")
