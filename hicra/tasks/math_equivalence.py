"""Mathematical equivalence of two final answers with HF math-verify, bounded in time and memory.

Examples: ``0.5`` == ``\\frac{1}{2}``, ``1,000`` == ``1000``, ``\\$18`` == ``18``.

Both answers are wrapped in ``\\boxed{}`` before parsing: that is math-verify's highest-priority extraction, so
the whole string is read as one expression, and unlike ``$...$`` it survives answers containing a dollar sign.

math-verify never evaluates model text as code (see `hicra.tasks.reasoning_gym_verifiers` for the audit), but sympy
will happily spend minutes or gigabytes on ``9^{9^{9^{9}}}`` or ``(10^{10})!``, and its SIGALRM timeout neither
works off the main thread nor stops C-level work. So parse + verify run in the bounded worker
(`hicra.tasks.bounded`), with math-verify's own timeouts off. Plain numbers on both sides (the common case: GSM8K
integers) are decided here without the round trip.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import lru_cache

from hicra.tasks.bounded import run_bounded

# An ASCII decimal number, optionally signed, with optional well-formed thousands commas ("1,234,567.5").
# Lookalikes (U+2212 minus, ...) are left to math-verify; non-ASCII digits never get here (`Task.score` gives 0).
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[1-9][0-9]{0,2}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?")


def answers_match(gold: str, prediction: str) -> bool:
    """True when `prediction` is mathematically equivalent to `gold`; an unparsable answer is a mismatch.

    Raises `hicra.tasks.bounded.VerifierTimeout` past the current time limit (`Task.score` scores that 0 and counts
    it) and `VerifierError` if math-verify itself fails.
    """
    verdict = numeric_verdict(gold, prediction)
    if verdict is not None:
        return verdict
    return bool(run_bounded(match_in_worker, gold, prediction))


def numeric_verdict(gold: str, prediction: str) -> bool | None:
    """math-verify's verdict when both answers are plain numbers and it is certain, else None.

    Equal values always match. Unequal *integers* never do; unequal decimals go to math-verify, which rounds to
    6 places (0.1234567 == 0.1234568 there).
    """
    gold, prediction = gold.strip(), prediction.strip()
    if not (_PLAIN_NUMBER.fullmatch(gold) and _PLAIN_NUMBER.fullmatch(prediction)):
        return None
    if Decimal(gold.replace(",", "")) == Decimal(prediction.replace(",", "")):
        return True
    return False if "." not in gold + prediction else None


# --- worker side -------------------------------------------------------------------------------------------------


@lru_cache(maxsize=8192)
def _parse_gold(gold: str) -> tuple:
    # References repeat every epoch and for every sample of a group: parse each once per worker process.
    from math_verify import parse

    return tuple(parse("\\boxed{" + gold + "}", parsing_timeout=None))


def match_in_worker(gold: str, prediction: str) -> bool:
    """math-verify's equivalence, with no time bound of its own: runs in the bounded worker only."""
    from math_verify import parse, verify

    gold_parsed = list(_parse_gold(gold))
    predicted = parse("\\boxed{" + prediction + "}", parsing_timeout=None)
    if not gold_parsed or not predicted:
        return False
    return bool(verify(gold_parsed, predicted, timeout_seconds=None))


def warm_up_worker() -> None:
    """Run by the worker's supervisor before it forks executors: math-verify builds its regexes and ANTLR parser
    on first use (about a second), which must not count against the first completion's bound."""
    match_in_worker("\\frac{1}{2}", "0.5")
