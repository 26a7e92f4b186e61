"""The training reward: correctness plus an optional format term; accuracy never sees the format term."""

from __future__ import annotations

import torch

from hicra.tasks import ReasoningGymTask
from hicra.tasks.scoring import score_completions, shaped_rewards


def test_shaped_rewards_by_hand():
    correctness = torch.tensor([1.0, 0.0, 0.0, 0.5])
    in_form = torch.tensor([True, True, False, False])
    assert torch.equal(shaped_rewards(correctness, in_form, 0.25), torch.tensor([1.25, 0.25, 0.0, 0.5]))


def test_zero_format_weight_is_correctness_exactly():
    correctness = torch.rand(16, generator=torch.Generator().manual_seed(0))
    in_form = torch.rand(16, generator=torch.Generator().manual_seed(1)) > 0.5
    assert torch.equal(shaped_rewards(correctness, in_form, 0.0), correctness)


def test_score_completions_reports_answer_form_apart_from_correctness():
    task = ReasoningGymTask("chain_sum", train_size=4, val_size=1, min_terms=2, max_terms=2, min_digits=1,
                            max_digits=1)
    example = task.val_examples()[0]
    wrong = str(int(example.answer) + 1)
    texts = [f"So \\boxed{{{example.answer}}}", f"\\boxed{{{wrong}}}", example.answer, f"\\boxed{{{example.answer}"]
    scored = score_completions(task, texts, [example] * 4)
    assert scored.scores == [1.0, 0.0, 0.0, 0.0]  # strict: an unboxed or unclosed answer scores 0
    assert scored.in_form == [True, True, False, False]


def test_a_truncated_reply_scores_zero_and_is_not_in_form_without_reaching_the_verifier():
    class CountingTask(ReasoningGymTask):
        calls = 0

        def score_answer(self, prediction, example):
            CountingTask.calls += 1
            return super().score_answer(prediction, example)

    task = CountingTask("chain_sum", train_size=4, val_size=1, min_terms=2, max_terms=2, min_digits=1, max_digits=1)
    example = task.val_examples()[0]
    right = f"\\boxed{{{example.answer}}} and then it kept going"
    scored = score_completions(task, [right, right], [example] * 2, truncated=[True, False])
    assert scored.scores == [0.0, 1.0] and scored.in_form == [False, True]
    assert CountingTask.calls == 1  # only the finished reply was verified


def test_read_answer_says_how_the_reward_was_decided():
    task = ReasoningGymTask("chain_sum", train_size=4, val_size=1, min_terms=2, max_terms=2, min_digits=1,
                            max_digits=1)
    example = task.train_examples()[0]
    assert task.read_answer(f"so \\boxed{{{example.answer}}}", example) == (example.answer, "boxed")
    assert task.read_answer("no number here", example) == (None, "no answer")
    assert task.read_answer("\\boxed{" + "9" * 600 + "}", example)[1] == "too long"
    assert task.read_answer("\\boxed{٤٢}", example) == ("٤٢", "non-ASCII digits")
    task.last_number_fallback = True
    assert task.read_answer("it is 41, then 42", example) == ("42", "last number")
    assert task.score("\\boxed{٤٢}", example) == 0.0
