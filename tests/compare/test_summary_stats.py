"""The compare tables' statistics with 2-5 seeds: a range below 3 runs, differences cut to what the metric allows."""

from __future__ import annotations

import pytest

from hicra.compare.report import fmt_ci
from hicra.compare.summary import _mean_ci, within_bounds
from hicra.metrics.stats import welch_diff_ci


def test_two_runs_show_their_range_three_or_more_a_t_interval():
    assert fmt_ci(_mean_ci([0.18, 0.42])) == "0.300 [range 0.180, 0.420]"  # not 0.300 ± 1.525
    three = _mean_ci([0.2, 0.3, 0.4])
    assert fmt_ci(three) == f"0.300 ± {three['half_width']:.3f}" and three["half_width"] == pytest.approx(0.248, abs=1e-3)
    assert fmt_ci(_mean_ci([0.5])) == "0.500 ± n/a"
    assert fmt_ci(_mean_ci([])) == "n/a"


def test_an_accuracy_difference_is_cut_to_plus_minus_one():
    wide = welch_diff_ci([0.37, 0.29], [0.42, 0.18])  # the README's 2-seed sweep: [-1.03, +1.09] uncut
    assert wide.low < -1 and wide.high > 1
    cut = within_bounds(wide, "val/accuracy")
    assert (cut.low, cut.high) == (-1.0, 1.0) and cut.diff == wide.diff
    assert within_bounds(wide, "loss/policy") == wide  # unbounded metric: untouched
    narrow = welch_diff_ci([0.5, 0.6, 0.55], [0.2, 0.25, 0.3])
    assert within_bounds(narrow, "val/accuracy") == narrow  # already inside: unchanged
    entropy = within_bounds(welch_diff_ci([0.1, 3.0], [0.2, 0.1]), "hierarchy/semantic_entropy")
    assert entropy.low is not None and entropy.low < -1  # only a lower bound on the values: no cap on a difference
