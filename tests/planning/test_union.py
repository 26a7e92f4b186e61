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

