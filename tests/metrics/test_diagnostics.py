"""Hierarchy diagnostics: hand-computed values written out literally."""

import math

import pytest
import torch

from hicra.metrics.diagnostics import (
    conditional_entropy_after_gram,
    masked_token_stats,
    pass_at_g,
    relative_perplexity,
    semantic_entropy,
    semantic_entropy_at,
    top_entropy_overlap,
    top_fraction_mask,
)

T, F = True, False


# --- semantic entropy ---


def test_semantic_entropy_pools_occurrences_over_rollouts():
    # but x2, so x1 -> p = (2/3, 1/3) -> H = 2/3 log2(3/2) + 1/3 log2(3) = 0.918296 bits
    assert semantic_entropy([["but", "so"], ["but"]]) == pytest.approx(0.918296, abs=1e-6)


def test_semantic_entropy_uniform_and_degenerate():
    assert semantic_entropy([["a", "b"], ["c"], ["d"]]) == pytest.approx(2.0)  # 4 equiprobable grams
    assert semantic_entropy([["but", "but"], ["but"]]) == 0.0  # one gram: no diversity
    assert semantic_entropy([[], []]) == 0.0
    assert semantic_entropy([]) == 0.0


# --- conditional entropy after a gram ---


def test_conditional_entropy_hand_case():
    pairs = [
        ("but", "x is"), ("but", "x is"), ("but", "we get"),  # H(next | but) = H(2/3, 1/3) = 0.918296
        ("so", "the answer"),  # H(next | so) = 0
        ("so", ""), ("wait", ""),  # no following words: dropped, also from p(g)
    ]
    # p(but) = 3/4, p(so) = 1/4 -> 3/4 * 0.918296 = 0.688722
    assert conditional_entropy_after_gram(pairs) == pytest.approx(0.688722, abs=1e-6)


def test_conditional_entropy_one_bit_and_empty():
    assert conditional_entropy_after_gram([("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")]) == pytest.approx(1.0)
    assert conditional_entropy_after_gram([("a", "x"), ("b", "y")]) == 0.0  # each gram fully predicts what follows
    assert conditional_entropy_after_gram([("a", ""), ("b", "")]) == 0.0
    assert conditional_entropy_after_gram([]) == 0.0


# --- planning vs execution means ---


def test_masked_token_stats_ignore_padding_even_nan():
    values = torch.tensor([[1.0, 2.0, 3.0, float("nan")], [4.0, 5.0, 6.0, 100.0]])
    planning = torch.tensor([[T, F, T, T], [F, T, F, F]])  # the padded (0, 3) is "planning" but not a response token
    response = torch.tensor([[T, T, T, F], [T, T, T, F]])
    # planning: 1, 3, 5 -> 3.0; execution: 2, 4, 6 -> 4.0
    assert masked_token_stats(values, planning, response) == (pytest.approx(3.0), pytest.approx(4.0))


def test_masked_token_stats_nan_when_a_class_is_empty():
    values = torch.tensor([[1.0, 3.0]])
    plan, exe = masked_token_stats(values, torch.zeros(1, 2, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool))
    assert math.isnan(plan) and exe == pytest.approx(2.0)
    plan, exe = masked_token_stats(values, torch.ones(1, 2, dtype=torch.int64), torch.ones(1, 2, dtype=torch.int64))
    assert plan == pytest.approx(2.0) and math.isnan(exe)
    plan, exe = masked_token_stats(values, torch.ones(1, 2, dtype=torch.bool), torch.zeros(1, 2, dtype=torch.bool))
    assert math.isnan(plan) and math.isnan(exe)


def test_masked_token_stats_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        masked_token_stats(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4))


# --- relative perplexity ---


@pytest.mark.parametrize(
    "nll, ref, expected",
    [
        (2.0, 2.0, 1.0),  # unchanged
        (1.0 + math.log(2.0), 1.0, 2.0),  # perplexity doubled
        (1.0, 1.5, 0.606531),  # exp(-0.5)
        (800.0, 799.0, 2.718282),  # exp(800) overflows; the difference does not
    ],
)
def test_relative_perplexity(nll, ref, expected):
    assert relative_perplexity(nll, ref) == pytest.approx(expected, abs=1e-6)


# --- Pass@G ---


def test_pass_at_g_hand_case():
    rewards = torch.tensor([0, 0, 1, 0, 0, 0.5, 0, 0, 1, 1, 0, 0], dtype=torch.float)
    assert pass_at_g(rewards, 4) == pytest.approx(2 / 3)  # group 2 has only a partial 0.5
    assert pass_at_g(rewards, 12) == 1.0
    assert pass_at_g(rewards, 1) == pytest.approx(3 / 12)
    assert math.isnan(pass_at_g(torch.zeros(0), 4))


