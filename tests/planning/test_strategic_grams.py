"""StrategicGramDetector on the real SmolLM2 tokenizer: which sampled tokens are planning tokens."""

import random
import re

import pytest
import torch

from hicra.errors import ConfigError
from hicra.planning import (
    PlanningDetector,
    StrategicGramDetector,
    compile_grams,
    find_gram_spans,
    load_grams,
)
from hicra.planning.token_text import TokenText

PAD = 2  # SmolLM2: eos = pad = <|im_end|>


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer):
    return smollm2_tokenizer


@pytest.fixture(scope="module")
def paper(tok):
    return StrategicGramDetector(tok)


def encode(tok, text):
    return tok(text, add_special_tokens=False).input_ids


def one(ids):
    return torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.bool)


def runs(tok, ids, marks):
    """Decoded text of each maximal run of consecutive marked tokens."""
    out, cur = [], []
    for i, m in zip(ids, marks):
        if m:
            cur.append(i)
        elif cur:
            out.append(tok.decode(cur))
            cur = []
    if cur:
        out.append(tok.decode(cur))
    return out


def marked_runs(tok, det, text):
    ids = encode(tok, text)
    return runs(tok, ids, det.mask(*one(ids))[0].tolist())


# --- which tokens get marked ---


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Wait, that's odd.", ["Wait"]),  # start of the response
        ("The sum is 5, so the answer is 5.", [" so"]),  # mid-sentence; the leading-space token is the gram's token
        ("x = 3.\nTherefore y = 4.", ["Therefore"]),  # after a newline; the newline token itself is not marked
        ("Hmm, let me check.", ["Hmm, let me"]),  # "hmm," (with its comma) then "let me"
        ("Hmm let me check.", [" let me"]),  # no comma: "hmm," does not match
        ("WAIT, BUT the sum is odd.", ["WAIT, BUT"]),  # upper case, gram split inside a word ('WA' 'IT')
        ("Let's Try a Different Angle: use x.", ["Let's Try a Different Angle"]),  # mixed case, 6 tokens
        ("## Step 1: Compute the sum.", ["## Step"]),  # gram starting with punctuation; " 1" is not part of it
        ("x=2\n\nSo, yes: the answer is 4.", ["So, yes"]),
        ("Step-by-step reasoning follows.", ["Step-by-step reasoning"]),
        ("Let\u2019s check: 2+2=4.", ["Let\u2019s"]),  # typographic apostrophe, split into its own byte token
        ("The area is 12 square units.", []),
    ],
)
def test_paper_grams_mark_exactly_the_gram_tokens(tok, paper, text, expected):
    assert marked_runs(tok, paper, text) == expected


def test_words_containing_a_gram_are_not_marked(tok, paper):
    # " so" + "fa" is a real token split: the " so" token must not be marked.
    assert tok.convert_ids_to_tokens(encode(tok, " sofa")) == ["Ġso", "fa"]
    assert marked_runs(tok, paper, "We also ate butter on the sofa.") == []
    custom = StrategicGramDetector(tok, grams=["so", "but"])
    assert marked_runs(tok, custom, "also butter sofa; so, but") == [" so", " but"]


def test_multi_token_gram_marks_every_token_and_nothing_around(tok):
    det = StrategicGramDetector(tok, grams=["let's try a different approach"])
    ids = encode(tok, "So let's try a different approach now.")
    marks = det.mask(*one(ids))[0].tolist()
    assert marks == [False] + [True] * 6 + [False, False]
    assert tok.decode([i for i, m in zip(ids, marks) if m]) == " let's try a different approach"


def test_grams_next_to_partial_utf8_tokens(tok, paper):
    ids = encode(tok, "\U0001f600 wait \u4e2d\u6587 but")
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # the emoji is split into partial-byte tokens
    assert runs(tok, ids, paper.mask(*one(ids))[0].tolist()) == [" wait", " but"]


def test_whitespace_runs_inside_a_gram(tok):
    det = StrategicGramDetector(tok, grams=["let me   verify"])  # grams are whitespace-normalised too
    assert marked_runs(tok, det, "ok let\n  me verify it") == [" let\n  me verify"]


