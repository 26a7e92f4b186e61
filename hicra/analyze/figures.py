"""The report's PNG figures: one per diagnostic of paper section 4, runs overlaid.

Colour = algorithm (tag `choice.algorithm`), line style = seed, legend label = run name. A panel whose metric no
run logged is left out and reported as skipped; a figure with no panel left is not written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from hicra.analyze.runs import RunInfo, has_metric, series

STEP_LABEL = "step (policy updates)"
ALGO_COLOURS = {"grpo": "tab:blue", "hicra": "tab:orange", "entropy_reg": "tab:green"}
SPARE_COLOURS = ["tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:red", "tab:gray"]
SEED_STYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3))]
# Run names, tags and metric names are drawn as they are: `$...$` in a run name is text, not mathtext (an unknown
# `\foo` in it made matplotlib raise and the whole report end in a traceback).
PLAIN_TEXT = {"text.parse_math": False}


@dataclass
class Panel:
    title: str
    ylabel: str
    key: str                      # the metric drawn against step (or the y metric of an xy panel)
    x_key: str | None = None      # set: plot `key` against this metric instead of step
    xlabel: str = STEP_LABEL
    hline: float | None = None    # reference line (e.g. 1.0 for relative perplexity)
    fraction: bool = False        # a value in [0, 1]: the y axis starts at 0 and never goes past 1


@dataclass
class FigureSpec:
    filename: str
    title: str
    panels: list[Panel]
    description: str = ""


@dataclass
class FigureResult:
    written: list[tuple[FigureSpec, Path]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "figure: panel - reason"


def figure_specs(frame) -> list[FigureSpec]:
    """The figures, with the token-entropy panels falling back to `policy/entropy` when the split is not logged."""
    split = has_metric(frame, "hierarchy/entropy_planning") or has_metric(frame, "hierarchy/entropy_execution")
    entropy_panels = ([Panel("Token entropy: planning tokens", "mean token entropy (nats)", "hierarchy/entropy_planning"),
                       Panel("Token entropy: execution tokens", "mean token entropy (nats)",
                             "hierarchy/entropy_execution")] if split else
                      [Panel("Token entropy: all tokens\n(planning/execution split not logged)",
                             "mean token entropy (nats)", "policy/entropy")])
    return [
        FigureSpec("two_phase_dynamics.png", "Two-phase dynamics: planning vs execution tokens", [
            Panel("Relative perplexity: planning tokens", "perplexity / perplexity at first step",
                  "hierarchy/rel_ppl_planning", hline=1.0),
            Panel("Relative perplexity: execution tokens", "perplexity / perplexity at first step",
                  "hierarchy/rel_ppl_execution", hline=1.0),
            *entropy_panels],
            "relative perplexity and token entropy, planning (Strategic-Gram) tokens vs execution tokens"),
        FigureSpec("semantic_vs_token_entropy.png", "Strategy diversity vs token-level entropy", [
            Panel("Semantic entropy of Strategic Grams", "entropy (bits)", "hierarchy/semantic_entropy"),
            Panel("Token entropy (all response tokens)", "mean token entropy (nats)", "policy/entropy"),
            Panel("Entropy of procedural n-grams after a gram", "conditional entropy (bits)",
                  "hierarchy/cond_entropy_after_gram")],
            "semantic entropy (diversity of strategies) against aggregate token entropy"),
        FigureSpec("validation.png", "Validation (greedy decoding, held-out split)", [
            Panel("Validation accuracy", "accuracy (fraction correct)", "val/accuracy", fraction=True),
            Panel("Validation response length", "mean response length (tokens)", "val/response_length"),
            Panel("Length scaling: accuracy vs length", "accuracy (fraction correct)", "val/accuracy",
                  x_key="val/response_length", xlabel="mean response length (tokens)", fraction=True)],
            "validation accuracy and response length vs step, and accuracy against length"),
        FigureSpec("training.png", "Training rollouts (sampled)", [
            Panel("Mean reward", "reward (mean over completions)", "train/reward_mean"),
            Panel("Training accuracy", "accuracy (fraction correct)", "train/accuracy", fraction=True),
            Panel("Pass@G on training prompts", "pass@G (fraction of groups)", "train/pass_at_g", fraction=True),
            Panel("Training response length", "mean response length (tokens)", "train/response_length")],
            "reward, accuracy, pass@G and response length of the sampled rollouts"),
        FigureSpec("planning_tokens.png", "Planning tokens and their credit", [
            Panel("Planning-token fraction", "planning tokens / response tokens", "hierarchy/planning_token_frac", fraction=True),
            Panel("Mean token advantage: planning tokens", "advantage (mean)", "hierarchy/adv_planning_mean", hline=0.0),
            Panel("Mean token advantage: execution tokens", "advantage (mean)", "hierarchy/adv_execution_mean",
                  hline=0.0),
            Panel("High-entropy tokens that are planning tokens", "fraction of top-30% entropy tokens",
                  "hierarchy/top_entropy_in_planning_frac", fraction=True)],
            "planner mask size and the mean token advantage it produces"),
    ]


def arm(run: RunInfo, runs: list[RunInfo]) -> str:
    """The run's algorithm, with its planner when runs of that algorithm differ in planner (HICRA with Strategic
    Grams and Placebo HICRA are both `hicra`: one colour made them indistinguishable)."""
    planners = {r.planner for r in runs if r.algorithm == run.algorithm}
    return f"{run.algorithm} ({run.planner})" if len(planners) > 1 else run.algorithm


class RunStyles:
    def __init__(self, runs: list[RunInfo]):
        self.arm = {r.run_id: arm(r, runs) for r in runs}
        # An algorithm's own colour goes to one arm (not the placebo one); its other arms take spare colours.
        arms = sorted(set(self.arm.values()), key=lambda a: ("placebo" in a, a))
        spare, self.colour = iter(c for c in SPARE_COLOURS if c not in ALGO_COLOURS.values()), {}
        for a in arms:
            own = ALGO_COLOURS.get(a.split(" (")[0])
            self.colour[a] = own if own and own not in self.colour.values() else next(spare, "black")
        seeds = sorted({r.seed for r in runs}, key=lambda s: (not s.lstrip("-").isdigit(), int(s) if
                                                               s.lstrip("-").isdigit() else 0, s))
        self.style = {s: SEED_STYLES[i % len(SEED_STYLES)] for i, s in enumerate(seeds)}

    def kwargs(self, run: RunInfo) -> dict:
        return {"color": self.colour[self.arm[run.run_id]], "linestyle": self.style[run.seed], "label": run.label}


def _draw(ax, panel: Panel, frame, runs: list[RunInfo], styles: RunStyles) -> bool:
    drawn = False
    for run in runs:
        y = series(frame, run.run_id, panel.key).sort_index()
        if panel.x_key:
            x = series(frame, run.run_id, panel.x_key)
            both = y.index.intersection(x.index)
            if both.empty:
                continue
            xs, ys = x[both].to_numpy(), y[both].to_numpy()
            ax.plot(xs, ys, marker="o", ms=5, lw=1.3, alpha=0.9, **styles.kwargs(run))
            for i in {0, len(xs) - 1}:  # label where each trajectory starts and ends
                ax.annotate(f"step {int(both[i])}", (xs[i], ys[i]), textcoords="offset points", xytext=(4, 4),
                            fontsize=8, color=styles.kwargs(run)["color"])
            ax.margins(x=0.12)
        else:
            if y.empty:
                continue
            ax.plot(y.index, y.to_numpy(), marker="o", ms=4, lw=1.8, **styles.kwargs(run))
        drawn = True
    if not drawn:
        return False
    if panel.hline is not None:
        ax.axhline(panel.hline, color="0.5", lw=0.8, ls=(0, (2, 2)), zorder=0)
    if panel.key.endswith("response_length") and panel.x_key is None:
        mark_token_budget(ax, {int(b) for r in runs if (b := r.params.get("rollout.max_new_tokens", "")).isdigit()})
    ax.set_title(panel.title, fontsize=11)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(alpha=0.3)
    ax.ticklabel_format(axis="y", useOffset=False)  # no "1e-6+1.07e1" offsets on flat curves
    ys = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.lines]) if ax.lines else np.zeros(1)
    low, high = float(np.nanmin(ys)), float(np.nanmax(ys))
    min_span = 0.02 * max(abs(low), abs(high), 1e-9)  # a flat curve stays flat, not 8-digit tick labels
    if high - low < min_span:
        mid = (low + high) / 2
        ax.set_ylim(mid - min_span, mid + min_span)
    if panel.fraction:
        top = max((line.get_ydata().max() for line in ax.lines if len(line.get_ydata())), default=0.0)
        top = min(1.0, max(top, 0.05)) * 1.08 + 0.01
        ax.set_ylim(-0.02 * top, top)
    if panel.x_key is None:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return True


def mark_token_budget(ax, budgets: set[int]) -> None:
    """The generation budget (`rollout.max_new_tokens`) a length curve runs into: lengths near it mean truncation."""
    for budget in sorted(budgets):
        ax.axhline(budget, color="0.25", lw=1.0, ls=(0, (6, 3)), zorder=0)
        ax.annotate(f"token budget {budget}", (0.99, budget), xycoords=("axes fraction", "data"),
                    textcoords="offset points", xytext=(-2, -10), ha="right", fontsize=8, color="0.25")


@matplotlib.rc_context(PLAIN_TEXT)
def render_figures(frame, runs: list[RunInfo], out_dir: Path) -> FigureResult:
    result, styles = FigureResult(), RunStyles(runs)
    for spec in figure_specs(frame):
        needed = [p for p in spec.panels if has_metric(frame, p.key) and (p.x_key is None or
                                                                          has_metric(frame, p.x_key))]
        for p in spec.panels:
            if p not in needed:
                missing = [k for k in (p.key, p.x_key) if k and not has_metric(frame, k)]
                result.skipped.append(f"{spec.filename}: {p.title} ({', '.join(missing)} not logged)")
        if not needed:
            continue
        ncols = min(len(needed), 2 if len(needed) == 4 else 3)
        nrows = int(np.ceil(len(needed) / ncols))
        fig, axes = plt.subplots(nrows, ncols, figsize=(max(5.4 * ncols, 8.0), 3.9 * nrows + 1.0),
                                 layout="constrained",
                                 squeeze=False)
        for ax, panel in zip(axes.flat, needed):
            _draw(ax, panel, frame, runs, styles)
        for ax in list(axes.flat)[len(needed):]:
            ax.set_visible(False)
        fig.suptitle(spec.title, fontsize=13, fontweight="bold")
        handles = [Line2D([], [], marker="o", ms=4, lw=1.8, **styles.kwargs(r)) for r in runs]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(runs), 4), fontsize=9,
                   title="run  (colour = algorithm, line style = seed)", title_fontsize=9, frameon=False)
        path = out_dir / spec.filename
        fig.savefig(path, dpi=120, bbox_inches="tight")  # "tight": a legend wider than the axes is not cut
        plt.close(fig)
        result.written.append((spec, path))
    return result
