"""Which reasoning-gym verifiers may see model text where, and the guards for those that evaluate it.

Audit (reasoning-gym 0.1.25, sympy 1.14, math-verify 0.9.0, latex2sympy2_extended 1.11; every ``score_answer`` and
the helpers it calls, grepped for eval/exec/sympify/parse_expr/literal_eval and read):

* Evaluate model text as Python code:
  - ``countdown``, ``puzzle24``: ``sympy.parsing.sympy_parser.parse_expr(answer)``. parse_expr *evals* the
    tokenised string with every builtin function in scope: ``\\boxed{__import__('os').system('...')}`` runs the
    command (verified), and so does ``ｅｖａｌ("...")`` in fullwidth letters, which Python's compiler folds to
    ASCII names (NFKC; verified).
  - ``polynomial_multiplication``, ``simple_integration``, ``intermediate_integration``: ``sympy.parse_expr``.
  - ``binary_matrix``, ``spiral_matrix``, ``string_insertion``, ``n_queens``: plain ``eval(answer)``.
* Evaluate only their own data, never model text: ``number_sorting`` (``eval(entry["answer"])``; the model's list
  goes through ``json.loads``), ``bitwise_arithmetic`` (``eval(problem)``; the answer through ``int(s, 0)``),
  ``basic_arithmetic`` (``eval`` when generating questions), ``codeio`` (``exec`` of its bundled programs when
  generating; the answer through ``json.loads``).
* ``propositional_logic`` has a ``parse_expr`` of its own: a recursive-descent parser that evaluates nothing
  (quadratic in the answer's length, so it runs in the worker like every other dataset).
* The datasets we configure otherwise: ``chain_sum`` (``Decimal(answer)`` and a substring test), ``basic_arithmetic``
  and the default verifier (string equality and substring), ``gsm_symbolic`` (one non-backtracking regex and
  ``float``) evaluate nothing and are linear in the answer's length, which `Task.score` caps: they run in the
  trainer process (`IN_PROCESS_DATASETS`), no worker round trip.
* math-verify (`hicra.tasks.math_equivalence`): LaTeX goes through latex2sympy's ANTLR parser (no eval); its
  plain-expression path calls ``parse_expr`` only on text its regex limited to digits, ``.``, blanks and
  ``+-*/^()×÷`` (no names, so nothing to call; checked: boxed ``__import__`` payloads come back as strings). It
  is unbounded in time and memory, though (``9^{9^{9^{9}}}``, ``(10^{10})!``, 200 nested braces) -> bounded worker.

Every dataset not in `IN_PROCESS_DATASETS` is scored in the bounded worker (`hicra.tasks.bounded`) by
`score_in_worker`, where `install_guards` has replaced, *in the worker process only*, the evaluating calls above:
``parse_expr`` by `guarded_parse_expr` (a strict whitelist before sympy sees the text) and ``eval`` by
`literal_only_eval` (``ast.literal_eval``: the same result for the list literals those verifiers expect, an error for
anything else). The verifiers' own logic (exact match first, partial credit in their ``except`` branch) is untouched.
`tests/tasks/test_untrusted_output.py` fails if a reasoning-gym upgrade adds an evaluating verifier not listed here.
"""

from __future__ import annotations

import ast
import importlib
import re

# Audited above: no eval, linear time in the (capped) answer length.
IN_PROCESS_DATASETS = frozenset({"chain_sum", "basic_arithmetic", "gsm_symbolic"})
# Modules whose verifier calls the module-level name `parse_expr` / `eval` on model text.
PARSE_EXPR_MODULES = ("reasoning_gym.games.countdown", "reasoning_gym.games.puzzle24")
EVAL_MODULES = ("reasoning_gym.algorithmic.binary_matrix", "reasoning_gym.algorithmic.spiral_matrix",
                "reasoning_gym.algorithmic.string_insertion", "reasoning_gym.games.n_queens")
# Modules whose verifier calls `sympy.parse_expr` (attribute lookup at call time) on model text.
SYMPY_ATTRIBUTE_MODULES = ("reasoning_gym.algebra.polynomial_multiplication",
                           "reasoning_gym.algebra.simple_integration",
                           "reasoning_gym.algebra.intermediate_integration")
# Reviewed: these call eval/exec/parse_expr on their own data only (reference, question, bundled code).
DATA_ONLY_MODULES = ("reasoning_gym.algorithmic.number_sorting", "reasoning_gym.arithmetic.bitwise_arithmetic",
                     "reasoning_gym.arithmetic.basic_arithmetic", "reasoning_gym.code.codeio")
