"""StrategicGramDetector.occurrences_with_context: each gram occurrence with the words that follow it."""

import pytest
import torch

from hicra.planning import StrategicGramDetector

PAD = 2


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer):
    return smollm2_tokenizer


@pytest.fixture(scope="module")
def det(tok):
    return StrategicGramDetector(tok, grams=["but wait", "so", "let's"])


def batch(tok, texts):
    rows = [tok(t, add_special_tokens=False).input_ids + [PAD] for t in texts]
    width = max(map(len, rows)) + 2
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    valid = torch.zeros(len(rows), width, dtype=torch.bool)
    for b, r in enumerate(rows):
        ids[b, : len(r)], valid[b, : len(r)] = torch.tensor(r), True
    return ids, valid


def test_hand_case(tok, det):
    ids, valid = batch(tok, [
        "But WAIT, Let\u2019s check: x^2+1 = 5. So",
        "no grams at all",
        "so \\frac{3}{4}, also fine",
    ])
    assert det.occurrences_with_context(ids, valid) == [
        [("but wait", "let's check x^2+1"), ("let's", "check x^2+1 ="), ("so", "")],
        [],
        [("so", "frac 3 4")],  # backslash and braces separate words; "also" is not "so"
    ]
    assert det.occurrences_with_context(ids, valid, following_words=1)[0] == [
        ("but wait", "let's"), ("let's", "check"), ("so", "")
    ]
    assert det.occurrences_with_context(ids, valid, following_words=0)[2] == [("so", "")]


def test_grams_agree_with_occurrences(tok):
    paper = StrategicGramDetector(tok)
    ids, valid = batch(tok, ["But wait, we can use the fact that 2 is prime. Therefore x = 2.", "Hmm, let me check."])
    pairs = paper.occurrences_with_context(ids, valid, following_words=2)
    assert [[g for g, _ in row] for row in pairs] == paper.occurrences(ids, valid)
    assert all(len(nxt.split()) <= 2 for row in pairs for _, nxt in row)


def test_padding_is_not_context(tok, det):
    ids, valid = batch(tok, ["so", "so we are done so"])
    valid[1, 3:] = False  # only "so we are" is the response; the rest is not text
    assert det.occurrences_with_context(ids, valid, following_words=5) == [[("so", "")], [("so", "we are")]]


def test_bad_following_words(tok, det):
    ids, valid = batch(tok, ["so"])
    with pytest.raises(ValueError, match="following_words"):
        det.occurrences_with_context(ids, valid, following_words=-1)
