"""hicra.metrics.paired: pairing by seed, the paired interval, and power against G*Power's paired t-test tables."""

import math
from statistics import NormalDist

import pytest

from hicra.metrics.paired import detectable_difference, pair_by_seed, paired_t_power, seed_order, seeds_needed
from hicra.metrics.stats import mean_ci

T975_2 = 4.302652729749464
Z = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)  # 2.8016: the normal approximation's factor
# G*Power 3.1, "t tests - Means: difference from constant (one sample case)" = paired t-test on the differences,
# two tails, alpha 0.05, power 0.8: effect size dz -> total sample size and the actual power it reports.
GPOWER = {0.2: (199, 0.8016910), 0.5: (34, 0.8077775), 0.8: (15, 0.8213105)}


def test_pairing_lists_the_seeds_of_one_arm_only_in_natural_order():
    p = pair_by_seed({"0": 0.3, "1": 0.5, "2": 0.7, "10": 0.1, "4": 0.6}, {"2": 0.4, "1": 0.3, "0": 0.2, "3": 0.5})
    assert list(p.pairs) == ["0", "1", "2"] and p.pairs["1"] == (0.5, 0.3)
    assert p.only_arm == ["4", "10"] and p.only_baseline == ["3"]
    assert p.differences == pytest.approx([0.1, 0.2, 0.3])
    assert sorted(["10", "2", "b", "1"], key=seed_order) == ["1", "2", "10", "b"]


def test_paired_interval_hand_values():
    # differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, CI 0.2 +- t(0.975, 2) * 0.1 / sqrt(3) = 0.2 +- 0.2484
    ci = mean_ci(pair_by_seed({"0": 0.3, "1": 0.5, "2": 0.7}, {"0": 0.2, "1": 0.3, "2": 0.4}).differences)
    assert ci.n == 3 and ci.mean == pytest.approx(0.2) and ci.sd == pytest.approx(0.1)
    assert ci.half_width == pytest.approx(T975_2 * 0.1 / math.sqrt(3)) and ci.low == pytest.approx(-0.0484138, abs=1e-6)


@pytest.mark.parametrize("dz", sorted(GPOWER))
def test_power_and_seeds_needed_match_gpower(dz):
    n, power = GPOWER[dz]
    assert paired_t_power(dz, 1.0, n) == pytest.approx(power, abs=1e-6)
    assert paired_t_power(dz, 1.0, n - 1) < 0.8 <= paired_t_power(dz, 1.0, n)
    assert seeds_needed(dz, 1.0) == n
    assert seeds_needed(-dz * 0.1, 0.1) == n  # in metric units: only effect / sd matters, and not its sign
    assert n > math.ceil((Z / dz) ** 2)  # the normal approximation (32 for dz 0.5) asks for too few seeds


def test_detectable_difference_reaches_the_power_exactly_and_exceeds_the_normal_approximation():
    mde = detectable_difference(0.1, 34)
    assert paired_t_power(mde, 0.1, 34) == pytest.approx(0.8, abs=1e-9)
    assert Z * 0.1 / math.sqrt(34) < mde < 0.05  # dz 0.5 at n 34 has power 0.8078 > 0.8, so its MDE is below 0.05
    assert seeds_needed(mde * 1.0001, 0.1) == 34  # the two solve the same equation
    three = detectable_difference(1.0, 3)
    assert three == pytest.approx(3.2640, abs=1e-3) and three > 2 * Z / math.sqrt(3)  # few seeds: t tails matter


def test_two_seeds_far_in_the_tail_give_a_number_not_nan():
    """scipy's nct.cdf is NaN at df 1, noncentrality 8 (the lower tail); the power uses the mirrored upper tail."""
    power = paired_t_power(8 / math.sqrt(2), 1.0, 2)
    assert 0.4 < power < 0.5
    assert detectable_difference(1.0, 2) == pytest.approx(11.55, abs=0.01)
    assert seeds_needed(100.0, 1.0) == 2


def test_no_spread_or_one_pair_gives_none_and_bad_input_raises():
    assert detectable_difference(0.0, 5) is None and detectable_difference(None, 1) is None
    assert detectable_difference(0.1, 1) is None
    assert seeds_needed(0.05, 0.0) is None and seeds_needed(0.05, None) is None
    with pytest.raises(ValueError, match="effect=0"):
        seeds_needed(0.0, 0.1)
    with pytest.raises(ValueError, match="power=1.5"):
        detectable_difference(0.1, 5, power=1.5)
    with pytest.raises(ValueError, match="n >= 2"):
        paired_t_power(0.1, 0.1, 1)
