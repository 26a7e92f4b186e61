"""The comparison and analysis figures hold up with 2-5 seeds: the right band for the number of runs, bands inside
what a metric allows, per-seed lines, no axis offset, the token budget on length panels, arms told apart."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from hicra.analyze.figures import RunStyles
from hicra.analyze.runs import RunInfo
from hicra.compare import plots


def test_bounds_follow_the_metric():
    assert plots.bounds("val/accuracy") == (0.0, 1.0)
    assert plots.bounds("hierarchy/planning_token_frac") == (0.0, 1.0)
    assert plots.bounds("hierarchy/semantic_entropy") == (0.0, None)
    assert plots.bounds("train/response_length") == (0.0, None)
    assert plots.bounds("loss/policy") == (None, None)


def test_band_is_a_range_below_three_runs_and_a_clipped_ci_from_three():
    assert plots.band([0.4], "val/accuracy") is None
    assert plots.band([1.0, 3.0], "hierarchy/semantic_entropy") == (1.0, 3.0, "range")  # t on 2 values: +-12.7 se
    low, high, kind = plots.band([0.0, 0.1, 3.0], "hierarchy/semantic_entropy")  # t-interval reaches below 0
    assert kind == "ci" and low == 0.0 and high > 3.0
    low, high, kind = plots.band([0.9, 1.0, 1.0], "val/accuracy")
    assert kind == "ci" and high == 1.0 and 0.0 < low < 0.9
    low, high, _ = plots.band([-2.0, 0.0, 2.0], "loss/policy")  # unbounded: untouched
    assert low < -2.0 and high > 2.0


def _frame(key: str, per_run: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([(run_id, key, step, v) for run_id, values in per_run.items() for step, v in enumerate(values)],
                        columns=["run_id", "key", "step", "value"])


def _group(label: str, run_ids: list[str], budget: int | None = None) -> dict:
    return {"label": label, "n_runs": len(run_ids), "n_unfinished": 0,
            "runs": [{"run_id": r, "max_new_tokens": budget} for r in run_ids]}


def test_panel_draws_seeds_under_the_mean_inside_the_bounds():
    frame = _frame("hierarchy/semantic_entropy", {"a0": [0.1, 0.2, 0.1], "a1": [2.5, 2.9, 3.0],
                                              "b0": [1.0, 1.0, 1.0], "b1": [1.2, 1.1, 1.0]})
    fig, ax = plt.subplots()
    try:
        assert plots._draw_panel(ax, frame, [_group("grpo", ["a0", "a1"]), _group("hicra", ["b0", "b1"])],
                                 "hierarchy/semantic_entropy", None)
        thin = [line for line in ax.lines if line.get_linewidth() < 1.0]
        assert len(thin) == 4  # one line per run
        assert len(ax.lines) == 6  # + one mean per group
        assert ax.get_ylim()[0] >= -0.1  # entropy >= 0: no band (or axis) reaching far below 0
        styles = {(line.get_color(), line.get_marker(), line.get_linestyle()) for line in ax.lines
                  if line.get_linewidth() >= 1.5}
        assert len(styles) == 2  # the groups differ in colour, marker and dash
        assert ax.yaxis.get_major_formatter().get_useOffset() is False
    finally:
        plt.close(fig)


def test_length_panel_marks_the_token_budget():
    frame = _frame("train/response_length", {"a0": [90.0, 110.0], "a1": [95.0, 120.0]})
    fig, ax = plt.subplots()
    try:
        plots._draw_panel(ax, frame, [_group("grpo", ["a0", "a1"], budget=128)], "train/response_length", None)
        assert any(text.get_text() == "token budget 128" for text in ax.texts)
        assert any(list(line.get_ydata()) == [128, 128] for line in ax.lines)
    finally:
        plt.close(fig)


def test_flat_curve_gets_a_readable_axis(tmp_path):
    frame = _frame("val/accuracy", {"a0": [0.3125, 0.3125, 0.3125], "a1": [0.3125, 0.3125, 0.3125]})
    fig, ax = plt.subplots()
    try:
        plots._draw_panel(ax, frame, [_group("grpo", ["a0", "a1"])], "val/accuracy", None)
        low, high = ax.get_ylim()
        assert high - low >= 0.01 and low < 0.3125 < high
    finally:
        plt.close(fig)


def test_learning_curves_file_keeps_long_legends(tmp_path):
    long = "hicra__strategic_grams algorithm.alpha=0.2 rollout.max_new_tokens=512 task=chain_sum seed-suffix"
    frame = _frame("val/accuracy", {"a0": [0.1, 0.3], "a1": [0.2, 0.4], "b0": [0.1, 0.2]})
    path = tmp_path / "curves.png"
    drawn = plots.learning_curves(frame, [_group(long, ["a0", "a1"]), _group("grpo", ["b0"])], "val/accuracy",
                                  0.3, path)
    assert drawn == ["val/accuracy"] and path.stat().st_size > 0
    assert "\n" in plots._label({"label": long, "n_runs": 2, "n_unfinished": 0})  # wrapped, not cut


def _run(run_id: str, algorithm: str, planner: str, seed: str) -> RunInfo:
    return RunInfo(run_id=run_id, name=run_id, algorithm=algorithm, planner=planner, seed=seed, status="FINISHED")


@pytest.mark.parametrize("order", [0, 1])
def test_placebo_hicra_is_not_coloured_like_hicra(order):
    runs = [_run("g", "grpo", "none", "0"), _run("h", "hicra", "strategic_grams", "0"),
            _run("p", "hicra", "random_placebo", "0"), _run("h1", "hicra", "strategic_grams", "1")]
    styles = RunStyles(runs if order == 0 else runs[::-1])
    colour = {r.run_id: styles.kwargs(r)["color"] for r in runs}
    assert colour["g"] == "tab:blue" and colour["h"] == "tab:orange" == colour["h1"]
    assert colour["p"] not in {"tab:blue", "tab:orange"}
    assert styles.kwargs(runs[1])["linestyle"] != styles.kwargs(runs[3])["linestyle"]  # seeds differ in style
