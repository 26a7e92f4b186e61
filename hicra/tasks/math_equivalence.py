"""Mathematical equivalence of two final answers with HF math-verify.

Examples: ``0.5`` == ``\\frac{1}{2}``, ``1,000`` == ``1000``, ``\\$18`` == ``18``.

Both answers are wrapped in ``\\boxed{}`` before parsing: that is math-verify's highest-priority extraction, so
the whole string is read as one expression, and unlike ``$...$`` it survives answers containing a dollar sign.
"""

from __future__ import annotations

import threading
from functools import lru_cache

from math_verify import parse, verify

# math-verify bounds parsing/verification time with SIGALRM, which only the main thread may install.
_TIMEOUT_S = 5


def _timeout() -> int | None:
    return _TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=8192)
def _parse_gold(gold: str) -> tuple:
    # References repeat every epoch and for every sample of a group: parse each once.
    return tuple(parse("\\boxed{" + gold + "}", parsing_timeout=_timeout()))


def answers_match(gold: str, prediction: str) -> bool:
    """True when `prediction` is mathematically equivalent to `gold`; any parser failure counts as a mismatch."""
    try:
        gold_parsed = list(_parse_gold(gold))
        predicted = parse("\\boxed{" + prediction + "}", parsing_timeout=_timeout())
        if not gold_parsed or not predicted:
            return False
        return bool(verify(gold_parsed, predicted, timeout_seconds=_timeout()))
    except Exception:  # sympy can raise almost anything on malformed model output
        return False
