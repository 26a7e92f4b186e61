"""PNG figures of a comparison: learning curves per group over thin per-seed lines, and eval scores as bars.

A curve at step s is the mean over the group's runs that logged step s, unfinished runs included up to where they
got (so n can drop along a curve). Under it, each run is a thin line of the group's colour, so 2-5 seeds are seen,
not only summarised. The band is the Student-t 95% CI of the mean from 3 runs on; with 2 runs it is their range
(a t-interval on 2 values is 12.7 standard errors wide and says little: with 2 seeds it sent a semantic-entropy band
to -14 bits); one run gets no band. Bands are clipped to what the metric allows (fractions to [0, 1], entropies,
lengths and perplexities to >= 0). Groups differ in colour, marker and line style, so overlapping curves stay
visible; legends are never clipped; flat curves get no axis offset; length panels mark the token budget.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from hicra.analyze.figures import PLAIN_TEXT, mark_token_budget
from hicra.compare.metric_bounds import MIN_CI_RUNS, bounds
from hicra.compare.summary import CONFIDENCE
from hicra.metrics.stats import mean_ci

# Colour-blind-safe and far apart in hue (Okabe-Ito); tab10's neighbours looked alike at 1.8 px.
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", "-.", ":"]
CURVE_METRICS = ["train/accuracy", "hierarchy/semantic_entropy", "train/response_length"]  # after --metric
LENGTH = "length"


def band(values: list[float], key: str) -> tuple[float, float, str] | None:
    """(low, high, kind) around the mean of one step's values: a 95% t-interval from 3 values on ("ci"), the range
    for 2 ("range"), none for 1; clipped to the metric's bounds."""
    if len(values) < 2:
        return None
    if len(values) < MIN_CI_RUNS:
        low, high, kind = min(values), max(values), "range"
    else:
        ci = mean_ci(values, CONFIDENCE)
        low, high, kind = ci.low, ci.high, "ci"
    floor, ceiling = bounds(key)
    low = max(low, floor) if floor is not None else low
    high = min(high, ceiling) if ceiling is not None else high
    return low, high, kind


def curve(frame: pd.DataFrame, run_ids: list[str], key: str) -> pd.DataFrame:
    """Per step: n runs, mean, band low/high and its kind (NaN/"" where n < 2). Empty when no run logged `key`."""
    sel = frame[frame.run_id.isin(run_ids) & (frame.key == key)]
    rows = []
    for step, values in sel.groupby("step").value:
        values = values.tolist()
        b = band(values, key)
        rows.append((int(step), len(values), float(np.mean(values)), *(b if b else (np.nan, np.nan, ""))))
    return pd.DataFrame(rows, columns=["step", "n", "mean", "low", "high", "kind"])


def group_style(i: int) -> dict:
    """Colour, marker and dash all differ between groups: two groups on the same values stay visible (a dashed line
    over a solid one shows both), and a grey-scale print still tells them apart."""
    return {"color": COLOURS[i % len(COLOURS)], "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[i % len(LINESTYLES)]}


def _draw_panel(ax, frame, groups: list[dict], key: str, threshold: float | None) -> bool:
    drawn = False
    for i, group in enumerate(groups):
        run_ids = [r["run_id"] for r in group["runs"]]
        c = curve(frame, run_ids, key)
        if c.empty:
            continue
        style = group_style(i)
        for run_id in run_ids:  # thin per-seed lines under the mean
            own = frame[(frame.run_id == run_id) & (frame.key == key)].sort_values("step")
            ax.plot(own.step, own.value, color=style["color"], lw=0.8, alpha=0.45, zorder=2)
        ax.plot(c.step, c["mean"], ms=5 - min(i, 2), lw=2.4 - 0.3 * min(i, 2), alpha=0.9, zorder=4,
                markeredgecolor="white",
                markeredgewidth=0.5, **style)
        shaded = c.dropna(subset=["low", "high"])
        if not shaded.empty:
            ax.fill_between(shaded.step, shaded.low, shaded.high, color=style["color"], alpha=0.15, lw=0, zorder=1)
        drawn = True
    if not drawn:
        return False
    if threshold is not None:
        ax.axhline(threshold, color="0.4", lw=0.9, ls=(0, (3, 2)), zorder=0)
        ax.annotate(f"threshold {threshold:g}", (0.01, threshold), xycoords=("axes fraction", "data"),
                    textcoords="offset points", xytext=(2, 3), fontsize=8, color="0.3")
    if LENGTH in key.rsplit("/", 1)[-1]:
        mark_token_budget(ax, {r["max_new_tokens"] for g in groups for r in g["runs"]} - {None})
    ax.set_title(key, fontsize=11)
    ax.set_xlabel("step (policy updates)")
    ax.set_ylabel(f"mean over runs (band: 95% CI, range below {MIN_CI_RUNS} runs)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")  # no "1e-11 + 1.07" on a flat curve
    _limit_y(ax, key)
    return True


def _limit_y(ax, key: str) -> None:
    """Keep the axis inside the metric's bounds, and give a flat curve a readable span instead of 8-digit ticks."""
    low, high = ax.get_ylim()
    values = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.lines]) if ax.lines else None
    if values is not None and values.size:
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        min_span = 0.02 * max(abs(lo), abs(hi), 1e-9)
        if hi - lo < min_span:
            low, high = (lo + hi) / 2 - min_span, (lo + hi) / 2 + min_span
    floor, ceiling = bounds(key)
    pad = 0.02 * (high - low)
    if floor is not None and low < floor:
        low = floor - pad
    if ceiling is not None and high > ceiling:
        high = ceiling + pad
    ax.set_ylim(low, high)


