"""Model output is untrusted input: extraction and verification never crash, never run model text, return within
the time bound, and agree with the reference answer on well-formed answers (property tests with hypothesis)."""

import inspect
import json
import math
import re
import time
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hicra.tasks import LocalFileTask, ReasoningGymTask
from hicra.tasks.answers import extract_boxed, extract_last_number
from hicra.tasks.bounded import VerifierUnavailable
from hicra.tasks.math_equivalence import match_in_worker, numeric_verdict
from hicra.tasks.reasoning_gym_verifiers import (
    DATA_ONLY_MODULES,
    EVAL_MODULES,
    IN_PROCESS_DATASETS,
    OWN_PARSER_MODULES,
    PARSE_EXPR_MODULES,
    SYMPY_ATTRIBUTE_MODULES,
    UnsafeExpression,
    check_expression,
)

# verify_timeout_s of the tasks fed junk (3 s in production): keeps the many timeouts cheap. Tests that expect a
# correct answer to score 1.0 keep the production bound, so that a loaded machine cannot turn them into timeouts.
BOUND_S = 0.5
SLACK_S = 1.5  # kill + respawn + reply take ~0.05 s; the rest is headroom for a loaded 2-core machine
# No example database: it would write .hypothesis/ into the repository.
PROPERTY = settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
FAST_PROPERTY = settings(PROPERTY, max_examples=100)

FULLWIDTH = {c: chr(ord(c) + 0xFEE0) for c in "0123456789abcdefghijklmnopqrstuvwxyz+-*/(){}"}
# Pieces of LaTeX, Python and lookalikes (fullwidth digits, U+2212 minus, Cyrillic а е о р с х) to build junk from.
TOKENS = ["\\boxed{", "\\fbox{", "\\boxed", "{", "}", "\\{", "\\}", "\\frac{", "\\sqrt{", "^", "_", "**", "*", "/",
          "+", "-", "−", "–", "(", ")", "[", "]", ",", ".", " ", "\n", "$", "\\", "0", "1", "9", "42", "１", "２",
          "４", "х", "а", "е", "о", "x", "e", "pi", "\\infty", "\\pi", "\\left(", "\\right)", "=", "'", '"',
          "__import__", "eval", "ｅｖａｌ", "os", "system", "lambda", ":", "%", "!", "\\text{", "\u200b", "\ufeff"]
junk = st.one_of(st.text(max_size=80), st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
plain_prefix = st.text(max_size=60).filter(lambda t: "\\boxed" not in t and "\\fbox" not in t)


def write_task(tmp_path_factory, gold: str) -> LocalFileTask:
    path = tmp_path_factory.mktemp("data") / "d.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": gold}) + "\n")
    return LocalFileTask(str(path), val_size=0)


@pytest.fixture(scope="module")
def math_task(tmp_path_factory):
    task = write_task(tmp_path_factory, "\\frac{3}{4}")
    task.verify_timeout_s = BOUND_S
    task.score("\\boxed{0.75}", task.train_examples()[0])  # worker start-up: once, outside every bound
    return task


@pytest.fixture(scope="module")
def countdown():
    task = ReasoningGymTask("countdown", train_size=4, val_size=1, min_numbers=3, max_numbers=4)
    task.verify_timeout_s = BOUND_S
    task.score("\\boxed{1}", task.train_examples()[0])
    return task


@pytest.fixture(scope="module")
def chain_sum():
    task = ReasoningGymTask("chain_sum", train_size=200, val_size=8, seed=5)
    task.verify_timeout_s = BOUND_S
    return task


def timed_score(task, completion, example):
    start = time.perf_counter()
    reward = task.score(completion, example)
    elapsed = time.perf_counter() - start
    assert isinstance(reward, float) and 0.0 <= reward <= 1.0
    assert elapsed < task.verify_timeout_s + SLACK_S, f"{elapsed:.2f} s on {completion[:80]!r}"
    return reward


# --- extraction --------------------------------------------------------------------------------------------------