def test_words_joined_by_a_hyphen_are_the_same_phrase(tok, paper):
    """A policy that writes "Step-by-step" still plans: the paper's "step by step" marks it, and the paper's
    "let's double-check" marks "let's double check"; "3 - 2" stays arithmetic."""
    assert marked_runs(tok, paper, "Step-by-step: 3 + 4 = 7.")[0].startswith("Step-by-step")
    assert marked_runs(tok, paper, "Step by step: 3 + 4 = 7.")[0].startswith("Step by step")
    det = StrategicGramDetector(tok, grams=["let's double-check"])
    assert marked_runs(tok, det, "ok, let's double check it") == [" let's double check"]
    assert StrategicGramDetector(tok, grams=["step by step"]).occurrences(
        *one(encode(tok, "Step-by-step: 3 - 2 = 1.")))[0] == ["step by step"]  # one phrase, one spelling


# --- batches, padding, masks ---


def test_batch_with_padding_never_marks_padded_positions(tok, paper):
    texts = ["But wait, the sum is 4.", "Therefore x = 2.", "No planning here at all."]
    rows = [encode(tok, t) for t in texts]
    width = max(len(r) for r in rows) + 3
    wait_id = encode(tok, "Wait")[0]
    ids = torch.full((3, width), PAD)
    valid = torch.zeros(3, width, dtype=torch.bool)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r)
        ids[b, len(r)] = PAD  # EOS is generated, so it is a valid (empty) token
        valid[b, : len(r) + 1] = True
    ids[2, -1] = wait_id  # garbage after the response that decodes to a gram: outside the mask
    marks = paper.mask(ids, valid)
    assert marks.dtype == torch.bool and marks.shape == ids.shape
    assert not marks[~valid].any()
    assert not marks[torch.arange(3), torch.tensor([len(r) for r in rows])].any()  # EOS never marked
    assert runs(tok, ids[0].tolist(), marks[0].tolist()) == ["But wait"]
    assert runs(tok, ids[1].tolist(), marks[1].tolist()) == ["Therefore"]
    assert not marks[2].any()
    assert paper.occurrences(ids, valid) == [["but wait"], ["therefore"], []]


def test_masked_tokens_are_not_text(tok, paper):
    ids = encode(tok, "I think so")
    valid = torch.ones(1, len(ids), dtype=torch.bool)
    valid[0, -1] = False  # " so" is not part of the response
    assert not paper.mask(torch.tensor([ids]), valid).any()


def test_all_false_mask_marks_nothing(tok, paper):
    ids = torch.tensor([encode(tok, "But wait, let me check.")])
    none = torch.zeros_like(ids, dtype=torch.bool)
    assert not paper.mask(ids, none).any()
    assert paper.occurrences(ids, none) == [[]]


def test_integer_mask_equals_bool_mask(tok, paper):
    ids, valid = one(encode(tok, "Hmm, so the answer is 3."))
    assert torch.equal(paper.mask(ids, valid.long()), paper.mask(ids, valid))


def test_shape_mismatch_is_an_error(tok, paper):
    with pytest.raises(ValueError, match="shape"):
        paper.mask(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool))


def test_occurrences_list_the_matched_grams(tok, paper):
    ids, valid = one(encode(tok, "But wait, let me verify this. So after that, we can use the fact that x=2."))
    # "wait" and "we can" sit inside longer grams; "use the fact that" overlaps "we can use" and is kept
    expected = ["but wait", "let me verify", "so after", "we can use", "use the fact that"]
    assert paper.occurrences(ids, valid) == [expected]
    assert runs(tok, ids[0].tolist(), paper.mask(ids, valid)[0].tolist()) == [
        "But wait",
        " let me verify",
        " So after",
        " we can use the fact that",
    ]


def test_detector_flags(tok, paper):
    assert isinstance(paper, PlanningDetector)
    assert paper.marks_planning and not paper.needs_entropy


def test_batch_32_by_128_runs(tok, paper):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(17, len(tok), (32, 128), generator=gen)
    ids[::2, :40] = torch.tensor(encode(tok, "Wait, but let's try a different angle. " * 5)[:40])
    lengths = torch.randint(1, 129, (32,), generator=gen)
    valid = torch.arange(128)[None, :] < lengths[:, None]
    ids[~valid] = PAD
    marks = paper.mask(ids, valid)
    assert marks.shape == (32, 128) and not marks[~valid].any()
    assert marks[::2].any()
    assert len(paper.occurrences(ids, valid)) == 32


# --- grams: loading and custom lists ---


def test_paper_grams_are_package_data():
    grams = load_grams()
    assert len(grams) == 249
    assert grams[0] == "## step" and "but" in grams and "hmm," in grams
    assert all(g == g.lower().strip() for g in grams)


