"""Pure statistics for comparing arms of a study over seeds: mean with a Student-t confidence interval, and the
Welch confidence interval of a difference of two means.

Inputs are plain sequences of floats (one number per seed); outputs are small frozen dataclasses of plain floats.
A quantity that cannot be computed is None, never NaN: one seed has a mean but no spread, so its interval is None
(a report prints "n/a"), and zero seeds have no mean at all. Non-finite inputs raise ValueError: a NaN seed value
is a bug upstream (fetch_metrics drops them), and silently averaging it would poison the whole row.

Formulas (x_1..x_n one arm, y_1..y_m the other, s = sample standard deviation with n - 1 in the denominator):

    mean CI        x_bar +- t(1 - (1 - c)/2, n - 1) * s / sqrt(n)
    Welch diff     (x_bar - y_bar) +- t(1 - (1 - c)/2, nu) * sqrt(s_x^2/n + s_y^2/m)
    Welch-Satterthwaite dof
                   nu = (s_x^2/n + s_y^2/m)^2 / ((s_x^2/n)^2/(n - 1) + (s_y^2/m)^2/(m - 1))
    Wilson interval of a proportion p = k/n (one run's accuracy on n questions), z = Phi^-1(1 - (1 - c)/2):
                   (p + z^2/2n +- z sqrt(p(1 - p)/n + z^2/4n^2)) / (1 + z^2/n)

The t quantile is scipy's; everything else is the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MeanCI:
    """Mean of n values and its confidence interval; `sd`/`half_width`/`low`/`high` are None when n < 2."""

    n: int
    mean: float | None
    sd: float | None
    half_width: float | None
    low: float | None
    high: float | None
    confidence: float


@dataclass(frozen=True)
class DiffCI:
    """mean(a) - mean(b) with a Welch interval; the interval fields are None unless both samples have n >= 2."""

    n_a: int
    n_b: int
    diff: float | None
    se: float | None
    dof: float | None
    half_width: float | None
    low: float | None
    high: float | None
    confidence: float

    @property
    def excludes_zero(self) -> bool | None:
        """True/False when an interval exists (a degenerate zero-width interval at 0 includes 0); else None."""
        if self.low is None or self.high is None:
            return None
        return self.low > 0.0 or self.high < 0.0


def _checked(values: Sequence[float], name: str) -> list[float]:
    xs = [float(v) for v in values]
    if not all(math.isfinite(x) for x in xs):
        raise ValueError(f"{name} has non-finite values {xs}; allowed: finite numbers")
    return xs


def _check_confidence(confidence: float) -> None:
    if not (isinstance(confidence, (int, float)) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence={confidence!r} is invalid; allowed: a number in (0, 1)")


def t_quantile(p: float, dof: float) -> float:
    """Quantile of Student's t with `dof` (> 0, may be fractional) degrees of freedom, e.g. t(0.975, 2) = 4.3027."""
    if not dof > 0:
        raise ValueError(f"dof={dof!r} is invalid; allowed: > 0")
    # Imported here: scipy.stats takes ~0.5 s to import and `hicra.algorithms` is on the training import path.
    from scipy.stats import t

    return float(t.ppf(p, dof))


def sample_variance(values: Sequence[float]) -> float | None:
    """Unbiased variance (n - 1 denominator); None for fewer than two values."""
    xs = _checked(values, "values")
    if len(xs) < 2:
        return None
    scale = _power_of_two_scale(xs)
    ys = [x / scale for x in xs]
    mean = math.fsum(ys) / len(ys)
    # A float product overflows to inf where `**` raises: a variance too large for a float reads inf.
    return math.fsum((y - mean) * (y - mean) for y in ys) / (len(ys) - 1) * scale * scale


def _mean(xs: list[float]) -> float:
    scale = _power_of_two_scale(xs)
    return math.fsum(x / scale for x in xs) / len(xs) * scale


