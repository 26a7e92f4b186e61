import time

import pytest

from hicra.tasks import extract_boxed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the answer is \\boxed{42}.", "42"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\sqrt{\\frac{a}{b^{2}}}} done", "\\sqrt{\\frac{a}{b^{2}}}"),
        ("first \\boxed{1}, then \\boxed{2}", "2"),
        ("\\fbox{7}", "7"),
        ("\\boxed{3} and finally \\fbox{4}", "4"),
        ("\\boxed { 5 }", "5"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("answer \\boxed{9}; put it in \\boxed please", "9"),  # a brace-less mention is not an answer
        ("no box here", None),
        ("", None),
        ("\\boxed{12", None),
        ("\\boxed{1} then cut off \\boxed{\\frac{2}{3}", None),  # the last box is unfinished
        ("\\boxed", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "x" * 1_000_000 + "\\boxed{8}",
        "\\boxed{" * 200_000,  # unbalanced everywhere
        "\\boxed " * 200_000 + "\\fbox " * 200_000,  # many brace-less mentions of both commands
        "\\boxed{" + "{" * 100_000 + "}" * 100_000 + "}",  # deep nesting
        "\\boxed" + " " * 1_000_000 + "x",
    ],
)
def test_extract_boxed_is_linear_on_pathological_text(text):
    # A quadratic scan of these ~1 MB strings would take minutes; the margin allows for a loaded CI machine.
    start = time.perf_counter()
    extract_boxed(text)
    assert time.perf_counter() - start < 2.0
