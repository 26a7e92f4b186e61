"""Each rank's own sampling stream (hicra/rollout/sampling_stream.py); across real ranks: tests/training/test_ddp.py."""

from __future__ import annotations

import pytest
import torch

from hicra.models.loaders import build_tiny_model
from hicra.rollout.hf import HFSampler
from hicra.rollout.sampling_stream import SamplingStream


def _draws(stream: SamplingStream, n: int = 4) -> torch.Tensor:
    with stream.active("cpu"):
        return torch.rand(n)


def test_a_stream_depends_on_seed_and_rank_and_leaves_the_shared_stream_alone():
    torch.manual_seed(0)
    expected_shared = torch.rand(3)
    torch.manual_seed(0)
    rank0, rank1, other_seed = SamplingStream(7, 0), SamplingStream(7, 1), SamplingStream(8, 0)
    draws = [_draws(rank0), _draws(rank1), _draws(other_seed)]
    assert torch.equal(torch.rand(3), expected_shared)  # init, dropout, data order: still the same on every rank
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert torch.equal(_draws(SamplingStream(7, 1)), draws[1])  # reproducible for a seed and rank


def test_a_stream_continues_where_it_stopped_and_from_its_saved_state():
    stream = SamplingStream(3, 1)
    first, second = _draws(stream), _draws(stream)
    assert not torch.equal(first, second)  # the second rollout does not replay the first one's draws
    restored = SamplingStream(0, 0)
    restored.load_state_dict(SamplingStream(3, 1).state_dict())
    _draws(restored)
    saved = restored.state_dict()
    resumed = SamplingStream(0, 0)
    resumed.load_state_dict(saved)
    assert torch.equal(_draws(resumed), second)


def test_a_restarted_stream_does_not_replay_the_first_steps():
    assert not torch.equal(_draws(SamplingStream(3, 1, restart=5)), _draws(SamplingStream(3, 1)))


@pytest.mark.parametrize("cache_implementation", [None, "static"])
def test_the_sampler_draws_from_the_active_stream(cache_implementation):
    """hicra's decoding loop and transformers' `generate` (the static cache) both sample from it."""
    bundle = build_tiny_model(seed=0)
    sampler = HFSampler(max_new_tokens=6, cache_implementation=cache_implementation)

    def sample(rank: int) -> torch.Tensor:
        with SamplingStream(11, rank).active("cpu"):
            return sampler.generate(bundle.model, bundle.tokenizer, ["What is 2 + 2?"], 4).response_ids

    assert torch.equal(sample(0), sample(0))
    assert not torch.equal(sample(0), sample(1))
