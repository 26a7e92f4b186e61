"""Pure maths of the paper's hierarchy diagnostics (S4): semantic entropy, conditional entropy after a gram,
planning vs execution token statistics, relative perplexity, Pass@G and the planning / high-entropy overlap.

Shapes follow the package vocabulary: B completions, T response length; masks are bool or {0,1}.
Every function returns plain Python floats. "No such tokens" (an empty denominator) is float('nan'), not 0.0: a
logged NaN leaves a gap in a plot, whereas 0.0 would draw a fake value (an entropy or NLL of 0 is a real, extreme
measurement). Entropies of empty occurrence lists are 0.0, which *is* the entropy of an empty/degenerate distribution.
Nothing here raises on empty inputs; only malformed arguments (shapes, group size, fraction) raise ValueError.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict

import torch
from torch import Tensor

from hicra.algorithms.functional import masked_sum

# ceil(0.3 * 10) must be 3, not 4 (0.3 * 10 = 3.0000000000000004 in floating point)
_CEIL_EPS = 1e-9


def top_fraction_mask(
    scores: Tensor,  # (B, T) float: higher = selected first (e.g. token entropies)
    valid: Tensor,  # (B, T) bool or {0,1}: candidate positions
    fraction: float,  # in (0, 1]
) -> Tensor:  # (B, T) bool
    """Per row, the top ceil(fraction * n_valid) valid positions by score; ties go to the earlier position.

    NaN scores rank below every finite score. Shared by `HighEntropyDetector` and `top_entropy_overlap`.
    """
    if scores.dim() != 2 or valid.shape != scores.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and valid {tuple(valid.shape)} must both be (B, T)")
    if not (isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0.0 < fraction <= 1.0):
        raise ValueError(f"fraction={fraction!r} is invalid; allowed: a number in (0, 1]")
    valid = valid.bool().to(scores.device)
    scores = scores.detach().float().nan_to_num(nan=-math.inf)
    scores = scores.masked_fill(~valid, -math.inf)  # (B, T)
    n_valid = valid.sum(dim=1)  # (B,)
    k = torch.ceil(n_valid.double() * float(fraction) - _CEIL_EPS).clamp(min=0).long()  # (B,)
    k = torch.minimum(k, n_valid)
    # stable descending sort: equal scores keep position order, so the earlier token wins a tie
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices  # (B, T)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return (rank < k[:, None]) & valid  # invalid positions sort last (-inf) and k <= n_valid


def _entropy_bits(counts) -> float:
    """Shannon entropy (base 2) of the distribution given by positive counts; 0.0 for no counts."""
    counts = [c for c in counts if c > 0]
    total = sum(counts)
    if total == 0:
        return 0.0
    return sum(c / total * math.log2(total / c) for c in counts)  # log2(total/c) >= 0: never -0.0


def semantic_entropy(occurrences: list[list[str]]) -> float:
    """Shannon entropy (bits) of the frequency distribution of gram occurrences pooled over the step's rollouts.

    `occurrences[i]` lists the grams found in response i (with repeats, as `StrategicGramDetector.occurrences`
    gives). Every occurrence counts once, so a gram used twice in one response weighs twice. 0.0 when there are
    no occurrences at all.
    """
    return _entropy_bits(Counter(g for row in occurrences for g in row).values())


def semantic_entropy_at(occurrences: list[list[str]], n: int, seed: int) -> float:
    """`semantic_entropy` of n occurrences drawn without replacement (seeded) from the step's pooled occurrences, so
    that arms whose replies hold different numbers of grams are compared on one scale (the plug-in entropy grows with
    the sample size). NaN when the step has fewer than n occurrences: no value beats a value on another scale."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    pooled = sorted(g for row in occurrences for g in row)  # sorted: the draw depends on the multiset, not the order
    if len(pooled) < n:
        return float("nan")
    return _entropy_bits(Counter(random.Random(seed).sample(pooled, n)).values())


def conditional_entropy_after_gram(pairs: list[tuple[str, str]]) -> float:
    """H(following n-gram | gram) in bits = sum_g p(g) * H(next | g), over (gram, following) occurrence pairs.

    Pairs whose following n-gram is empty (the gram ends the response) are dropped before p(g) is computed.
    0.0 when no pair remains.
    """
    by_gram: dict[str, Counter] = defaultdict(Counter)
    for gram, following in pairs:
        if following:
            by_gram[gram][following] += 1
    total = sum(sum(c.values()) for c in by_gram.values())
    if total == 0:
        return 0.0
    return sum(sum(c.values()) / total * _entropy_bits(c.values()) for c in by_gram.values())


