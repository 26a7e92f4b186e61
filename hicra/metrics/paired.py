"""Pure statistics of a paired-by-seed study: every arm runs the same seeds, so each seed gives one difference
arm - baseline, and the seed-to-seed noise both arms share cancels out of it.

    pairing        seeds in both arms give a difference d_i; seeds in one arm only are returned by name, never dropped
    paired CI      d_bar +- t(1 - alpha/2, n - 1) * s_d / sqrt(n)   (the one-sample interval of the d_i: mean_ci)
    power          two-sided paired t-test at level alpha, true mean difference delta, n pairs:
                   power = P(T' > t_c) + P(T' < -t_c),  T' ~ noncentral t(n - 1, lambda = delta sqrt(n) / s_d),
                   t_c = t(1 - alpha/2, n - 1). Exact; the normal approximation (z_{1-alpha/2} + z_power) s_d /
                   sqrt(n) understates the detectable difference for few seeds (n = 3: 1.62 s_d, exactly 3.26 s_d)
    detectable     the delta at which power reaches its target (0.8) with the observed n and s_d
    seeds needed   the smallest n >= 2 whose power reaches the target for a given delta

`s_d` is the sample SD of the differences (n - 1 denominator). Everything here is scipy's t and noncentral t
(`scipy.stats.nct`), imported inside the functions as hicra.metrics.stats does (a ~0.5 s import).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

ALPHA, POWER = 0.05, 0.8
METHOD = "exact: noncentral t (scipy.stats.nct), two-sided paired t-test, alpha 0.05, power 0.8"


@dataclass(frozen=True)
class Pairing:
    """Seeds matched across two arms: `pairs` seed -> (arm value, baseline value), in seed order."""

    pairs: dict[str, tuple[float, float]]
    only_arm: list[str]
    only_baseline: list[str]

    @property
    def differences(self) -> list[float]:
        return [a - b for a, b in self.pairs.values()]


def seed_order(seed: str) -> tuple:
    """Seeds in natural order: "2" before "10"; any non-numeric text after the numbers."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", seed) if part)


def pair_by_seed(arm: Mapping[str, float], baseline: Mapping[str, float]) -> Pairing:
    """Match the two arms' values on their seeds; seeds present in one arm only are listed, not paired."""
    shared = sorted(arm.keys() & baseline.keys(), key=seed_order)
    return Pairing({s: (float(arm[s]), float(baseline[s])) for s in shared},
                   sorted(arm.keys() - baseline.keys(), key=seed_order),
                   sorted(baseline.keys() - arm.keys(), key=seed_order))


def _check(alpha: float, power: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha!r} is invalid; allowed: a number in (0, 1)")
    if not 0.0 < power < 1.0:
        raise ValueError(f"power={power!r} is invalid; allowed: a number in (0, 1)")


def paired_t_power(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test with n pairs (n >= 2) when the true mean difference is `effect` and the
    SD of the differences is `sd` (> 0). E.g. effect 0.5, sd 1, n 34 -> 0.8078 (G*Power's table value)."""
    from scipy.stats import nct, t

    if n < 2 or not sd > 0:
        raise ValueError(f"paired_t_power needs n >= 2 and sd > 0, got n={n}, sd={sd}")
    dof = n - 1
    t_crit = t.ppf(1.0 - alpha / 2.0, dof)
    noncentrality = effect * math.sqrt(n) / sd
    # P(T' < -t_c) written as the upper tail of the mirrored distribution: scipy's nct.cdf returns NaN far in the
    # lower tail (df 1, noncentrality 8), where the upper tail with noncentrality -8 is finite and the same number.
    return float(nct.sf(t_crit, dof, noncentrality) + nct.sf(t_crit, dof, -noncentrality))


def detectable_difference(sd: float | None, n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest true mean difference (> 0, in the metric's units) the paired t-test detects with probability
    `power` at n pairs and difference SD `sd`. None when n < 2 or sd is None or 0 (no spread: no test to power)."""
    _check(alpha, power)
    if n < 2 or sd is None or not sd > 0 or not math.isfinite(sd):
        return None
    from statistics import NormalDist

    from scipy.optimize import brentq

    # The normal approximation is a lower bound (t tails are heavier): bracket upwards from it.
    z = NormalDist().inv_cdf
    low = (z(1.0 - alpha / 2.0) + z(power)) * sd / math.sqrt(n)
    high = 2.0 * low
    while paired_t_power(high, sd, n, alpha) < power:
        high *= 2.0
    return float(brentq(lambda d: paired_t_power(d, sd, n, alpha) - power, low, high, xtol=1e-12 * sd))


def seeds_needed(effect: float, sd: float | None, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Smallest number of paired seeds n >= 2 at which the two-sided paired t-test reaches `power` for a true mean
    difference `effect` (its sign does not matter) with difference SD `sd`. None when sd is None or 0."""
    _check(alpha, power)
    if sd is None or not sd > 0 or not math.isfinite(sd):
        return None
    if not (math.isfinite(effect) and effect != 0):
        raise ValueError(f"effect={effect!r} is invalid; allowed: a finite non-zero difference")
    from statistics import NormalDist

    z = NormalDist().inv_cdf
    # Start at the normal approximation (a lower bound on n) and walk up: the exact n is a few pairs above it.
    n = max(2, math.floor(((z(1.0 - alpha / 2.0) + z(power)) * sd / abs(effect)) ** 2))
    while n > 2 and paired_t_power(abs(effect), sd, n - 1, alpha) >= power:
        n -= 1
    while paired_t_power(abs(effect), sd, n, alpha) < power:
        n += 1
    return n
