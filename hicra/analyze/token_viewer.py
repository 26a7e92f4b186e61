"""A self-contained HTML page of sampled completions, every token coloured by its token advantage.

Red = negative, green = positive, opacity proportional to |A| on one scale shared by the whole page; planning tokens
(the planner's mask) are outlined and underlined; hovering a token shows its advantage. Per run, a selector switches
between the logged steps (the latest is shown first; without JavaScript only the latest is visible).
"""

from __future__ import annotations

import math
from html import escape

from hicra.analyze.runs import RunInfo

NEG, POS = (198, 40, 40), (46, 125, 50)

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:.85em}
.c{border:1px solid #ccc;border-radius:6px;padding:.5em 1em;margin:.8em 0}
.resp{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:.9em;line-height:1.9}
.t{border-radius:2px}
.p{outline:1.5px solid #1a237e;outline-offset:-1px;text-decoration:underline 2px #1a237e;text-underline-offset:3px}
.legend{display:flex;gap:2em;align-items:center;flex-wrap:wrap;border:1px solid #ddd;padding:.6em 1em;
border-radius:6px;background:#fafafa;font-size:.9em}
.bar{width:16em;height:1em;border:1px solid #aaa;background:linear-gradient(to right,%(neg)s,#fff,%(pos)s)}
.ends{display:flex;justify-content:space-between;width:16em;font-size:.8em;color:#555}
.step[hidden]{display:none}
"""

SCRIPT = """
for (const sel of document.querySelectorAll('select.steps')) {
  sel.addEventListener('change', () => {
    for (const div of document.querySelectorAll('.step[data-run="' + sel.dataset.run + '"]'))
      div.hidden = div.dataset.step !== sel.value;
  });
}
"""


def token_colour(adv: float, scale: float) -> str:
    """CSS background for a token advantage: red < 0 < green, alpha = |A| / scale (transparent at 0)."""
    if not math.isfinite(adv) or adv == 0.0 or scale <= 0:
        return "transparent"
    r, g, b = POS if adv > 0 else NEG
    alpha = 0.1 + 0.75 * min(abs(adv) / scale, 1.0)
    return f"rgba({r},{g},{b},{alpha:.2f})"


def _advantages(row: dict) -> list[float]:
    pieces = row.get("pieces") or []
    adv = row.get("token_advantages")
    if not isinstance(adv, list) or len(adv) != len(pieces):  # older samples: the sequence advantage per token
        adv = [float(row.get("advantage", 0.0))] * len(pieces)
    return [float(a) if a is not None else float("nan") for a in adv]


def shared_scale(samples_by_run: dict[str, list[dict]]) -> float:
    values = [abs(a) for samples in samples_by_run.values() for s in samples for row in s["rows"]
              for a in _advantages(row) if math.isfinite(a)]
    return max(values, default=0.0)


def _row_html(i: int, row: dict, scale: float) -> str:
    spans = []
    for (text, planning), adv in zip(row.get("pieces") or [], _advantages(row)):
        title = f"A = {adv:+.4f}" + (" | planning token" if planning else "")
        cls = "t p" if planning else "t"
        spans.append(f"<span class='{cls}' style='background:{token_colour(adv, scale)}' "
                     f"title='{escape(title)}'>{escape(str(text))}</span>")
    reward, advantage = float(row.get("reward", float("nan"))), float(row.get("advantage", float("nan")))
    return (f"<div class='c'><div class='meta'>#{i} &middot; reward {reward:.2f} &middot; sequence advantage "
            f"{advantage:+.3f}</div><details><summary class='meta'>prompt</summary>"
            f"<pre>{escape(str(row.get('prompt', '')))}</pre></details><div class='resp'>{''.join(spans)}</div></div>")


def _legend(scale: float) -> str:
    return (f"<div class='legend'><div><div class='bar'></div><div class='ends'><span>{-scale:+.3f}</span>"
            f"<span>0</span><span>{scale:+.3f}</span></div></div>"
            "<div>Background: token advantage A (red negative, green positive; opacity &prop; |A|, one scale for "
            "the whole page). Hover a token to read A.</div>"
            "<div><span class='t p'>planning token</span> outlined and underlined (the planner's mask)</div></div>")


def render_token_viewer(runs: list[RunInfo], samples_by_run: dict[str, list[dict]]) -> str:
    """samples_by_run: run_id -> completion JSON payloads ({"step", "rows"}) sorted by step."""
    scale = shared_scale(samples_by_run)
    style = STYLE % {"neg": f"rgb{NEG}", "pos": f"rgb{POS}"}
    parts = ["<!doctype html><html lang='en'><meta charset='utf-8'><title>hicra token advantages</title>",
             f"<style>{style}</style><h1>Token advantages of sampled completions</h1>", _legend(scale)]
    for run in runs:
        samples = samples_by_run.get(run.run_id) or []
        parts.append(f"<h2>{escape(run.name)}</h2><p class='meta'>algorithm {escape(run.algorithm)} &middot; "
                     f"planner {escape(run.planner)} &middot; seed {escape(run.seed)} &middot; run "
                     f"<code>{escape(run.run_id)}</code></p>")
        if not samples:
            parts.append("<p class='meta'>No completion samples (completions/*.json) logged for this run.</p>")
            continue
        latest = str(samples[-1]["step"])
        options = "".join(f"<option value='{escape(str(s['step']))}'{' selected' if str(s['step']) == latest else ''}>"
                          f"step {escape(str(s['step']))}</option>" for s in reversed(samples))
        parts.append(f"<label class='meta'>step <select class='steps' data-run='{escape(run.run_id)}'>{options}"
                     "</select></label>")
        for s in samples:
            hidden = "" if str(s["step"]) == latest else " hidden"
            rows = "".join(_row_html(i, row, scale) for i, row in enumerate(s["rows"]))
            parts.append(f"<div class='step' data-run='{escape(run.run_id)}' data-step='{escape(str(s['step']))}'"
                         f"{hidden}><p class='meta'>completions sampled at step {escape(str(s['step']))}</p>"
                         f"{rows}</div>")
    parts.append(f"<script>{SCRIPT}</script></html>")
    return "\n".join(parts)
