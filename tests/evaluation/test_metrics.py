"""Records -> eval/* metrics: pass@1 is the mean sample accuracy, and the answer-shape fractions."""

from __future__ import annotations

import pytest

from hicra.evaluation.metrics import summarize


def record(correct: bool, tokens: int = 10, truncated: bool = False, boxed: bool = True, score: float | None = None):
    return {"correct": correct, "score": score if score is not None else float(correct), "num_tokens": tokens,
            "truncated": truncated, "boxed": boxed}


def test_pass_at_1_over_k_samples_is_the_mean_of_sample_accuracies():
    # 3 problems x 4 samples: 1, 4 and 0 correct -> pass@1 = 5/12; pass@2 = (1 - 3/6 + 1 + 0) / 3
    pattern = [[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    records = [record(bool(c)) for row in pattern for c in row]
    metrics = summarize(records, num_problems=3, num_samples=4, ks=(1, 2, 4), greedy=False)
    assert metrics["eval/pass_at_1"] == pytest.approx(5 / 12)
    assert metrics["eval/score"] == metrics["eval/pass_at_1"]
    assert metrics["eval/pass_at_2"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert metrics["eval/pass_at_4"] == pytest.approx(2 / 3)
    assert metrics["eval/num_problems"] == 3 and metrics["eval/num_samples"] == 12
    assert metrics["eval/samples_per_problem"] == 4
    assert "eval/greedy_accuracy" not in metrics


def test_greedy_accuracy_and_answer_shape():
    records = [record(True, 4), record(False, 8, truncated=True, boxed=False), record(False, 6, score=0.5),
               record(True, 2)]
    metrics = summarize(records, num_problems=4, num_samples=1, ks=(1,), greedy=True, num_skipped=7)
    assert metrics["eval/greedy_accuracy"] == metrics["eval/score"] == 0.5
    assert metrics["eval/reward_mean"] == pytest.approx(2.5 / 4)  # partial credit counts in the reward only
    assert metrics["eval/response_length"] == 5.0
    assert metrics["eval/truncated_frac"] == 0.25 and metrics["eval/boxed_frac"] == 0.75
    assert metrics["eval/num_skipped_problems"] == 7
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("eval/score", "eval/truncated_frac", "eval/boxed_frac"))
