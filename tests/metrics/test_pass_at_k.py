"""Unbiased pass@k against the closed form 1 - C(n-c,k)/C(n,k), and its invariants."""

from __future__ import annotations

import math

import pytest
import torch

from hicra.metrics.pass_at_k import mean_pass_at_k, pass_at_k


def closed_form(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)  # math.comb(m, k) = 0 when m < k


@pytest.mark.parametrize("n", [1, 2, 5, 16, 40])
def test_matches_closed_form_for_every_c_and_k(n):
    counts = torch.arange(n + 1)  # (n+1,) every possible number of correct samples
    for k in range(1, n + 1):
        got = pass_at_k(counts, n, k)
        want = torch.tensor([closed_form(n, c, k) for c in range(n + 1)], dtype=torch.float64)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_hand_computed_values():
    # n=4, c=1, k=2: 1 - C(3,2)/C(4,2) = 1 - 3/6; n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(torch.tensor([1]), 4, 2).item() == pytest.approx(0.5)
    assert pass_at_k(torch.tensor([2]), 5, 2).item() == pytest.approx(0.7)


def test_invariants():
    n = 16
    counts = torch.arange(n + 1)  # (n+1,)
    torch.testing.assert_close(pass_at_k(counts, n, 1), counts.double() / n)  # pass@1 = c / n
    assert pass_at_k(counts, n, n)[1:].eq(1.0).all()  # pass@n = 1 whenever c > 0
    assert all(pass_at_k(torch.tensor([0]), n, k).item() == 0.0 for k in range(1, n + 1))  # c = 0 -> 0
    curves = torch.stack([pass_at_k(counts, n, k) for k in range(1, n + 1)])  # (n, n+1) over k
    assert (curves.diff(dim=0) >= -1e-12).all()  # monotone non-decreasing in k
    assert ((curves >= 0) & (curves <= 1)).all()


def test_large_n_stays_finite():
    # C(1000, 500) overflows a float; the product form does not.
    value = pass_at_k(torch.tensor([3]), 1000, 500).item()
    assert 0.8 < value < 1.0 and math.isfinite(value)


def test_pass_at_1_over_k_samples_is_the_mean_sample_accuracy():
    generator = torch.Generator().manual_seed(0)
    correct = torch.rand(37, 8, generator=generator) < 0.3  # (P, n) one row of samples per problem
    assert mean_pass_at_k(correct, 1) == pytest.approx(float(correct.double().mean()), abs=1e-12)


def test_mean_over_problems():
    correct = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)  # (P=3, n=4)
    want = (closed_form(4, 1, 2) + 1.0 + 0.0) / 3
    assert mean_pass_at_k(correct, 2) == pytest.approx(want)


@pytest.mark.parametrize("k", [0, 5])
def test_k_outside_1_to_n_is_rejected(k):
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(torch.tensor([1]), 4, k)


def test_counts_outside_0_to_n_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        pass_at_k(torch.tensor([5]), 4, 1)