def test_custom_grams_and_grams_file(tok, tmp_path):
    path = tmp_path / "grams.txt"
    path.write_text("## Step\n\n  Let Me  \nlet me\nTHUS\n", encoding="utf-8")
    assert load_grams(str(path)) == ["## step", "let me", "thus"]  # no comment syntax; lower-cased; deduped
    det = StrategicGramDetector(tok, grams_path=str(path))
    assert marked_runs(tok, det, "## Step 1. Thus x, so y.") == ["## Step", " Thus"]
    det = StrategicGramDetector(tok, grams=["x, so"])
    assert marked_runs(tok, det, "## Step 1. Thus x, so y.") == [" x, so"]


def test_missing_grams_file_is_a_config_error(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(ConfigError, match=re.escape(str(missing))) as err:
        load_grams(str(missing))
    assert "\n" not in str(err.value) and "not found" in str(err.value)


def test_empty_grams_are_config_errors(tok, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no grams"):
        load_grams(str(empty))
    with pytest.raises(ConfigError, match="empty"):
        StrategicGramDetector(tok, grams=["  "])
    with pytest.raises(ConfigError, match="not both"):
        StrategicGramDetector(tok, grams=["so"], grams_path=str(empty))


# --- pure text matching ---


def test_overlapping_occurrences_are_all_covered():
    pattern = compile_grams(["but wait", "wait, let me", "wait"])
    assert find_gram_spans("but wait, let me see", pattern) == [(0, 8), (4, 16)]


def test_longest_gram_at_a_position_and_boundary_backtracking():
    pattern = compile_grams(["so", "so after"])
    assert find_gram_spans("so after all", pattern) == [(0, 8)]
    assert find_gram_spans("so aftermath", pattern) == [(0, 2)]  # the longer gram fails its right boundary
    assert find_gram_spans("also, sofa, so_x, so2, so", pattern) == [(23, 25)]


def test_punctuation_grams_and_boundaries():
    pattern = compile_grams(["## step", "hmm,", "does this make sense?"])
    text = "## Step 2. Hmm, fine. Does this make sense? x## step"
    spans = find_gram_spans(text, pattern)
    assert [text[a:b] for a, b in spans] == ["## Step", "Hmm,", "Does this make sense?"]


def _naive_covered(text, grams):
    """Reference: every character inside any occurrence of any gram, searching gram by gram."""
    covered = set()
    low = text.lower()
    for gram in grams:
        body = r"\s+".join(re.escape(w) for w in gram.split())
        for i in range(len(text)):
            m = re.compile(body).match(low, i)
            if m and (i == 0 or not re.match(r"\w", low[i - 1])) and not re.match(r"\w", low[m.end() :]):
                covered.update(range(i, m.end()))
    return covered


def test_spans_cover_exactly_what_a_naive_search_covers():
    grams = ["so", "so after", "but", "but wait", "wait, let me", "let me", "let me verify", "we can", "can use the"]
    words = ["so", "after", "but", "wait,", "let", "me", "verify", "we", "can", "use", "the", "also", "x", "\n"]
    rng = random.Random(0)
    pattern = compile_grams(grams)
    for _ in range(50):
        text = " ".join(rng.choice(words) for _ in range(40))
        spans = find_gram_spans(text, pattern)
        assert {c for a, b in spans for c in range(a, b)} == _naive_covered(text, grams)
        assert all(a < b for a, b in spans) and [a for a, _ in spans] == sorted(a for a, _ in spans)


# --- token offsets from the sampled ids ---


def test_offsets_agree_with_the_tokenizer_offsets_on_ascii(tok):
    table = TokenText(tok)
    for text in ["Hmm, let me think.\nWait, but ## Step 1 is x = 12.", "  two  spaces\tand tabs\n\nend"]:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        joined, starts, ends = table.spans(torch.tensor(enc.input_ids))
        assert joined == text
        assert list(zip(starts.tolist(), ends.tolist())) == [tuple(o) for o in enc.offset_mapping]


def test_joined_pieces_equal_decode_even_for_partial_bytes(tok):
    table = TokenText(tok)
    ids = encode(tok, "caf\u00e9 \U0001f600 \u4e2d\u6587 done") + [PAD, 0, 1]
    text, starts, ends = table.spans(torch.tensor(ids))
    assert text == tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert ends[-1].item() == len(text) and torch.equal(starts[1:], ends[:-1])
    assert (ends[-3:] == starts[-3:]).all()  # special tokens contribute no text
    rng = random.Random(1)
    for _ in range(20):
        ids = [rng.randrange(len(tok)) for _ in range(64)]
        text, _, ends = table.spans(torch.tensor(ids))
        assert text == tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        assert ends[-1].item() == len(text)