# Reviewed: a function of their own is called parse_expr; it evaluates nothing.
OWN_PARSER_MODULES = ("reasoning_gym.logic.propositional_logic",)

# --- the guards --------------------------------------------------------------------------------------------------

# ASCII only: Python folds fullwidth and other compatibility characters to ASCII identifiers (`ｅｖａｌ` is `eval`).
# No quotes, brackets, underscores, `=`, `:`, `@`, `;`, `!`, `%`: no strings, subscripts, dunders or statements.
_SAFE_EXPR = re.compile(r"[0-9A-Za-z \t\n+\-*/^().,]*")
_ATTRIBUTE = re.compile(r"\.\s*[A-Za-z]")  # `x.real`, `(1).__class__`: the only way to reach an object's insides
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_SYMBOL = re.compile(r"[A-Za-z][0-9]*")  # x, C, x1: a sympy Symbol or constant (E, I)
# sympy's one-letter helpers that convert or evaluate their argument (S = sympify, N = evalf): no maths variable in
# an audited dataset, so refused although, without strings or attributes, they could not reach code anyway.
_HELPERS = frozenset({"S", "N"})
# Function and constant names the algebra answers use; every other multi-letter name (builtins, keywords such as
# `lambda`, `sympify`) is refused.
_MATH_NAMES = frozenset({"sqrt", "exp", "log", "ln", "sin", "cos", "tan", "cot", "sec", "csc", "asin", "acos",
                         "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "pi", "oo", "Abs"})
_MAX_EXPR_CHARS = 2000


class UnsafeExpression(ValueError):
    """Text refused before an evaluating parser saw it (a ValueError, so verifiers treat it as malformed)."""


def check_expression(text: object) -> None:
    """Raise `UnsafeExpression` unless `text` is plain arithmetic/algebra that parse_expr can evaluate safely."""
    if not isinstance(text, str) or len(text) > _MAX_EXPR_CHARS:
        raise UnsafeExpression("not a short string")
    if not _SAFE_EXPR.fullmatch(text) or _ATTRIBUTE.search(text):
        raise UnsafeExpression("characters outside the arithmetic whitelist")
    for name in _NAME.findall(text):
        if name in _HELPERS or not (_SYMBOL.fullmatch(name) or name in _MATH_NAMES):
            raise UnsafeExpression(f"name {name[:20]!r} is not an allowed maths name")


def literal_only_eval(source, globals=None, locals=None):
    """`eval` for verifiers that expect a Python literal: ``ast.literal_eval`` evaluates literals only."""
    if not isinstance(source, str) or len(source) > _MAX_EXPR_CHARS:
        raise UnsafeExpression("not a short string")
    return ast.literal_eval(source)


_GUARDS: dict[str, object] = {}


def install_guards() -> None:
    """Route the evaluating calls of the audited verifiers through the guards (idempotent).

    Patches module globals, so it belongs in the verifier worker only (`warm_up_worker`), never in the trainer.
    """
    if _GUARDS:
        return
    import sympy
    from sympy.parsing.sympy_parser import parse_expr

    _GUARDS["parse_expr"] = parse_expr

    for name in PARSE_EXPR_MODULES:
        importlib.import_module(name).parse_expr = guarded_parse_expr
    for name in EVAL_MODULES:
        importlib.import_module(name).eval = literal_only_eval  # module globals shadow builtins.eval
    for name in SYMPY_ATTRIBUTE_MODULES:
        importlib.import_module(name)
    sympy.parse_expr = guarded_parse_expr  # math-verify and latex2sympy bound their own reference at import


def guarded_parse_expr(s, *args, **kwargs):
    """sympy's parse_expr after `check_expression`."""
    check_expression(s)
    return _GUARDS["parse_expr"](s, *args, **kwargs)


# --- worker entry points -----------------------------------------------------------------------------------------

_DATASETS: dict[str, object] = {}


def warm_up_worker() -> None:
    """Run by the worker's supervisor before it forks executors: import reasoning-gym and install the guards."""
    install_guards()
    guarded_parse_expr("2*(3+4)")  # sympy's parser builds its tables on first use


def score_in_worker(dataset: str, difficulty: dict, seed: int, prediction: str, entry: dict) -> float:
    """`dataset`'s own ``score_answer(prediction, entry)``; called in the bounded worker by `ReasoningGymTask`."""
    install_guards()
    key = repr((dataset, sorted(difficulty.items()), seed))
    if key not in _DATASETS:
        import reasoning_gym

        _DATASETS[key] = reasoning_gym.create_dataset(dataset, size=1, seed=seed, **difficulty)
    return float(_DATASETS[key].score_answer(prediction, entry))
