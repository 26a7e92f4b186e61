"""hicra.metrics.stats: hand-computed means, Student-t and Welch intervals, n = 0 / 1 and degenerate cases."""

import math

import pytest

from hicra.metrics.stats import mean_ci, t_quantile, welch_diff_ci, welch_dof, wilson_interval

T975 = {1: 12.706204736174698, 2: 4.302652729749464, 4: 2.7764451051977987}  # t tables, two-sided 95%


@pytest.mark.parametrize("dof", sorted(T975))
def test_t_quantile_matches_tables(dof):
    assert t_quantile(0.975, dof) == pytest.approx(T975[dof], rel=1e-9)


def test_t_quantile_fractional_dof_is_between_neighbours():
    assert T975[4] < t_quantile(0.975, 2.88) < T975[2]


def test_mean_ci_hand_values():
    # mean 0.2; sd = sqrt((0.01 + 0 + 0.01) / 2) = 0.1; half-width = t(0.975, 2) * 0.1 / sqrt(3) = 0.2484
    ci = mean_ci([0.1, 0.2, 0.3])
    assert ci.n == 3 and ci.mean == pytest.approx(0.2) and ci.sd == pytest.approx(0.1)
    assert ci.half_width == pytest.approx(0.24841377, abs=1e-8)
    assert ci.low == pytest.approx(0.2 - 0.24841377) and ci.high == pytest.approx(0.2 + 0.24841377)


def test_mean_ci_other_confidence():
    ci = mean_ci([0.1, 0.2, 0.3], confidence=0.9)  # t(0.95, 2) = 2.919986
    assert ci.half_width == pytest.approx(2.919985580 * 0.1 / math.sqrt(3), rel=1e-8)


def test_mean_ci_two_values():
    ci = mean_ci([0.5, 0.6])  # sd = 0.0707107, half-width = 12.7062 * 0.05
    assert ci.mean == pytest.approx(0.55) and ci.half_width == pytest.approx(T975[1] * 0.05)


def test_mean_ci_one_and_zero_values_have_no_interval_and_no_nan():
    one = mean_ci([0.4])
    assert (one.n, one.mean, one.sd, one.half_width, one.low, one.high) == (1, 0.4, None, None, None, None)
    zero = mean_ci([])
    assert (zero.n, zero.mean, zero.half_width) == (0, None, None)


def test_mean_ci_constant_values_have_zero_width():
    ci = mean_ci([1.0, 1.0, 1.0])
    assert ci.sd == 0.0 and ci.half_width == 0.0 and ci.low == ci.high == 1.0


@pytest.mark.parametrize("bad", [[0.1, math.nan], [math.inf]])
def test_non_finite_values_raise(bad):
    with pytest.raises(ValueError, match="non-finite"):
        mean_ci(bad)
    with pytest.raises(ValueError, match="non-finite"):
        welch_diff_ci(bad, [1.0, 2.0])


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95])
def test_bad_confidence_raises(confidence):
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=confidence)


def test_welch_dof_hand_value():
    # a = [0.5, 0.6]: s^2/n = 0.005/2 = 1/400; b = [0.1, 0.2, 0.3]: s^2/n = 0.01/3 = 1/300
    # nu = (1/400 + 1/300)^2 / ((1/400)^2 / 1 + (1/300)^2 / 2) = (49/1440000) / (17/1440000) = 49/17
    assert welch_dof(0.005, 2, 0.01, 3) == pytest.approx(49 / 17)


def test_welch_diff_hand_values_unequal_sizes():
    d = welch_diff_ci([0.5, 0.6], [0.1, 0.2, 0.3])
    se = math.sqrt(1 / 400 + 1 / 300)  # 0.0763763
    assert (d.n_a, d.n_b) == (2, 3) and d.diff == pytest.approx(0.35) and d.se == pytest.approx(se)
    assert d.dof == pytest.approx(49 / 17)
    assert d.half_width == pytest.approx(t_quantile(0.975, 49 / 17) * se)
    assert d.low == pytest.approx(0.101, abs=1e-3) and d.high == pytest.approx(0.599, abs=1e-3)
    assert d.excludes_zero is True


