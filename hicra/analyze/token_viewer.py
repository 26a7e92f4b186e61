"""A self-contained HTML page of sampled completions, every token coloured by its token advantage or by HICRA's boost.

Two colourings, switched at the top of the page: the token advantage A, and HICRA's boost, A minus the sequence
advantage (alpha |A| on planning tokens, 0 elsewhere and everywhere in GRPO): under A, HICRA's change is a shade
among large sequence-level values; the boost shows only what HICRA changed. Red = negative, green = positive,
opacity proportional to the value on one scale per colouring shared by the whole page; planning tokens (the
planner's mask) are outlined and underlined; hovering a token shows both values. Per run, a selector switches
between the logged steps (the latest is shown first; without JavaScript only the latest is visible). With two runs or
more, the prompts they share at a step are shown side by side.
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
body.by-a .t{background:var(--a)}body.by-boost .t{background:var(--b)}
body.by-a .legend-boost,body.by-boost .legend-a{display:none}
.pair{display:grid;grid-template-columns:repeat(var(--n),1fr);gap:1em}.pair h3{font-size:1em;margin:.3em 0}
"""

SCRIPT = """
for (const input of document.querySelectorAll('input[name=colouring]'))
  input.addEventListener('change', () => { document.body.className = 'by-' + input.value; });
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


def _boosts(row: dict) -> list[float]:
    """HICRA's change per token: token advantage minus the sequence advantage (0 where nothing was changed)."""
    sequence = float(row.get("advantage", 0.0))
    return [a - sequence for a in _advantages(row)]


def shared_scale(samples_by_run: dict[str, list[dict]], values=_advantages) -> float:
    magnitudes = [abs(a) for samples in samples_by_run.values() for s in samples for row in s["rows"]
                  for a in values(row) if math.isfinite(a)]
    return max(magnitudes, default=0.0)


def _row_html(i: int, row: dict, scales: tuple[float, float]) -> str:
    spans = []
    for (text, planning), adv, boost in zip(row.get("pieces") or [], _advantages(row), _boosts(row)):
        title = f"A = {adv:+.4f}, boost = {boost:+.4f}" + (" | planning token" if planning else "")
        cls = "t p" if planning else "t"
        spans.append(f"<span class='{cls}' style='--a:{token_colour(adv, scales[0])};--b:"
                     f"{token_colour(boost, scales[1])}' title='{escape(title)}'>{escape(str(text))}</span>")
    reward, advantage = float(row.get("reward", float("nan"))), float(row.get("advantage", float("nan")))
    return (f"<div class='c'><div class='meta'>#{i} &middot; reward {reward:.2f} &middot; sequence advantage "
            f"{advantage:+.3f}</div><details><summary class='meta'>prompt</summary>"
            f"<pre>{escape(str(row.get('prompt', '')))}</pre></details><div class='resp'>{''.join(spans)}</div></div>")


def _scale_bar(scale: float, name: str, what: str) -> str:
    if scale <= 0:
        return f"<div class='legend-{name}'>{what}: 0 on every token of this page (nothing to colour).</div>"
    return (f"<div class='legend-{name}'><div class='bar'></div><div class='ends'><span>{-scale:+.3f}</span>"
            f"<span>0</span><span>{scale:+.3f}</span></div><div>{what} (red negative, green positive; opacity "
            f"&prop; magnitude, one scale for the whole page)</div></div>")


def _legend(scales: tuple[float, float], default: str) -> str:
    radio = "".join(f"<label><input type='radio' name='colouring' value='{v}'{' checked' if v == default else ''}>"
                    f" {label}</label> " for v, label in (("boost", "HICRA's boost (A minus sequence advantage)"),
                                                        ("a", "token advantage A")))
    return (f"<div class='legend'><div>colour by: {radio}</div>"
            f"{_scale_bar(scales[1], 'boost', 'HICRA boost = token advantage - sequence advantage')}"
            f"{_scale_bar(scales[0], 'a', 'token advantage A')}"
            "<div>Hover a token to read both. <span class='t p'>planning token</span> outlined and underlined (the "
            "planner's mask)</div></div>")


def side_by_side(runs: list[RunInfo], samples_by_run: dict[str, list[dict]], scales: tuple[float, float]) -> str:
    """For the latest step two or more runs logged: each prompt they share, their completions in columns."""
    steps = [{s["step"]: s for s in samples_by_run.get(r.run_id) or []} for r in runs]
    common = set.intersection(*(set(st) for st in steps)) if len(runs) > 1 else set()
    if not common:
        return ""
    step = max(common)
    by_prompt = [{} for _ in runs]
    for k, st in enumerate(steps):
        for row in st[step]["rows"]:
            by_prompt[k].setdefault(str(row.get("prompt", "")), []).append(row)
    shared = [p for p in by_prompt[0] if all(p in d for d in by_prompt[1:])]
    if not shared:
        return ""
    parts = [f"<h2>Side by side: the same prompts at step {escape(str(step))}</h2>"]
    for prompt in shared:
        columns = "".join(f"<div><h3>{escape(run.name)}</h3>" + "".join(_row_html(i, row, scales) for i, row in
                                                                          enumerate(d[prompt])) + "</div>"
                          for run, d in zip(runs, by_prompt))
        parts.append(f"<details open><summary class='meta'>prompt: {escape(prompt[-160:])}</summary>"
                     f"<div class='pair' style='--n:{len(runs)}'>{columns}</div></details>")
    return "".join(parts)


def render_token_viewer(runs: list[RunInfo], samples_by_run: dict[str, list[dict]]) -> str:
    """samples_by_run: run_id -> completion JSON payloads ({"step", "rows"}) sorted by step."""
    scales = (shared_scale(samples_by_run), shared_scale(samples_by_run, _boosts))
    default = "boost" if scales[1] > 0 else "a"  # HICRA runs open on what HICRA changed
    style = STYLE % {"neg": f"rgb{NEG}", "pos": f"rgb{POS}"}
    parts = ["<!doctype html><html lang='en'><meta charset='utf-8'><title>hicra token advantages</title>",
             f"<style>{style}</style><body class='by-{default}'><h1>Token advantages of sampled completions</h1>",
             _legend(scales, default)]
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
            rows = "".join(_row_html(i, row, scales) for i, row in enumerate(s["rows"]))
            parts.append(f"<div class='step' data-run='{escape(run.run_id)}' data-step='{escape(str(s['step']))}'"
                         f"{hidden}><p class='meta'>completions sampled at step {escape(str(s['step']))}</p>"
                         f"{rows}</div>")
    parts.append(side_by_side(runs, samples_by_run, scales))
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts)
