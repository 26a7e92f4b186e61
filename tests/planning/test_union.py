"""UnionDetector: Strategic Gram tokens OR the top-rho entropy tokens."""

import pytest
import torch

from hicra.planning import HighEntropyDetector, PlanningDetector, StrategicGramDetector, UnionDetector

PAD = 2


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer):
    return smollm2_tokenizer


def test_union_is_the_or_of_the_two_masks(tok):
    texts = ["But wait, 3 + 4 = 7, so the answer is 7.", "We multiply 6 by 7 and get 42 as the product here."]
    rows = [tok(t, add_special_tokens=False).input_ids for t in texts]
    width = max(map(len, rows)) + 2
    ids = torch.full((2, width), PAD, dtype=torch.long)
    valid = torch.zeros(2, width, dtype=torch.bool)
    for b, r in enumerate(rows):
        ids[b, : len(r)], valid[b, : len(r)] = torch.tensor(r), True
    entropies = torch.rand(ids.shape, generator=torch.Generator().manual_seed(0))
    entropies[~valid] = 100.0  # padding must never win
    grams = StrategicGramDetector(tok).mask(ids, valid)
    high = HighEntropyDetector(rho=0.3).mask(ids, valid, entropies)
    union = UnionDetector(tok, rho=0.3).mask(ids, valid, entropies)
    assert grams.any() and high.any() and (high & ~grams).any()
    assert torch.equal(union, grams | high)
    assert not (union & ~valid).any()


def test_flags_and_missing_entropies(tok):
    det = UnionDetector(tokenizer=tok)
    assert isinstance(det, PlanningDetector)
    assert det.needs_entropy is True and det.marks_planning is True
    ids = torch.tensor([tok("so", add_special_tokens=False).input_ids])
    with pytest.raises(ValueError, match="entropies"):
        det.mask(ids, torch.ones_like(ids, dtype=torch.bool))


def test_bad_rho_is_rejected(tok):
    with pytest.raises(ValueError, match="rho"):
        UnionDetector(tok, rho=0.0)


def test_long_response_union_keeps_marks_only_in_longer_than_average_replies(tok):
    from hicra.planning import LongResponseUnionDetector

    ids = torch.randint(3, 1000, (4, 6), generator=torch.Generator().manual_seed(1))
    valid = torch.arange(6)[None] < torch.tensor([6, 2, 3, 5])[:, None]  # groups of 2: means 4 and 4
    entropies = torch.rand(4, 6, generator=torch.Generator().manual_seed(2))
    union = UnionDetector(tok, rho=0.3).mask(ids, valid, entropies)
    gated = LongResponseUnionDetector(tok, rho=0.3, group_size=2).mask(ids, valid, entropies)
    assert union[[1, 2]].any()  # replies 1 and 2 are shorter than their group's mean: their marks go
    assert torch.equal(gated[[0, 3]], union[[0, 3]]) and not gated[[1, 2]].any()
    with pytest.raises(ValueError, match="groups of 3"):
        LongResponseUnionDetector(tok, group_size=3).mask(ids, valid, entropies)
