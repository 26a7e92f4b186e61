"""PNG figures of a comparison: learning curves per group with a shaded 95% CI band, and eval scores as bars.

A curve at step s is the mean over the group's runs that logged step s, unfinished runs included up to where they
got (so n can drop along a curve). The band is the Student-t 95% CI of that mean and is drawn only where >= 2 runs
logged the step; a step with one run is a point on the line, without a band.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from hicra.compare.summary import CONFIDENCE
from hicra.metrics.stats import mean_ci

COLOURS = plt.get_cmap("tab10").colors
CURVE_METRICS = ["train/accuracy", "hicra/semantic_entropy", "train/response_length"]  # after --metric
FRACTIONS = ("accuracy", "frac", "pass_at")


def curve(frame: pd.DataFrame, run_ids: list[str], key: str) -> pd.DataFrame:
    """Per step: n runs, mean, CI low/high (NaN where n < 2). Empty frame when no run logged `key`."""
    sel = frame[frame.run_id.isin(run_ids) & (frame.key == key)]
    rows = []
    for step, values in sel.groupby("step").value:
        ci = mean_ci(values.tolist(), CONFIDENCE)
        rows.append((int(step), ci.n, ci.mean, np.nan if ci.low is None else ci.low,
                     np.nan if ci.high is None else ci.high))
    return pd.DataFrame(rows, columns=["step", "n", "mean", "low", "high"])


def _draw_panel(ax, frame, groups: list[dict], key: str, threshold: float | None) -> bool:
    drawn = False
    for i, group in enumerate(groups):
        c = curve(frame, [r["run_id"] for r in group["runs"]], key)
        if c.empty:
            continue
        colour = COLOURS[i % len(COLOURS)]
        ax.plot(c.step, c["mean"], marker="o", ms=3, lw=1.8, color=colour)
        band = c.dropna(subset=["low", "high"])
        if not band.empty:
            ax.fill_between(band.step, band.low, band.high, color=colour, alpha=0.18, lw=0)
        drawn = True
    if not drawn:
        return False
    if threshold is not None:
        ax.axhline(threshold, color="0.4", lw=0.9, ls=(0, (3, 2)), zorder=0)
        ax.annotate(f"threshold {threshold:g}", (0.01, threshold), xycoords=("axes fraction", "data"),
                    textcoords="offset points", xytext=(2, 3), fontsize=8, color="0.3")
    ax.set_title(key, fontsize=11)
    ax.set_xlabel("step (policy updates)")
    ax.set_ylabel("mean over runs (band: 95% CI)")
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if any(word in key for word in FRACTIONS):
        ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    return True


def _legend(fig, groups: list[dict]) -> None:
    handles = [plt.Line2D([], [], color=COLOURS[i % len(COLOURS)], lw=2.5,
                          label=f"{g['label']}  (n={g['n_runs']}" + (f", {g['n_unfinished']} unfinished)"
                                                                      if g["n_unfinished"] else ")"))
               for i, g in enumerate(groups)]
    fig.legend(handles=handles, loc="outside lower center", ncol=1 if len(groups) > 3 else len(groups),
               fontsize=9, frameon=False)


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
    fig.suptitle("Learning curves: mean over runs per group, shaded 95% CI", fontsize=13, fontweight="bold")
    _legend(fig, groups)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def eval_bars(groups: list[dict], eval_keys: list[str], path: Path) -> bool:
    """Grouped bars: x = benchmark/protocol, one bar per group, error bar = 95% CI half-width (none when n < 2)."""
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
        ax.bar(xs, means, width * 0.92, yerr=errs, capsize=3, color=COLOURS[i % len(COLOURS)])
        for x, s in zip(xs, (group["evals"][k] for k in eval_keys)):
            ax.annotate(f"{s['evaluated']}/{s['of']}", (x, 0), textcoords="offset points", xytext=(0, 2),
                        ha="center", fontsize=7, color="white" if s["evaluated"] else "0.3")
    ax.set_xticks(np.arange(len(eval_keys)), eval_keys)
    ax.set_ylabel("eval/score (mean over runs, error bar: 95% CI)")
    ax.set_title("Evaluation scores per group (m/n = runs evaluated)", fontsize=12, fontweight="bold")
    ax.grid(axis="y", alpha=0.3)
    _legend(fig, groups)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
