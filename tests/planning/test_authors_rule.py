"""AuthorsRuleDetector: grams in every reply, top-rho entropy tokens only in correct replies longer than the group mean.

Hand-built batch (one-token words of the SmolLM2 tokenizer; the only gram is "wait"), groups of 2, rho 0.3:

    reply  length  group mean  longer  correct  gram at  top-entropy (ceil(0.3 n))  marked
    0      6       4           yes     yes      3        0, 5                       0, 3, 5
    1      2       4           no      no       0        1                          0      (gram in a short wrong reply)
    2      3       4           no      yes      -        2                          -      (correct but short)
    3      5       4           yes     no (0.5) 1        2, 4                       1      (longer but wrong)
"""

import pytest
import torch

from hicra.planning import (
    AuthorsRuleDetector,
    HighEntropyDetector,
    NullDetector,
    PlanningDetector,
    RandomPlaceboDetector,
    StrategicGramDetector,
    UnionDetector,
)

A, WAIT, PAD = 253, 5847, 2  # " a", " wait", eos/pad in SmolLM2's vocabulary
LENGTHS = [6, 2, 3, 5]
GRAM_AT = {0: 3, 1: 0, 3: 1}
HIGH_AT = {0: (0, 5), 1: (1,), 2: (2,), 3: (2, 4)}
CORRECTNESS = torch.tensor([1.0, 0.0, 1.0, 0.5])  # a partial score of 0.5 is not correct
EXPECTED = [[0, 3, 5], [0], [], [1]]


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer):
    return smollm2_tokenizer


def batch():
    ids = torch.full((4, 6), PAD, dtype=torch.long)
    valid = torch.arange(6)[None] < torch.tensor(LENGTHS)[:, None]  # (4,6)
    ids[valid] = A
    entropies = torch.full((4, 6), 0.1)
    entropies[~valid] = 100.0  # padding must never win
    for b, t in GRAM_AT.items():
        ids[b, t] = WAIT
    for b, ts in HIGH_AT.items():
        entropies[b, list(ts)] = 5.0
    return ids, valid, entropies


def as_mask(positions):
    out = torch.zeros(4, 6, dtype=torch.bool)
    for b, ts in enumerate(positions):
        out[b, ts] = True
    return out


def test_the_hand_computed_mask(tok):
    ids, valid, entropies = batch()
    det = AuthorsRuleDetector(tok, grams=["wait"], rho=0.3, group_size=2)
    assert isinstance(det, PlanningDetector) and det.needs_entropy and det.marks_planning
    # the two lenses, as the table says, before the gate
    assert torch.equal(StrategicGramDetector(tok, grams=["wait"]).mask(ids, valid), as_mask([[3], [0], [], [1]]))
    assert torch.equal(HighEntropyDetector(rho=0.3).mask(ids, valid, entropies), as_mask([[0, 5], [1], [2], [2, 4]]))
    assert torch.equal(det.mask(ids, valid, entropies, correctness=CORRECTNESS), as_mask(EXPECTED))


def test_the_entropy_lens_follows_correctness_and_length_not_the_grams(tok):
    ids, valid, entropies = batch()
    det = AuthorsRuleDetector(tok, grams=["wait"], rho=0.3, group_size=2)
    all_correct = det.mask(ids, valid, entropies, correctness=torch.ones(4))  # longer replies 0, 3 gain their tokens
    assert torch.equal(all_correct, as_mask([[0, 3, 5], [0], [], [1, 2, 4]]))
    none_correct = det.mask(ids, valid, entropies, correctness=torch.zeros(4))  # grams only, in every reply
    assert torch.equal(none_correct, as_mask([[3], [0], [], [1]]))


def test_bad_inputs_are_named(tok):
    ids, valid, entropies = batch()
    det = AuthorsRuleDetector(tok, grams=["wait"], group_size=2)
    with pytest.raises(ValueError, match="correctness=None"):
        det.mask(ids, valid, entropies)
    with pytest.raises(ValueError, match=r"correctness shape \(3,\)"):
        det.mask(ids, valid, entropies, correctness=torch.ones(3))
    with pytest.raises(ValueError, match="entropies"):
        det.mask(ids, valid, correctness=CORRECTNESS)
    with pytest.raises(ValueError, match="groups of 3"):
        AuthorsRuleDetector(tok, grams=["wait"], group_size=3).mask(ids, valid, entropies, correctness=CORRECTNESS)
    with pytest.raises(ValueError, match="group_size"):
        AuthorsRuleDetector(tok, group_size=0)


def test_every_other_detector_accepts_and_ignores_correctness(tok):
    ids, valid, entropies = batch()
    detectors = [NullDetector(), StrategicGramDetector(tok, grams=["wait"]), HighEntropyDetector(rho=0.3),
                 UnionDetector(tok, grams=["wait"], rho=0.3)]
    for det in detectors:
        assert torch.equal(det.mask(ids, valid, entropies, correctness=CORRECTNESS), det.mask(ids, valid, entropies))
    placebo = [RandomPlaceboDetector(tok, grams=["wait"], seed=3) for _ in range(2)]  # same seed: same draws
    assert torch.equal(placebo[0].mask(ids, valid, entropies, correctness=CORRECTNESS),
                       placebo[1].mask(ids, valid, entropies))
