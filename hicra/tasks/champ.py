"""CHAMP (Mao et al. 2024): 270 competition problems with human answers, from the `champ-dataset` package.

Evaluation only: there is no training split. Answers are free text written for people ("C(10, 5), or equivalently
252", "0 is the only possible value", "Yes", "x=6, y=5"), so each problem is kept only when its answer reduces to
one mathematical value that math-verify can compare with a boxed model answer:

    raw answer                                            reference(s)
    239 / @@2^(n-1)@@                                     239 / 2^(n-1)
    @@C(10, 5)@@, or equivalently @@252@@                 \\binom{10}{5} | 252       (either one matches)
    @@5/14@@, or approximately 35.7%                      5/14
    100 (i.e., all values)                                100
    -3 is the only possible value / 98 values / @@n@@ times     -3 / 98 / n
    The limit exists and is equal to @@2/3@@              2/3

Skipped (counted in `skipped`): yes/no and other prose answers, several values ("376 and 625", "x=6, y=5"),
relations and inequalities ("x(n)<y(n-1) for all n>=3", "At least 1 number"), and anything math-verify cannot
parse ("2^floor(n/2)*floor(n/2)!"). `@@...@@` marks the maths inside CHAMP's raw answers.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from math_verify import parse

from hicra.errors import ConfigError
from hicra.tasks.base import DEFAULT_INSTRUCTION, Example, Task
from hicra.tasks.math_equivalence import answers_match

_ALTERNATIVES = re.compile(r", or equivalently |, or an equivalent form such as ")
_GLOSS = re.compile(r"\s*\(i\.e\.,.*\)$|, or approximately .*$")  # "(i.e., all values)", ", or approximately 35.7%"
_LEAD_INS = ("The limit exists and is equal to ", "The only possible value for the limit is ")
_TRAILERS = (" is the only possible value", " values", " pairs", " inequalities", " roots", " times")
_ONE_VALUE = re.compile(r"@@(?P<expr>[^@]+)@@|(?P<number>-?\d+(?:/\d+)?)")
_NOT_A_VALUE = re.compile(r"[=<>≥≤±]|\.\.\.|sum_|\band\b|\bor\b")  # relations, sets, sums, several values
_BINOM = re.compile(r"\bC\((?P<n>[^(),]+),\s*(?P<k>[^(),]+)\)")


def champ_file(needed_by: str = "benchmark=champ") -> Path:
    """`champ_dataset/dataset_files/v0.json`, located without importing the package."""
    spec = importlib.util.find_spec("champ_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{needed_by} needs the champ-dataset package: pip install champ-dataset")
    path = Path(next(iter(spec.submodule_search_locations))) / "dataset_files" / "v0.json"
    if not path.is_file():
        raise ConfigError(f"champ-dataset file not found: {path}; reinstall champ-dataset")
    return path


def reference_answers(raw_answer: str) -> list[str]:
    """The checkable reference values of one CHAMP raw answer (any of them is correct); [] = not checkable."""
    text = _GLOSS.sub("", raw_answer.strip())
    references = []
    for alternative in _ALTERNATIVES.split(text):
        for lead_in in _LEAD_INS:
            alternative = alternative.removeprefix(lead_in)
        for trailer in _TRAILERS:
            alternative = alternative.removesuffix(trailer)
        match = _ONE_VALUE.fullmatch(alternative.strip())
        if match is None:
            continue
        value = (match.group("expr") or match.group("number")).strip()
        if _NOT_A_VALUE.search(value):
            continue
        value = _BINOM.sub(r"\\binom{\g<n>}{\g<k>}", value)  # CHAMP writes binomials as C(n, k)
        if any(not isinstance(parsed, str) for parsed in parse("\\boxed{" + value + "}")):  # math-verify read a value
            references.append(value)
    return references


class ChampTask(Task):
    """CHAMP's problems with a checkable answer, in file order; scored by math-verify against any reference."""

    name = "champ"

    def __init__(self, instruction: str = DEFAULT_INSTRUCTION, last_number_fallback: bool = False) -> None:
        self.instruction = instruction
        self.last_number_fallback = last_number_fallback
        self.skipped: list[str] = []  # identifiers of problems without a checkable answer
        self._examples: list[Example] | None = None

    def train_examples(self) -> list[Example]:
        raise ConfigError("CHAMP is an evaluation benchmark: it has no training split (use it with hicra-eval)")

    def val_examples(self) -> list[Example]:
        if self._examples is None:
            problems = json.loads(champ_file().read_text(encoding="utf-8"))["problems"]
            self._examples, self.skipped = [], []
            for identifier, problem in problems.items():
                references = reference_answers(problem["_raw_answer"])
                if not references:
                    self.skipped.append(identifier)
                    continue
                self._examples.append(Example(question=problem["_text"], answer=references[0],
                                              meta={"id": identifier, "references": references,
                                                    "category": problem.get("category"),
                                                    "raw_answer": problem["_raw_answer"]}))
        return self._examples

    def score_answer(self, prediction: str, example: Example) -> float:
        references = example.meta.get("references") or [example.answer]
        return 1.0 if any(answers_match(ref, prediction) for ref in references) else 0.0
