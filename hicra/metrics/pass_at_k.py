"""Unbiased pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", eq. 1).

n samples are drawn per problem and c of them are correct. pass@k is the probability that at least one of k
samples, drawn without replacement from those n, is correct:

    pass@k = 1 - C(n - c, k) / C(n, k)                         (1 when n - c < k)
           = 1 - prod_{i = n-c+1}^{n} (1 - k / i)              the numerically stable product form used here

The binomials overflow floats for n in the hundreds; the product of c factors in [0, 1] does not. Special cases:
pass@1 = c / n (so the paper's "pass@1 averaged over k samples" is this estimator at k = 1), pass@n = 1 if c > 0,
and c = 0 gives 0. It is monotone non-decreasing in k.

Shapes: P problems, n samples per problem (the same n for every problem).
"""

from __future__ import annotations

import torch
from torch import Tensor


def pass_at_k(num_correct: Tensor, num_samples: int, k: int) -> Tensor:
    """Unbiased pass@k of each problem: (P,) correct counts c in [0, n] -> (P,) float64 in [0, 1]."""
    if not 1 <= k <= num_samples:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={num_samples}")
    c = num_correct.to(torch.float64)  # (P,)
    if bool(((c < 0) | (c > num_samples)).any()):
        raise ValueError(f"correct counts must lie in [0, {num_samples}], got {num_correct.tolist()}")
    i = torch.arange(1, num_samples + 1, dtype=torch.float64)  # (n,)
    in_product = i.unsqueeze(0) > (num_samples - c).unsqueeze(1)  # (P, n) the factors i = n-c+1 .. n
    factors = torch.where(in_product, 1.0 - k / i, torch.ones_like(i))  # (P, n)
    estimate = 1.0 - factors.prod(dim=1)  # (P,)
    return torch.where(num_samples - c < k, torch.ones_like(c), estimate)  # every k-subset holds a correct one


def mean_pass_at_k(correct: Tensor, k: int) -> float:
    """pass@k of a benchmark: mean over problems of the per-problem estimate; correct is (P, n) bool."""
    num_problems, num_samples = correct.shape  # (P, n)
    if num_problems == 0:
        raise ValueError("pass@k of an empty benchmark is undefined")
    return float(pass_at_k(correct.sum(dim=1), num_samples, k).mean())