def _label(group: dict) -> str:
    n = f"n={group['n_runs']}" + (f", {group['n_unfinished']} unfinished" if group["n_unfinished"] else "")
    return "\n".join(textwrap.wrap(f"{group['label']}  ({n})", 70))


def _legend(fig, groups: list[dict]) -> None:
    handles = [plt.Line2D([], [], lw=2.5, ms=6, label=_label(g), **group_style(i)) for i, g in enumerate(groups)]
    long_labels = any(len(h.get_label()) > 40 for h in handles)
    fig.legend(handles=handles, loc="outside lower center", ncol=1 if len(groups) > 3 or long_labels else len(groups),
               fontsize=9, frameon=False, title="group  (thin lines: its runs)", title_fontsize=9)


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")  # "tight": a legend wider than the axes is not cut
    plt.close(fig)


@matplotlib.rc_context(PLAIN_TEXT)  # group labels and benchmark tags come from runs: text, never mathtext
def learning_curves(frame: pd.DataFrame, groups: list[dict], metric: str, threshold: float,
                    path: Path) -> list[str] | None:
    """One multi-panel PNG; returns the metrics drawn (None: nothing to draw, no file written)."""
    keys = [metric] + [k for k in CURVE_METRICS if k != metric]
    keys = [k for k in keys if (frame.key == k).any()]
    if not keys:
        return None
    ncols = min(len(keys), 2)
    nrows = int(np.ceil(len(keys) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 3.9 * nrows + 0.6 + 0.25 * len(groups)),
                             layout="constrained", squeeze=False)
    drawn = [k for ax, k in zip(axes.flat, keys) if _draw_panel(ax, frame, groups, k, threshold if k == metric
                                                                 else None)]
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    fig.suptitle(f"Learning curves: mean over runs per group, band 95% CI ({MIN_CI_RUNS}+ runs) or range (2 runs)",
                 fontsize=12, fontweight="bold")
    _legend(fig, groups)
    _save(fig, path)
    return drawn


@matplotlib.rc_context(PLAIN_TEXT)
def eval_bars(groups: list[dict], eval_keys: list[str], path: Path) -> bool:
    """Grouped bars: x = benchmark/protocol, one bar per group, error bar = 95% CI half-width (none when n < 2), each
    run's score a dot on its bar."""
    if not eval_keys:
        return False
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(eval_keys) * max(len(groups), 2) / 2 + 2), 4.6 +
                                    0.25 * len(groups)), layout="constrained")
    width = 0.8 / len(groups)
    for i, group in enumerate(groups):
        stats = [group["evals"][k]["score"] for k in eval_keys]
        means = [s["mean"] if s["mean"] is not None else np.nan for s in stats]
        errs = [s["half_width"] if s["half_width"] is not None else 0.0 for s in stats]
        xs = np.arange(len(eval_keys)) + (i - (len(groups) - 1) / 2) * width
        style = group_style(i)
        ax.bar(xs, means, width * 0.92, yerr=errs, capsize=3, color=style["color"], alpha=0.85)
        for x, key in zip(xs, eval_keys):
            scores = [r["evals"][key]["eval/score"] for r in group["runs"] if key in r["evals"]]
            ax.plot([x] * len(scores), scores, ls="none", marker=style["marker"], ms=4, color="black", alpha=0.6)
        for x, s in zip(xs, (group["evals"][k] for k in eval_keys)):
            ax.annotate(f"{s['evaluated']}/{s['of']}", (x, 0), textcoords="offset points", xytext=(0, 2),
                        ha="center", fontsize=7, color="white" if s["evaluated"] else "0.3")
    ax.set_xticks(np.arange(len(eval_keys)), eval_keys)
    ax.set_ylabel("eval/score (mean over runs, error bar: 95% CI; dots: runs)")
    ax.set_title("Evaluation scores per group (m/n = runs evaluated)", fontsize=12, fontweight="bold")
    ax.grid(axis="y", alpha=0.3)
    ax.set_ylim(0.0, min(1.05, max(ax.get_ylim()[1], 0.1)))  # a score is a fraction
    _legend(fig, groups)
    _save(fig, path)
    return True
