"""Reward integrity: a constant answer earns nothing on the default task beyond the questions it happens to answer
right, no task pays partial credit, and every task reads the same digits (ASCII 0-9 only)."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal, InvalidOperation

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from support import composer

from hicra.tasks import LocalFileTask, ReasoningGymTask


@pytest.fixture(scope="module")
def default_task():
    """The task `hicra-train` trains on by default (conf/task/chain_sum.yaml), with its real questions."""
    cfg = composer("train")()
    GlobalHydra.instance().clear()
    return instantiate(cfg.task)


def value(text: str) -> Decimal | None:
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def test_no_constant_answer_earns_reward_where_it_is_wrong(default_task):
    examples = default_task.train_examples() + default_task.val_examples()
    assert all(default_task.score(f"So the result is \\boxed{{{ex.answer}}}.", ex) == 1.0 for ex in examples)
    golds = Counter(ex.answer for ex in examples)
    most_common = golds.most_common(1)[0][0]
    many_answers = " ".join(sorted(golds, key=int))[:500]  # gold answers side by side, within the answer length cap
    constants = ["0123456789", "999", "0", most_common, "0.0", "-0", "1", "-1", "10", "99", "100", "9876543210",
                 "-0123456789", "1 2 3 4 5 6 7 8 9", many_answers]
    rewards = {c: [default_task.score(f"\\boxed{{{c}}}", ex) for ex in examples] for c in constants}
    right = {c: [value(c) is not None and value(c) == Decimal(ex.answer) for ex in examples] for c in constants}
    earned_where_wrong = {c: sum(r for r, ok in zip(rewards[c], right[c]) if not ok) for c in constants}
    assert max(earned_where_wrong.values()) == 0.0, earned_where_wrong
    for constant in constants:  # a constant earns 1 exactly where it is the answer: its share of the questions
        assert rewards[constant] == [float(ok) for ok in right[constant]], constant
    # chain_sum's own verifier paid these a mean 0.031 and 0.0075 over the training questions (substring credit)
    assert sum(rewards["0123456789"]) == sum(rewards["999"]) == sum(rewards[many_answers]) == 0.0
    assert sum(rewards[most_common]) == golds[most_common]


@pytest.mark.parametrize(("dataset", "difficulty", "partly_right"), [
    ("chain_sum", {"min_terms": 2, "max_terms": 2, "max_digits": 1}, "{answer} 0123456789"),  # substring credit
    ("gsm_symbolic", {}, "123456789 {answer}"),  # 0.01 for a wrong first number
    ("basic_arithmetic", {"min_terms": 2, "max_terms": 2, "operators": ["+"]}, "{answer} 0123456789"),  # substring
])
def test_partial_credit_is_not_paid(dataset, difficulty, partly_right):
    task = ReasoningGymTask(dataset, train_size=8, val_size=2, **difficulty)
    for example in task.train_examples():
        answer = partly_right.format(answer=example.answer)
        assert 0.0 < task.score_answer(answer, example) < 1.0  # the dataset's own verdict: partial credit
        assert task.score(f"\\boxed{{{answer}}}", example) == 0.0
        assert task.score(f"\\boxed{{{example.answer}}}", example) == 1.0


# --- digits: one rule in every task ---

SPELLINGS = {"Arabic-Indic": "٠١٢٣٤٥٦٧٨٩", "fullwidth": "０１２３４５６７８９", "Devanagari": "०१२३४५६७८९"}


@pytest.fixture(scope="module")
def digit_tasks(tmp_path_factory):
    """One task per verifier path: reasoning-gym in-process (Decimal, float on `\\d`, string equality) and
    math-verify (a local file)."""
    path = tmp_path_factory.mktemp("digits") / "d.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{n}", "answer": str(n)}) + "\n" for n in (42, 907, 1234)))
    return {"chain_sum": ReasoningGymTask("chain_sum", train_size=8, val_size=0),
            "gsm_symbolic": ReasoningGymTask("gsm_symbolic", train_size=4, val_size=0),
            "basic_arithmetic": ReasoningGymTask("basic_arithmetic", train_size=8, val_size=0, operators=["+"]),
            "local_file": LocalFileTask(str(path), val_size=0)}


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("task_name", ["chain_sum", "gsm_symbolic", "basic_arithmetic", "local_file"])
def test_only_ascii_digits_are_read_in_every_task(digit_tasks, task_name, spelling):
    task = digit_tasks[task_name]
    for example in task.train_examples():
        other = example.answer.translate(str.maketrans("0123456789", SPELLINGS[spelling]))
        mixed = example.answer[:-1] + other[-1]  # one foreign digit is enough
        assert task.score(f"\\boxed{{{example.answer}}}", example) == 1.0
        assert task.score(f"\\boxed{{{other}}}", example) == 0.0
        assert task.score(f"\\boxed{{{mixed}}}", example) == 0.0