def _power_of_two_scale(xs: list[float]) -> float:
    """1, or for values above 1e100 the power of two that brings the largest to [1, 2): a sum or square of such values
    would overflow (fsum and `**` raise), and dividing by a power of two loses no bits, so results are unchanged."""
    largest = max((abs(x) for x in xs), default=0.0)
    return 2.0 ** (math.frexp(largest)[1] - 1) if largest > 1e100 else 1.0  # <= 2**1023, itself a float


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> MeanCI:
    """Mean and two-sided Student-t interval with n - 1 dof. n = 1: mean only; n = 0: nothing."""
    _check_confidence(confidence)
    xs = _checked(values, "values")
    n = len(xs)
    if n == 0:
        return MeanCI(0, None, None, None, None, None, confidence)
    mean = _mean(xs)
    var = sample_variance(xs)
    if var is None:
        return MeanCI(1, mean, None, None, None, None, confidence)
    sd = math.sqrt(var)
    half = t_quantile(1.0 - (1.0 - confidence) / 2.0, n - 1) * sd / math.sqrt(n)
    return MeanCI(n, mean, sd, half, mean - half, mean + half, confidence)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of k successes in n trials: inside [0, 1], not degenerate at 0/n or n/n (the normal
    approximation's p +- z sqrt(p(1-p)/n) is [0, 0] at 0 of 32, as if a 0% accuracy were certain). None for n = 0."""
    _check_confidence(confidence)
    if not (isinstance(n, int) and isinstance(successes, int) and 0 <= successes <= n):
        raise ValueError(f"successes={successes!r} of n={n!r} is invalid; allowed: integers with 0 <= successes <= n")
    if n == 0:
        return None
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    p, z2 = successes / n, z * z
    centre, half = p + z2 / (2 * n), z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z2 / n)), min(1.0, (centre + half) / (1 + z2 / n))


def welch_dof(var_a: float, n_a: int, var_b: float, n_b: int) -> float | None:
    """Welch-Satterthwaite degrees of freedom; None when both variances are 0 (the formula is 0/0)."""
    if n_a < 2 or n_b < 2:
        raise ValueError(f"welch_dof needs n >= 2 in both samples, got n_a={n_a}, n_b={n_b}")
    va, vb = var_a / n_a, var_b / n_b
    if math.isinf(va) or math.isinf(vb):  # a variance past float range: Welch's conservative bound
        return float(min(n_a, n_b) - 1)
    top = max(va, vb)  # the dof is scale-free: dividing by the larger keeps the squares in range
    if top == 0.0:
        return None
    va, vb = va / top, vb / top
    return (va + vb) * (va + vb) / (va * va / (n_a - 1) + vb * vb / (n_b - 1))


def welch_diff_ci(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> DiffCI:
    """mean(a) - mean(b) with Welch's interval (unequal variances, unequal sizes).

    Needs >= 2 values on each side for an interval (with one value there is no variance to estimate); the
    difference itself needs >= 1 on each side. When both samples have zero variance the interval collapses to the
    point `diff` (half-width 0, dof None): the data show no spread at all, so no width can be estimated.
    """
    _check_confidence(confidence)
    xa, xb = _checked(a, "a"), _checked(b, "b")
    n_a, n_b = len(xa), len(xb)
    if n_a == 0 or n_b == 0:
        return DiffCI(n_a, n_b, None, None, None, None, None, None, confidence)
    diff = _mean(xa) - _mean(xb)
    if n_a < 2 or n_b < 2:
        return DiffCI(n_a, n_b, diff, None, None, None, None, None, confidence)
    var_a, var_b = sample_variance(xa), sample_variance(xb)
    se = math.sqrt(var_a / n_a + var_b / n_b)
    dof = welch_dof(var_a, n_a, var_b, n_b)
    half = 0.0 if dof is None else t_quantile(1.0 - (1.0 - confidence) / 2.0, dof) * se
    return DiffCI(n_a, n_b, diff, se, dof, half, diff - half, diff + half, confidence)
