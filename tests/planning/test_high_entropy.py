"""HighEntropyDetector: the top ceil(rho * n_valid) valid tokens of each response by entropy."""

import math

import pytest
import torch

from hicra.planning import HighEntropyDetector, PlanningDetector


def entropy(probs):
    return -sum(p * math.log(p) for p in probs if p > 0)


def test_hand_computed_entropies_pick_the_right_tokens():
    dists = [[1.0], [0.5, 0.5], [0.9, 0.1], [0.25] * 4, [0.7, 0.2, 0.1]]  # H: 0, ln2, 0.325, ln4, 0.802
    ent = torch.tensor([[entropy(d) for d in dists]])
    ids = torch.zeros(1, 5, dtype=torch.long)
    valid = torch.ones(1, 5, dtype=torch.bool)
    assert HighEntropyDetector(rho=0.4).mask(ids, valid, ent).tolist() == [[False, False, False, True, True]]
    assert HighEntropyDetector(rho=0.2).mask(ids, valid, ent).tolist() == [[False, False, False, True, False]]


@pytest.mark.parametrize("n, rho, k", [(5, 0.3, 2), (10, 0.3, 3), (10, 0.2, 2), (1, 0.2, 1), (7, 0.5, 4), (3, 1.0, 3)])
def test_ceil_rule(n, rho, k):
    ent = torch.arange(n, dtype=torch.float)[None, :]  # increasing: the last k tokens are the top k
    marks = HighEntropyDetector(rho).mask(torch.zeros(1, n, dtype=torch.long), torch.ones(1, n, dtype=torch.bool), ent)
    assert marks.sum().item() == k
    assert marks[0, n - k :].all()


def test_padding_is_excluded_and_does_not_count():
    ent = torch.tensor([[0.1, 0.9, 0.5, 9.0, 9.0], [0.3, 0.2, 0.1, 0.4, 0.0]])
    valid = torch.tensor([[True, True, True, False, False], [True] * 5])
    marks = HighEntropyDetector(rho=0.5).mask(torch.full((2, 5), 2), valid, ent)
    # row 0: n_valid = 3 -> k = 2 (0.9, 0.5); row 1: n_valid = 5 -> k = 3 (0.4, 0.3, 0.2)
    assert marks.tolist() == [[False, True, True, False, False], [True, True, False, True, False]]


def test_ties_go_to_the_earlier_position():
    ent = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.5]])
    ids, valid = torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 5, dtype=torch.bool)
    marks = HighEntropyDetector(rho=0.4).mask(ids, valid, ent)
    assert marks.tolist() == [[False, True, True, False, False]]


def test_rho_one_marks_every_valid_token():
    valid = torch.tensor([[True, True, True, False], [True, False, False, False], [False] * 4])
    marks = HighEntropyDetector(rho=1.0).mask(torch.zeros(3, 4, dtype=torch.long), valid, torch.rand(3, 4))
    assert torch.equal(marks, valid)


def test_errors_and_flags():
    det = HighEntropyDetector()
    assert det.rho == 0.3 and det.needs_entropy  # the paper's "top 30%" (Fig. 10) and det.marks_planning
    assert isinstance(det, PlanningDetector)
    ids, valid = torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="entropies"):
        det.mask(ids, valid)
    with pytest.raises(ValueError, match="shape"):
        det.mask(ids, valid, torch.zeros(1, 4))
    for rho in [0.0, -0.1, 1.5, float("nan")]:
        with pytest.raises(ValueError, match="rho"):
            HighEntropyDetector(rho)