@FAST_PROPERTY
@given(text=junk)
def test_extractors_never_crash(text):
    for extract in (extract_boxed, extract_last_number):
        result = extract(text)
        assert result is None or (isinstance(result, str) and len(result) <= len(text))


@FAST_PROPERTY
@given(prefix=plain_prefix, answer=st.one_of(st.integers().map(str), st.from_regex(r"\\frac\{[1-9]\}\{[1-9]\}",
                                                                                     fullmatch=True)),
       suffix=st.sampled_from(["", ".", "$.", " \n"]))
def test_the_last_box_is_the_answer(prefix, answer, suffix):
    assert extract_boxed(f"{prefix} \\boxed{{{answer}}}{suffix}") == answer
    assert extract_boxed(f"\\boxed{{0}} {prefix} \\boxed{{{answer}}}") == answer


@FAST_PROPERTY
@given(prefix=st.text(max_size=60).filter(lambda t: not re.search(r"[0-9]", t)), number=st.integers())
def test_the_last_number_is_read(prefix, number):
    assert extract_last_number(f"{prefix} so it is {number:,}.") == str(number)


@pytest.mark.parametrize("text", ["１２", "٤٢", "x²", "Ⅻ"])
def test_lookalike_digits_are_not_numbers(text):
    assert extract_last_number(f"the answer is {text}") is None


# --- verification: never crashes, stays within the bound --------------------------------------------------------


@PROPERTY
@given(text=junk, boxed=st.booleans())
def test_math_verify_scoring_never_crashes_and_is_bounded(math_task, text, boxed):
    timed_score(math_task, f"\\boxed{{{text}}}" if boxed else text, math_task.train_examples()[0])


@PROPERTY
@given(text=junk)
def test_countdown_scoring_never_crashes_and_is_bounded(countdown, text):
    timed_score(countdown, f"\\boxed{{{text}}}", countdown.train_examples()[0])


@FAST_PROPERTY
@given(text=junk)
def test_chain_sum_scoring_never_crashes_and_is_bounded(chain_sum, text):
    timed_score(chain_sum, f"\\boxed{{{text}}}", chain_sum.train_examples()[0])


# --- verification: agrees with the reference on well-formed answers ---------------------------------------------


@PROPERTY
@given(prefix=plain_prefix, value=st.integers(-10**12, 10**12), commas=st.booleans(), offset=st.integers(1, 1000))
def test_integer_answers_match_exactly(tmp_path_factory, prefix, value, commas, offset):
    task = write_task(tmp_path_factory, str(value))
    example = task.train_examples()[0]
    shown = f"{value:,}" if commas else str(value)
    assert task.score(f"{prefix}\n\\boxed{{{shown}}}", example) == 1.0
    assert task.score(f"{prefix}\n\\boxed{{{value + offset}}}", example) == 0.0


@settings(PROPERTY, max_examples=15)
@given(numerator=st.integers(-50, 50), denominator=st.integers(1, 40), prefix=plain_prefix)
def test_fraction_answers_match_their_equivalents(tmp_path_factory, numerator, denominator, prefix):
    value = Fraction(numerator, denominator)
    assume(value.denominator > 1)
    task = write_task(tmp_path_factory, f"\\frac{{{value.numerator}}}{{{value.denominator}}}")
    example = task.train_examples()[0]
    assert timed_score(task, f"{prefix} \\boxed{{{value.numerator}/{value.denominator}}}", example) == 1.0
    assert timed_score(task, f"\\boxed{{\\frac{{{2 * value.numerator}}}{{{2 * value.denominator}}}}}", example) == 1.0
    assert timed_score(task, f"\\boxed{{{value.numerator + value.denominator}/{value.denominator}}}", example) == 0.0


@settings(PROPERTY, max_examples=60)
@given(gold=st.decimals(-10**6, 10**6, places=3, allow_nan=False, allow_infinity=False),
       other=st.decimals(-10**6, 10**6, places=3, allow_nan=False, allow_infinity=False),
       same=st.booleans(), gold_commas=st.booleans(), pred_commas=st.booleans())
