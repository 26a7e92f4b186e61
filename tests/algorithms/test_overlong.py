"""DAPO's soft overlong penalty (arXiv:2503.14476, Eq. 13), checked against hand-computed values."""

from functools import partial

import pytest
import torch

from hicra.algorithms import Algorithm, group_advantages, identity_token_advantages, overlong_penalty


def test_overlong_penalty_by_hand():
    # L_max = 10, L_cache = 4: free up to 6, linear (6 - |y|) / 4 on 7..10, -1 beyond
    lengths = torch.tensor([0, 5, 6, 7, 8, 10, 11])
    got = overlong_penalty(lengths, max_length=10, buffer=4)
    assert got.tolist() == [0.0, 0.0, 0.0, -0.25, -0.5, -1.0, -1.0]
    assert overlong_penalty(lengths, max_length=10, buffer=4, factor=0.5).tolist() == \
        [0.0, 0.0, 0.0, -0.125, -0.25, -0.5, -0.5]


def test_overlong_penalty_off_and_whole_budget():
    lengths = torch.tensor([1, 9, 10])
    assert overlong_penalty(lengths, max_length=10, buffer=0).tolist() == [0.0, 0.0, 0.0]  # off
    torch.testing.assert_close(overlong_penalty(lengths, max_length=10, buffer=10),
                               torch.tensor([-0.1, -0.9, -1.0]))  # buffer = L_max: the penalty starts at once


@pytest.mark.parametrize("kwargs, match", [({"buffer": -1}, "buffer=-1"), ({"buffer": 11}, "buffer=11"),
                                           ({"buffer": 2, "factor": -1.0}, "factor=-1.0")])
def test_overlong_penalty_refuses_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        overlong_penalty(torch.tensor([3]), max_length=10, **kwargs)


def test_algorithm_penalises_response_lengths_from_the_mask():
    alg = Algorithm(partial(group_advantages, group_size=2), identity_token_advantages, group_size=2,
                    overlong_buffer=2, overlong_penalty=2.0)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)  # lengths 2, 3, 4
    assert alg.overlong_penalties(mask, max_length=4).tolist() == [0.0, -1.0, -2.0]
    default = Algorithm(partial(group_advantages, group_size=2), identity_token_advantages, group_size=2)
    assert default.overlong_penalties(mask, max_length=4).tolist() == [0.0, 0.0, 0.0]  # off by default
    with pytest.raises(ValueError, match="overlong_buffer=-3"):
        Algorithm(partial(group_advantages, group_size=2), identity_token_advantages, group_size=2,
                  overlong_buffer=-3)
