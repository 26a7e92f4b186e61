"""The paper's Placebo HICRA list (`hicra-grams placebo`): random n-grams of the task's completions that neither
contain nor overlap a Strategic Gram, drawn with a seed until they mark the grams' share of tokens (counted with the
detector's own tokens), none of the tokens the grams mark; and the shipped chain_sum list, re-measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hicra.errors import ConfigError
from hicra.grams.cli import main
from hicra.grams.mining import document_frequency
from hicra.grams.placebo import draw_placebo_grams, marked_tokens, overlapping_ngrams, tokenize, word_length
from hicra.planning.strategic_grams import StrategicGramDetector, compile_grams, find_gram_spans, load_grams

REFERENCE = ["so", "let me", "hmm,", "we can see", "## step"]  # word lengths 1, 2, 1, 3, 1


@pytest.fixture(scope="module")
def responses(solutions, smollm2_tokenizer):
    return tokenize(solutions, smollm2_tokenizer)


def test_word_length_counts_words_as_mining_does():
    assert [word_length(g) for g in REFERENCE] == [1, 2, 1, 3, 1]


def test_tokenized_responses_are_what_the_detector_reads(responses, solutions, smollm2_tokenizer):
    assert [r.text for r in responses] == solutions  # plain ASCII decodes back unchanged
    detector = StrategicGramDetector(smollm2_tokenizer, grams=REFERENCE)
    expected = []
    for text in solutions:
        ids = torch.tensor([smollm2_tokenizer(text, add_special_tokens=False)["input_ids"]])
        expected.append(detector.mask(ids, torch.ones_like(ids, dtype=torch.bool))[0])
    assert torch.equal(marked_tokens(responses, REFERENCE), torch.cat(expected))


def test_an_ngram_sharing_a_word_with_a_gram_match_overlaps_it(smollm2_tokenizer):
    responses = tokenize(["Well, we can see that it works.", "we can go"], smollm2_tokenizer)
    pattern = compile_grams(["we can see"])
    spans = [find_gram_spans(r.text, pattern) for r in responses]
    tainted = overlapping_ngrams(responses, spans, {1, 2})
    # "we can" holds words of the match in the first text, so it is out even where it occurs without "see" (text 2)
    assert tainted == {"we", "can", "see", "we can", "can see", "see that"}
    assert "well" not in tainted and "that it" not in tainted  # "well," ends its run; "that it" touches no match


def test_the_draw_matches_the_grams_share_and_marks_none_of_their_tokens(responses, smollm2_tokenizer):
    draw = draw_placebo_grams(responses, REFERENCE, seed=0, min_df=2, tolerance=0.1)
    assert draw.gram_tokens > 0 and draw.within(0.1)
    assert abs(draw.placebo_tokens - draw.gram_tokens) <= 0.1 * draw.gram_tokens
    placebo, grams = marked_tokens(responses, draw.grams), marked_tokens(responses, REFERENCE)
    assert int(placebo.sum()) == draw.placebo_tokens and draw.tokens == placebo.numel()  # the detector's own count
    assert not (placebo & grams).any() and draw.both_tokens == 0  # disjoint from what HICRA marks
    pattern = compile_grams(REFERENCE)
    texts = [r.text for r in responses]
    for gram in draw.grams:
        assert not find_gram_spans(gram, pattern)  # holds no Strategic Gram ("so the answer is" is out)
        assert "so" not in gram.split()  # "so" matches in every text: an n-gram with it always overlaps a match
        assert document_frequency(texts, word_length(gram), word_length(gram))[gram] >= 2  # frequent
    assert draw.excluded > 0  # "so the answer is", "so the", ... were candidates
    assert draw.grams == sorted(draw.grams, key=lambda g: (word_length(g), g))


def test_the_draw_is_seeded(responses):
    first = draw_placebo_grams(responses, REFERENCE, seed=0, min_df=2).grams
    assert draw_placebo_grams(responses, REFERENCE, seed=0, min_df=2).grams == first
    assert any(draw_placebo_grams(responses, REFERENCE, seed=s, min_df=2).grams != first for s in range(1, 6))


def test_a_corpus_without_enough_free_ngrams_falls_short(smollm2_tokenizer):
    # every word but "so" sits in a gram match: the only candidates are rare, nothing can match the share
    responses = tokenize(["so we can see it", "so we can see it", "so we can see this"], smollm2_tokenizer)
    draw = draw_placebo_grams(responses, ["so", "we can see"], seed=0, min_df=2)
    assert draw.grams == ["it"] and draw.placebo_tokens < draw.gram_tokens and not draw.within(0.1)
    assert draw.by_word_length == {1: {"reference": 1, "pool": 1, "drawn": 1}, 3: {"reference": 1, "pool": 0,
                                                                                    "drawn": 0}}


def test_cli_writes_the_list_and_its_shares(tmp_path, solutions_jsonl, capsys):
    out = tmp_path / "placebo.txt"
    main(["placebo", "--jsonl", str(solutions_jsonl), "--min-df", "2", "--seed", "1", "--out", str(out)])
    grams = out.read_text().splitlines()
    assert grams and load_grams(str(out)) == grams  # planner.grams_path reads it unchanged
    report = json.loads((tmp_path / "placebo.report.json").read_text())
    marked = report["marked_tokens"]
    assert report["seed"] == 1 and report["grams_written"] == len(grams) and report["corpus"]["texts"] == 30
    assert abs(marked["placebo"]["tokens"] - marked["grams"]["tokens"]) <= 0.1 * marked["grams"]["tokens"]
    assert marked["both"] == 0 and report["tokenizer"] == "bundled://smollm2-135m-instruct"
    assert sum(v["reference"] for v in report["by_word_length"].values()) == 249
    printed = capsys.readouterr().out
    assert "placebo grams:" in printed and f"grams {marked['grams']['share']:.2%}" in printed


@pytest.mark.parametrize("args,fragment", [
    (["--min-df", "1000"], "--min-df=1000"),  # no candidate is that frequent: the share cannot be matched
    (["--tolerance", "0"], "--tolerance=0 is invalid"),
    (["--grams", "{grams}"], "the reference grams mark no token"),
])
def test_cli_bad_input_is_one_line(args, fragment, tmp_path, solutions_jsonl, capsys):
    (tmp_path / "absent.txt").write_text("xylophone\n")
    args = [a.format(grams=tmp_path / "absent.txt") for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(["placebo", "--jsonl", str(solutions_jsonl), *args, "--out", str(tmp_path / "p.txt")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]
    assert not (tmp_path / "p.txt").exists()


@pytest.mark.parametrize("dataset,corpus", [("chain_sum", "experiments/hicra_vs_grpo/placebo/corpus.jsonl"),
                                            ("basic_arithmetic", "experiments/hicra_vs_grpo/mined/corpus.jsonl")])
def test_each_shipped_list_marks_the_grams_share_of_its_corpus(dataset, corpus, smollm2_tokenizer):
    root = Path(__file__).parents[2]
    grams = load_grams(f"bundled://placebo_grams_{dataset}.txt")
    report = json.loads((root / "hicra" / "planning" / "data" / f"placebo_grams_{dataset}.report.json").read_text())
    assert report["corpus"]["source"] == f"jsonl:{corpus}"
    texts = [json.loads(line)["text"] for line in (root / corpus).read_text().splitlines()]
    responses = tokenize(texts, smollm2_tokenizer)
    placebo, paper = marked_tokens(responses, grams), marked_tokens(responses, load_grams(None))
    marked = report["marked_tokens"]  # the report's numbers are what the detector measures today
    assert (int(placebo.sum()), int(paper.sum()), placebo.numel()) == \
        (marked["placebo"]["tokens"], marked["grams"]["tokens"], marked["tokens"])
    assert abs(int(placebo.sum()) - int(paper.sum())) <= report["tolerance"] * int(paper.sum())
    assert not (placebo & paper).any()  # the old list held "so the answer is": everything HICRA marked and more
    assert not any(find_gram_spans(g, compile_grams(load_grams(None))) for g in grams)
    with pytest.raises(ConfigError, match="no bundled gram file 'nope.txt'; allowed: .*bundled://strategic_grams"):
        load_grams("bundled://nope.txt")