def test_the_numeric_fast_path_agrees_with_math_verify(gold, other, same, gold_commas, pred_commas):
    def shown(value: Decimal, commas: bool) -> str:
        text = f"{value:,f}" if commas else f"{value:f}"
        return text.removesuffix(".000")

    prediction = gold if same else other
    gold_text, prediction_text = shown(gold, gold_commas), shown(prediction, pred_commas)
    verdict = numeric_verdict(gold_text, prediction_text)
    if verdict is not None:  # math-verify in-process here: plain numbers are fast
        assert verdict == match_in_worker(gold_text, prediction_text), (gold_text, prediction_text)


@PROPERTY
@given(prefix=plain_prefix, index=st.integers(0, 199), offset=st.integers(1, 10**6))
def test_chain_sum_agrees_with_the_reference(chain_sum, prefix, index, offset):
    examples = chain_sum.train_examples()
    example = examples[index % len(examples)]
    assert chain_sum.score(f"{prefix}\n\\boxed{{{example.answer}}}", example) == 1.0
    assert chain_sum.score(f"{prefix}\n\\boxed{{{int(example.answer) + offset}}}", example) < 1.0


# --- explicit adversarial completions ------------------------------------------------------------------------------

PAYLOAD = "__import__('os').system('touch {marker}')"
ADVERSARIAL = [
    "\\boxed{" * 100_000,
    "x" * 1_000_000,
    "\\boxed{" + "9" * 1_000_000 + "}",
    "\\boxed{9^{9^{9^{9}}}}",
    "\\boxed{10**10**10}",
    "\\boxed{9**9**9**9}",
    "\\boxed{10^{10^{10}}}",
    "\\boxed{(10^{10})!}",
    "\\boxed{\\frac{1}{0}}",
    "\\boxed{" + "\\sqrt{" * 60 + "2" + "}" * 60 + "}",
    "\\boxed{" + "\\sqrt{" * 20_000 + "2" + "}" * 20_000 + "}",
    "\\boxed{" + "{" * 250 + "1" + "}" * 250 + "}",
    "\\boxed{" + "(" * 240 + "1" + ")" * 240 + "}",
    "\\boxed{４２}",
    "\\boxed{−42}",
    "\\boxed{х+1}",
    "\\boxed{" + PAYLOAD + "}",
    "\\boxed{" + "".join(FULLWIDTH.get(c, c) for c in "eval") + '("' + PAYLOAD + '")}',
    "\\boxed{eval(\"" + PAYLOAD + "\")}",
    "\\boxed{[" + PAYLOAD + "]}",
]


@pytest.mark.parametrize("completion", ADVERSARIAL, ids=lambda c: repr(c[:30]) + f"..({len(c)})")
@pytest.mark.parametrize("task_name", ["math_task", "countdown", "chain_sum"])
def test_adversarial_completion(request, task_name, completion, tmp_path):
    task = request.getfixturevalue(task_name)
    marker = tmp_path / "pwned"
    timed_score(task, completion.replace("{marker}", str(marker)), task.train_examples()[0])
    assert not marker.exists()


def test_timeouts_are_counted_and_score_zero(math_task, countdown):
    math_task.verifier_faults.read()
    countdown.verifier_faults.read()
    assert timed_score(math_task, "\\boxed{9^{9^{9^{9}}}}", math_task.train_examples()[0]) == 0.0
    assert math_task.verifier_faults.read() == {"reward_timeouts": 1, "reward_errors": 0}
    assert timed_score(countdown, "\\boxed{10**10**10}", countdown.train_examples()[0]) == 0.0
    assert countdown.verifier_faults.read() == {"reward_timeouts": 1, "reward_errors": 0}
    # ... and the worker is fresh again for the next completion
    assert timed_score(math_task, "\\boxed{0.75}", math_task.train_examples()[0]) == 1.0