def test_pass_at_g_rejects_ragged_groups():
    with pytest.raises(ValueError, match="whole number of groups"):
        pass_at_g(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="group_size"):
        pass_at_g(torch.zeros(6), 0)


# --- overlap of planning and high-entropy tokens ---


def test_top_entropy_overlap_hand_case():
    entropies = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.2, 9.0], [0.7, 0.1, 0.2, 0.3, 0.4, 0.5]])
    response = torch.tensor([[T, T, T, T, T, F], [T] * 6])
    planning = torch.tensor([[T, T, F, F, F, T], [F, F, F, F, T, T]])
    # row 0: n = 5 -> ceil(2.0) = 2 top tokens: positions 1, 2 (the padded 9.0 never counts)
    # row 1: n = 6 -> ceil(2.4) = 3 top tokens: positions 0, 5, 4
    # planning (valid): (0,0), (0,1), (1,4), (1,5) = 4; top = 5; both: (0,1), (1,4), (1,5) = 3
    in_top, top_in_plan = top_entropy_overlap(entropies, planning, response, top_fraction=0.4)
    assert in_top == pytest.approx(3 / 4)
    assert top_in_plan == pytest.approx(3 / 5)


def test_top_entropy_overlap_default_fraction_and_nan():
    entropies = torch.arange(10, dtype=torch.float)[None, :]  # top 30% = last 3 (ceil(0.3 * 10) = 3, not 4)
    response = torch.ones(1, 10, dtype=torch.bool)
    planning = torch.zeros(1, 10, dtype=torch.bool)
    planning[0, 8] = True
    assert top_entropy_overlap(entropies, planning, response) == (pytest.approx(1.0), pytest.approx(1 / 3))
    in_top, top_in_plan = top_entropy_overlap(entropies, torch.zeros_like(planning), response)
    assert math.isnan(in_top) and top_in_plan == 0.0
    in_top, top_in_plan = top_entropy_overlap(entropies, planning, torch.zeros_like(response))
    assert math.isnan(in_top) and math.isnan(top_in_plan)


def test_top_fraction_mask_matches_the_high_entropy_rule():
    from hicra.planning import HighEntropyDetector

    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (6, 17), generator=gen).float()  # many ties
    valid = torch.rand(6, 17, generator=gen) > 0.3
    expected = HighEntropyDetector(rho=0.3).mask(torch.zeros(6, 17, dtype=torch.long), valid, scores)
    assert torch.equal(top_fraction_mask(scores, valid, 0.3), expected)
    assert top_fraction_mask(torch.tensor([[1.0, float("nan"), 0.5]]), torch.ones(1, 3), 0.5).tolist() == [[T, F, T]]  # k = 2; NaN last
    with pytest.raises(ValueError, match="fraction"):
        top_fraction_mask(scores, valid, 0.0)


def test_semantic_entropy_at_a_fixed_number_of_occurrences():
    rows = [["a", "a"], ["b"], ["c", "a"]]
    # all 5 occurrences: p = (3/5, 1/5, 1/5)
    full = -(0.6 * math.log2(0.6) + 2 * 0.2 * math.log2(0.2))
    assert semantic_entropy_at(rows, 5, seed=0) == pytest.approx(full) == pytest.approx(semantic_entropy(rows))
    assert math.isnan(semantic_entropy_at(rows, 6, seed=0))  # too few occurrences: no value on another scale
    draws = {semantic_entropy_at(rows, 2, seed=s) for s in range(20)}
    assert draws <= {0.0, 1.0} and len(draws) == 2  # two of five: the same gram twice, or two different ones
    assert semantic_entropy_at(rows, 3, seed=7) == semantic_entropy_at(rows[::-1], 3, seed=7)  # order-free
    with pytest.raises(ValueError, match="n must be >= 1"):
        semantic_entropy_at(rows, 0, seed=0)


def test_reply_share_with_marks_counts_replies_with_any_mark_inside_the_response():
    from hicra.metrics.diagnostics import reply_share_with_marks

    response = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    marks = torch.tensor([[0, 1, 0, 0],   # marked inside the reply
                          [0, 0, 1, 0],   # marked only on padding: does not count
                          [1, 1, 0, 1],   # several marks: one reply
                          [0, 0, 0, 0]], dtype=torch.bool)
    assert reply_share_with_marks(marks, response) == 0.5
    assert reply_share_with_marks(torch.zeros(4, 4, dtype=torch.bool), response) == 0.0
    assert math.isnan(reply_share_with_marks(torch.zeros(0, 4, dtype=torch.bool), torch.zeros(0, 4, dtype=torch.bool)))
    with pytest.raises(ValueError, match="same shape"):
        reply_share_with_marks(marks[:, :3], response)
