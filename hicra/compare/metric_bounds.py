"""What a metric's values can be, and below how many runs a spread is shown as a range: shared by the figures and the
tables, so that both clip and switch alike."""

from __future__ import annotations

FRACTIONS = ("accuracy", "frac", "pass_at")
NON_NEGATIVE = ("entropy", "length", "ppl", "perplexity")
MIN_CI_RUNS = 3  # below this a group's spread is its runs' range, not a t-interval (1 dof: 12.7 standard errors)


def bounds(key: str) -> tuple[float | None, float | None]:
    """What a metric's value can be: fractions in [0, 1], entropies/lengths/perplexities >= 0, else unbounded."""
    name = key.rsplit("/", 1)[-1]
    if any(word in name for word in FRACTIONS):
        return 0.0, 1.0
    if any(word in name for word in NON_NEGATIVE):
        return 0.0, None
    return None, None
