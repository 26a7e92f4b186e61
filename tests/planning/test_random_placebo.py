"""RandomPlaceboDetector ("Placebo HICRA"): random tokens/spans, as many per response as the grams mark."""

import math

import pytest
import torch

from hicra.errors import ConfigError
from hicra.planning import PlanningDetector, RandomPlaceboDetector, StrategicGramDetector

PAD = 2  # SmolLM2: eos = pad = <|im_end|>

TEXTS = [
    (
        "Let me think. First, we compute 12 * 7 = 84. But wait, we need the remainder, so 84 mod 5 = 4. "
        "Therefore the answer is 4. Let's verify: 84 = 16 * 5 + 4. Alternatively, we can check directly."
    ),
    "We add 3 and 5 to get 8, then multiply by 2 to get 16 and subtract 1 to get 15, the final value.",
    (
        "Hmm, but why? Let me check if the sum is even. So the sum of two odd numbers is even. "
        "But without more information we cannot conclude that x is even. Wait, let me re-read the problem."
    ),
    "Okay",
]


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer):
    return smollm2_tokenizer


@pytest.fixture(scope="module")
def batch(tok):
    """Right-padded batch of real SmolLM2 token ids of TEXTS (plus one EOS), with padding after it."""
    rows = [tok(t, add_special_tokens=False).input_ids + [PAD] for t in TEXTS]
    width = max(len(r) for r in rows) + 3
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    valid = torch.zeros(len(rows), width, dtype=torch.bool)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r)
        valid[b, : len(r)] = True
    return ids, valid


def runs(row):
    """Lengths of the maximal runs of True in a 1-D bool tensor."""
    out, cur = [], 0
    for m in row.tolist():
        if m:
            cur += 1
        elif cur:
            out.append(cur)
            cur = 0
    return out + ([cur] if cur else [])


@pytest.mark.parametrize("mode", ["spans", "tokens"])
def test_matches_the_gram_count_of_each_response(tok, batch, mode):
    ids, valid = batch
    grams = StrategicGramDetector(tok).mask(ids, valid)
    counts = grams.sum(dim=1)
    assert counts[0] >= 10 and counts[1] == 0 and counts[2] >= 10  # the texts exercise both cases
    marks = RandomPlaceboDetector(tok, mode=mode, seed=1).mask(ids, valid)
    assert marks.dtype == torch.bool and marks.shape == ids.shape
    assert torch.equal(marks.sum(dim=1), counts)  # per response, exactly; so the fraction matches too
    assert not (marks & ~valid).any()  # never padding


def test_marks_are_not_the_gram_tokens(tok, batch):
    ids, valid = batch
    grams = StrategicGramDetector(tok).mask(ids, valid)
    marks = RandomPlaceboDetector(tok, seed=0).mask(ids, valid)
    assert not torch.equal(marks, grams)


def test_deterministic_for_a_seed_and_different_across_seeds(tok, batch):
    ids, valid = batch
    a, b, c = (RandomPlaceboDetector(tok, seed=s) for s in (7, 7, 8))
    first_a, first_b, first_c = a.mask(ids, valid), b.mask(ids, valid), c.mask(ids, valid)
    assert torch.equal(first_a, first_b)
    assert not torch.equal(first_a, first_c)
    second_a, second_b = a.mask(ids, valid), b.mask(ids, valid)  # the generator advances per call ...
    assert not torch.equal(first_a, second_a)
    assert torch.equal(second_a, second_b)  # ... along the same sequence for the same seed


def test_spans_mode_yields_separate_runs_of_2_to_5_tokens(tok, batch):
    ids, valid = batch
    det = RandomPlaceboDetector(tok, mode="spans", seed=3)
    for _ in range(20):
        marks = det.mask(ids, valid)
        for row in marks:
            if row.sum() == 1:  # "Okay" is a one-token gram: the only case allowed a 1-token span
                continue
            assert all(2 <= n <= 5 for n in runs(row)), runs(row)
        assert marks[3].sum() == 1


def test_tokens_mode_is_not_restricted_to_spans(tok, batch):
    ids, valid = batch
    det = RandomPlaceboDetector(tok, mode="tokens", seed=0)
    singles = sum(runs(row).count(1) for _ in range(5) for row in det.mask(ids, valid))
    assert singles > 0


@pytest.mark.parametrize("mode", ["spans", "tokens"])
@pytest.mark.parametrize("fraction", [0.05, 0.25, 1.0])
def test_fraction_override(batch, mode, fraction):
    ids, valid = batch
    det = RandomPlaceboDetector(tokenizer=None, mode=mode, fraction=fraction, seed=0)  # no gram matching: no tokenizer
    marks = det.mask(ids, valid)
    n_valid = valid.sum(dim=1)
    expected = [min(n, math.ceil(fraction * n - 1e-9)) for n in n_valid.tolist()]
    assert marks.sum(dim=1).tolist() == expected
    assert not (marks & ~valid).any()


@pytest.mark.parametrize("n, k", [(1, 1), (2, 1), (3, 2), (3, 3), (7, 6), (9, 7), (12, 11), (40, 39)])
def test_spans_fill_exact_counts_even_when_crowded(n, k):
    det = RandomPlaceboDetector(mode="spans", fraction=k / n, seed=n)
    ids, valid = torch.zeros(1, n + 2, dtype=torch.long), torch.zeros(1, n + 2, dtype=torch.bool)
    valid[0, 1 : n + 1] = True  # a hole before and padding after
    for _ in range(10):
        marks = det.mask(ids, valid)
        assert marks.sum().item() == k and not (marks & ~valid).any()


def test_all_false_mask_and_empty_batch(tok, batch):
    ids, valid = batch
    det = RandomPlaceboDetector(tok)
    assert not det.mask(ids, torch.zeros_like(valid)).any()
    assert det.mask(ids[:0], valid[:0]).shape == (0, ids.shape[1])


def test_flags_and_protocol(tok):
    det = RandomPlaceboDetector(tok)
    assert isinstance(det, PlanningDetector)
    assert det.needs_entropy is False and det.marks_planning is True
    assert "spans" in repr(det)


def test_custom_grams_are_matched(tok):
    ids = torch.tensor([tok("so we are done, so it is", add_special_tokens=False).input_ids])
    valid = torch.ones_like(ids, dtype=torch.bool)
    expected = StrategicGramDetector(tok, grams=["so"]).mask(ids, valid).sum()
    assert expected == 2
    assert RandomPlaceboDetector(tok, grams=["so"], mode="tokens").mask(ids, valid).sum() == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "ngrams"}, "mode"),
        ({"fraction": 0.0}, "fraction"),
        ({"fraction": 1.5}, "fraction"),
        ({"fraction": 0.1, "grams_path": "x.txt"}, "not both"),
        ({"seed": "a"}, "seed"),
    ],
)
def test_bad_config_is_a_config_error(tok, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RandomPlaceboDetector(tok, **kwargs)


def test_matching_without_a_tokenizer_is_a_config_error():
    with pytest.raises(ConfigError, match="tokenizer"):
        RandomPlaceboDetector()