def test_welch_equal_sizes_and_variances_is_the_pooled_t_interval():
    # equal n and s^2: nu = 2(n - 1) = 4, se = sqrt(2 s^2 / n) = sqrt(2/3)
    d = welch_diff_ci([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    assert d.diff == pytest.approx(-1.0) and d.dof == pytest.approx(4.0)
    assert d.half_width == pytest.approx(T975[4] * math.sqrt(2 / 3))
    assert d.excludes_zero is False


def test_welch_is_antisymmetric():
    a, b = [0.2, 0.4, 0.9], [0.1, 0.15]
    ab, ba = welch_diff_ci(a, b), welch_diff_ci(b, a)
    assert ab.diff == pytest.approx(-ba.diff) and ab.dof == pytest.approx(ba.dof)
    assert ab.low == pytest.approx(-ba.high) and ab.high == pytest.approx(-ba.low)


def test_welch_needs_two_values_per_side_for_an_interval():
    d = welch_diff_ci([0.4], [0.1, 0.2, 0.3])
    assert d.diff == pytest.approx(0.2) and d.low is None and d.dof is None and d.excludes_zero is None
    empty = welch_diff_ci([], [0.1, 0.2])
    assert empty.diff is None and empty.n_a == 0 and empty.n_b == 2
    with pytest.raises(ValueError, match="n >= 2"):
        welch_dof(0.1, 1, 0.1, 3)


def test_welch_zero_spread_collapses_to_a_point():
    d = welch_diff_ci([1.0, 1.0], [0.0, 0.0, 0.0])
    assert d.diff == 1.0 and d.se == 0.0 and d.dof is None and d.half_width == 0.0 and d.low == d.high == 1.0


def test_wilson_interval_hand_values():
    # 10 of 32 at 95% (z = 1.959964, z^2 = 3.841459): centre = 0.3125 + 3.841459 / 64 = 0.372523,
    # half = z * sqrt(0.3125 * 0.6875 / 32 + 3.841459 / 4096) = 0.171448, both over 1 + 3.841459 / 32 = 1.120046
    low, high = wilson_interval(10, 32)
    assert low == pytest.approx(0.179524, abs=1e-5) and high == pytest.approx(0.485668, abs=1e-5)


def test_wilson_interval_edges_stay_in_unit_range_and_are_not_degenerate():
    low, high = wilson_interval(0, 32)
    assert low == 0.0 and 0.05 < high < 0.15  # 0 of 32 does not mean certainly 0
    low, high = wilson_interval(32, 32)
    assert 0.85 < low < 0.95 and high == 1.0
    assert wilson_interval(0, 0) is None
    a, b = wilson_interval(16, 32), wilson_interval(160, 320)
    assert b[1] - b[0] < a[1] - a[0]  # more questions, narrower
    with pytest.raises(ValueError, match="successes=5 of n=4"):
        wilson_interval(5, 4)


def test_values_past_the_square_root_of_float_range_give_wide_intervals_not_an_overflow():
    """hicra-compare reads what runs logged: a diverged metric of 1e200 made `x ** 2` and fsum raise OverflowError."""
    from hicra.metrics.stats import sample_variance

    ci = mean_ci([1e200, -1e200, 0.0])
    assert ci.mean == 0.0 and ci.sd == math.inf and ci.low == -math.inf and ci.high == math.inf
    assert sample_variance([1e150, 3e150]) == pytest.approx(2e300)  # in range: the exact value, scaled and back
    assert mean_ci([1e308, 1e308]).mean == 1e308  # fsum alone overflows on the sum
    diff = welch_diff_ci([1e200, -1e200], [1.0, 2.0])
    assert diff.diff == pytest.approx(-1.5) and diff.dof == 1.0 and diff.high == math.inf
    assert welch_dof(1e200, 2, 1e200, 2) == pytest.approx(welch_dof(1.0, 2, 1.0, 2))  # scale-free