def test_over_long_answers_are_wrong_without_verification(math_task):
    example = math_task.train_examples()[0]
    start = time.perf_counter()
    assert math_task.score("\\boxed{" + "0.75" + " " * 600 + "+0}", example) == 0.0
    assert time.perf_counter() - start < 0.1
    assert math_task.verifier_faults.read() == {"reward_timeouts": 0, "reward_errors": 0}


@pytest.mark.parametrize("dataset", ["countdown", "puzzle24", "polynomial_multiplication", "simple_integration",
                                     "intermediate_integration", "binary_matrix", "spiral_matrix",
                                     "string_insertion", "n_queens"])
def test_guarded_verifiers_still_accept_their_reference(dataset, tmp_path):
    task = ReasoningGymTask(dataset, train_size=2, val_size=1)
    marker = tmp_path / "pwned"
    for example in task.train_examples():
        assert task.score(f"\\boxed{{{example.answer}}}", example) == 1.0
        task.score("\\boxed{" + PAYLOAD.format(marker=marker) + "}", example)
        task.score("\\boxed{[" + PAYLOAD.format(marker=marker) + "]}", example)
    assert not marker.exists()
    assert task.verifier_faults.read()["reward_timeouts"] == 0


@pytest.mark.parametrize("text", ["__import__('os')", "ｅｖａｌ(1)", "x.real", "(1).__class__", "lambda: 1", "'a'",
                                  "x[0]", "open(1)", "S(1)", "N(x)", "1if 1else 2", "a;b", "x" * 3000])
def test_expression_guard_refuses_code(text):
    with pytest.raises(UnsafeExpression):
        check_expression(text)


@pytest.mark.parametrize("text", ["94*4 - 61 - 6", "10*(8 - 5) - 6", "-896*x**5 + 3584*x**4", "-34*x**8/15 + C",
                                  "-4*(-2*x - 8)**(3/2)/3 + C", "sqrt(x) + exp(2*x) + log(x1)", "2^3", "1.5e3"])
def test_expression_guard_lets_maths_through(text):
    check_expression(text)


def test_every_reasoning_gym_verifier_that_evaluates_text_is_audited():
    """Tripwire for reasoning-gym upgrades: a verifier module calling eval/exec/parse_expr/sympify must be listed
    (guarded or reviewed) in hicra.tasks.reasoning_gym_verifiers, and the in-process ones must call none."""
    from reasoning_gym.factory import DATASETS

    evaluating = re.compile(r"\beval\(|\bexec\(|parse_expr|sympify|literal_eval")
    audited = set(PARSE_EXPR_MODULES + EVAL_MODULES + SYMPY_ATTRIBUTE_MODULES + DATA_ONLY_MODULES + OWN_PARSER_MODULES)
    for name, (dataset_cls, _config, *_rest) in DATASETS.items():
        source = inspect.getsource(inspect.getmodule(dataset_cls))
        if evaluating.search(source):
            assert dataset_cls.__module__ in audited, f"{name}: {dataset_cls.__module__} evaluates text; audit it"
        if name in IN_PROCESS_DATASETS:
            assert not evaluating.search(inspect.getsource(dataset_cls.score_answer)), name


def test_nan_rewards_are_errors(math_task, monkeypatch):
    example = math_task.train_examples()[0]
    math_task.verifier_faults.read()
    monkeypatch.setattr(type(math_task), "score_answer", lambda self, prediction, ex: math.nan)
    assert math_task.score("\\boxed{1}", example) == 0.0
    monkeypatch.setattr(type(math_task), "score_answer", lambda self, prediction, ex: 1 / 0)
    assert math_task.score("\\boxed{1}", example) == 0.0
    assert math_task.verifier_faults.read() == {"reward_timeouts": 0, "reward_errors": 2}


def test_a_worker_that_cannot_start_is_not_swallowed(math_task, monkeypatch):
    def unavailable(self, prediction, example):
        raise VerifierUnavailable("cannot start the verifier worker")

    monkeypatch.setattr(type(math_task), "score_answer", unavailable)
    with pytest.raises(VerifierUnavailable):
        math_task.score("\\boxed{1}", math_task.train_examples()[0])
