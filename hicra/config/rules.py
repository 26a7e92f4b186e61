"""What one config value may be: a type, a range or a set of options, and the words that say so in an error.

Plain Python on plain values (no OmegaConf, no torch): hicra.config.schema lists a rule per key, and
hicra.config.values applies them before anything is instantiated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    accepts: Callable[[object], bool]
    allowed: str  # completes "allowed: ...", e.g. "an integer >= 1"

    def __call__(self, value: object) -> bool:
        return self.accepts(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # YAML's true is not the integer 1


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _bounds(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"{'<' if hi_open else '<='} {hi}" if hi is not None else ""


def _within(value, lo, hi, lo_open: bool, hi_open: bool) -> bool:
    above = lo is None or (value > lo if lo_open else value >= lo)
    below = hi is None or (value < hi if hi_open else value <= hi)
    return above and below


def _or_null(rule: Rule, null: bool) -> Rule:
    return Rule(lambda v: v is None or rule(v), f"null or {rule.allowed}") if null else rule


def integer(lo: int | None = None, hi: int | None = None, *, null: bool = False, meaning: str = "") -> Rule:
    """An int (not a bool, not 2.5) in [lo, hi]; `meaning` adds what a special value does, e.g. "0 = off"."""
    words = f"an integer {_bounds(lo, hi, False, False)}".rstrip() + (f" ({meaning})" if meaning else "")
    return _or_null(Rule(lambda v: _is_int(v) and _within(v, lo, hi, False, False), words), null)


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
           null: bool = False) -> Rule:
    """A finite int or float (nan and inf are never a setting) in the range, each end open or closed."""
    words = f"a finite number {_bounds(lo, hi, lo_open, hi_open)}".rstrip()
    return _or_null(Rule(lambda v: _is_number(v) and _within(v, lo, hi, lo_open, hi_open), words), null)


def flag(*, null: bool = False) -> Rule:
    return _or_null(Rule(lambda v: isinstance(v, bool), "true or false"), null)


def one_of(*options: object, null: bool = False) -> Rule:
    """Exactly one of `options`; compared with their types, so that 16 and "16" are told apart when it matters."""
    words = "one of " + ", ".join(dict.fromkeys(map(str, options)))  # 16 and "16" read the same
    return _or_null(Rule(lambda v: any(v == o and type(v) is type(o) for o in options), words), null)


def text(*, null: bool = False) -> Rule:
    """A non-empty string: a name, a path, a URI (an empty one names nothing)."""
    return _or_null(Rule(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string"), null)


def any_text(*, null: bool = False) -> Rule:
    """Any string, empty included (a prompt, an instruction)."""
    return _or_null(Rule(lambda v: isinstance(v, str), "a string"), null)


def numbers(count: int, lo: float, hi: float, *, hi_open: bool = False) -> Rule:
    """A list of `count` finite numbers in [lo, hi] (hi open or closed), e.g. AdamW's betas."""
    item = number(lo, hi, hi_open=hi_open)
    return Rule(lambda v: isinstance(v, list) and len(v) == count and all(map(item, v)),
                f"a list of {count} numbers, each {item.allowed.removeprefix('a finite number ')}")


def integers(lo: int) -> Rule:
    """A non-empty list of ints >= lo, e.g. pass@k's ks."""
    item = integer(lo)
    return Rule(lambda v: isinstance(v, list) and len(v) > 0 and all(map(item, v)),
                f"a non-empty list of integers >= {lo}")


def names(*, single: str | None = None) -> Rule:
    """A non-empty list of non-empty strings, or the one string `single` (e.g. lora's all-linear)."""
    listed = Rule(lambda v: isinstance(v, list) and len(v) > 0 and all(map(text(), v)), "a non-empty list of names")
    if single is None:
        return listed
    return Rule(lambda v: v == single or listed(v), f"{single} or {listed.allowed}")


def mapping(value: Rule) -> Rule:
    """A mapping from names to values that each satisfy `value` (tags, per-benchmark settings)."""
    return Rule(lambda v: isinstance(v, dict) and all(isinstance(k, str) and value(x) for k, x in v.items()),
                f"a mapping of names to values that are each {value.allowed}")


def worked_examples(*, null: bool = False) -> Rule:
    """A list of {question: text, answer: text} pairs (the `demonstrations` shown before each question)."""
    def accepts(v: object) -> bool:
        return isinstance(v, list) and all(isinstance(d, dict) and set(d) == {"question", "answer"} and
                                           all(isinstance(x, str) and x.strip() for x in d.values()) for d in v)
    return _or_null(Rule(accepts, "a list of {question: <text>, answer: <text>} pairs"), null)


def node(*, null: bool = False) -> Rule:
    """A nested `{_target_: ...}` node (trainer.strategy for FSDP, a benchmark's task); its own keys are its
    target's arguments, and have rules of their own."""
    return _or_null(Rule(lambda v: isinstance(v, dict) and "_target_" in v, "a node with a _target_"), null)


def either(*rules: Rule) -> Rule:
    return Rule(lambda v: any(rule(v) for rule in rules), " or ".join(rule.allowed for rule in rules))
