"""Validation prompts split over ranks: every rank runs the same number of batches (a sharded `generate` is a
collective) and every question counts exactly once in val/*."""

from __future__ import annotations

import pytest
import torch

from hicra.rollout.hf import RolloutBatch
from hicra.tasks.scoring import ScoredBatch
from hicra.training.data import even_shard
from hicra.training.validation import ValidationTally


@pytest.mark.parametrize(("n", "ranks"), [(200, 8), (7, 3), (5, 2), (2, 4), (0, 2), (6, 1)])
def test_every_rank_gets_the_same_count_and_each_item_counts_once(n, ranks):
    items = list(range(n))
    shares = [even_shard(items, rank, ranks) for rank in range(ranks)]
    assert len({len(share) for share in shares}) == 1  # the same number of rows, so of batches, on every rank
    counted = sorted(item for share in shares for item, kept in share if kept)
    assert counted == items
    assert len(shares[0]) == -(-n // ranks)


def test_seven_items_on_three_ranks_pad_the_short_share_with_its_first_item():
    assert even_shard(list("abcdefg"), 2, 3) == [("c", True), ("f", True), ("c", False)]
    assert even_shard(list("ab"), 3, 4) == [("a", False)]  # a rank with no question of its own still runs a batch


def test_the_tally_drops_padding_rows():
    tally = ValidationTally()
    rollout = RolloutBatch(prompt_ids=torch.zeros(3, 1, dtype=torch.long), prompt_mask=torch.ones(3, 1, dtype=torch.bool),
                           response_ids=torch.zeros(3, 4, dtype=torch.long),
                           response_mask=torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool),
                           truncated=torch.tensor([False, True, False]))
    tally.add(ScoredBatch(scores=[1.0, 0.0, 1.0], in_form=[True, False, True]), rollout, counted=[True, True, False])
    metrics, prompts = tally.pooled_metrics(None)
    assert prompts == 2
    assert metrics["val/accuracy"] == 0.5 and metrics["val/response_length"] == 3.0
    assert metrics["val/truncated_frac"] == 0.5 and metrics["val/boxed_frac"] == 0.5