def masked_token_stats(
    values: Tensor,  # (B, T) float, e.g. entropies or NLLs
    planning_mask: Tensor,  # (B, T) bool or {0,1}
    response_mask: Tensor,  # (B, T) bool or {0,1}
) -> tuple[float, float]:
    """(mean over planning tokens, mean over execution tokens), both restricted to response tokens.

    Execution = response tokens that are not planning tokens. A class without any token gives float('nan')
    (never an exception and never a fake 0). Values at padded positions are ignored even if NaN/inf.
    """
    if values.shape != response_mask.shape or planning_mask.shape != response_mask.shape:
        raise ValueError(
            f"values {tuple(values.shape)}, planning_mask {tuple(planning_mask.shape)} and response_mask "
            f"{tuple(response_mask.shape)} must have the same shape"
        )
    valid = response_mask.bool().to(values.device)
    planning = planning_mask.bool().to(values.device) & valid
    execution = valid & ~planning
    values = values.detach().double()
    out = []
    for m in (planning, execution):
        n = int(m.sum())
        out.append(float(masked_sum(values, m)) / n if n else float("nan"))
    return out[0], out[1]


def reply_share_with_marks(
    planning_mask: Tensor,  # (B, T) bool or {0,1}
    response_mask: Tensor,  # (B, T) bool or {0,1}
) -> float:
    """Share of replies with at least one marked response token: how many replies use a planning phrase at all (on a
    task where a plan is optional, the adoption of the plan), where the token share mixes that with reply length.
    Marks at padded positions do not count; an empty batch gives float('nan')."""
    if planning_mask.shape != response_mask.shape:
        raise ValueError(f"planning_mask {tuple(planning_mask.shape)} and response_mask "
                         f"{tuple(response_mask.shape)} must have the same shape")
    if planning_mask.shape[0] == 0:
        return float("nan")
    marked = (planning_mask.bool() & response_mask.bool()).any(dim=1)  # (B,)
    return float(marked.float().mean())


def relative_perplexity(mean_nll: float, reference_mean_nll: float) -> float:
    """exp(mean_nll) / exp(reference_mean_nll), computed as exp(mean_nll - reference) (no overflow)."""
    return math.exp(mean_nll - reference_mean_nll)


def pass_at_g(rewards: Tensor, group_size: int) -> float:
    """Fraction of groups (consecutive blocks of `group_size` completions) with at least one reward >= 1.

    NaN for an empty batch; ValueError when the batch is not a whole number of groups.
    """
    if not (isinstance(group_size, int) and group_size >= 1):
        raise ValueError(f"group_size={group_size!r} is invalid; allowed: an int >= 1")
    rewards = rewards.detach().reshape(-1)
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards are not a whole number of groups of {group_size}")
    if rewards.numel() == 0:
        return float("nan")
    solved = (rewards.view(-1, group_size) >= 1).any(dim=1)  # (n_groups,)
    return float(solved.double().mean())


def top_entropy_overlap(
    entropies: Tensor,  # (B, T) float
    planning_mask: Tensor,  # (B, T) bool or {0,1}
    response_mask: Tensor,  # (B, T) bool or {0,1}
    top_fraction: float = 0.3,
) -> tuple[float, float]:
    """(share of planning tokens that are high-entropy, share of high-entropy tokens that are planning).

    High-entropy = per response, the top ceil(top_fraction * n_valid) response tokens by entropy (the
    `HighEntropyDetector` rule, ties to the earlier position). Both shares are pooled over the batch (token counts
    summed before dividing); NaN when the denominator is 0.
    """
    if planning_mask.shape != entropies.shape or response_mask.shape != entropies.shape:
        raise ValueError(
            f"entropies {tuple(entropies.shape)}, planning_mask {tuple(planning_mask.shape)} and response_mask "
            f"{tuple(response_mask.shape)} must have the same shape"
        )
    valid = response_mask.bool().to(entropies.device)
    top = top_fraction_mask(entropies, valid, top_fraction)
    planning = planning_mask.bool().to(entropies.device) & valid
    both = int((planning & top).sum())
    n_planning, n_top = int(planning.sum()), int(top.sum())
    return (
        both / n_planning if n_planning else float("nan"),
        both / n_top if n_top else float("nan"),
    )
