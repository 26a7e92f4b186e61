"""Pure parts of Strategic-Gram mining: tokenisation, DF, Cluster DF, selection (no model)."""

from __future__ import annotations

import re

from hicra.grams.mining import (
    cluster_document_frequency,
    document_frequency,
    ngrams,
    prefilter,
    select_clusters,
    selected_grams,
    word_runs,
)
from hicra.planning.strategic_grams import compile_grams, find_gram_spans, load_grams


def test_sentence_breaks_end_runs():
    assert word_runs("We can see it. Then we stop!\nNext line? yes") == [
        ["we", "can", "see", "it"], ["then", "we", "stop"], ["next", "line"], ["yes"]]
    assert ngrams("one two. three four five", 3, 3) == ["three four five"]
    assert ngrams("one two\nthree four", 3, 5) == []


def test_other_punctuation_ends_runs_too():
    # the matcher would never find "so let's try" in "so, let's try": a comma also ends a run
    assert ngrams("So, let's try again (carefully) now", 3, 3) == ["let's try again"]


def test_apostrophes_case_and_whitespace():
    assert ngrams("LET'S  Try\tIt", 3, 3) == ["let's try it"]
    assert ngrams("Let\u2019s try it", 3, 3) == ["let's try it"]  # typographic apostrophe
    assert word_runs("'quoted words' here") == [["quoted", "words"], ["here"]]
    assert word_runs("x_1 plus y2") == [["x_1", "plus", "y2"]]


def test_all_lengths_in_range():
    assert ngrams("a b c d", 3, 4) == ["a b c", "b c d", "a b c d"]
    assert ngrams("a b c d", 5, 5) == []


def test_document_frequency_counts_documents_not_occurrences():
    df = document_frequency(["we can see. we can see.", "we can see", "nothing here at all"], 3, 3)
    assert df["we can see"] == 2 and df["nothing here at"] == 1


def test_prefilter_min_df_cap_and_order():
    df = {"b b b": 3, "a a a": 3, "c c c": 5, "d d d": 1}
    assert prefilter(df, 2, 10) == ["c c c", "a a a", "b b b"]
    assert prefilter(df, 2, 2) == ["c c c", "a a a"]


def test_cluster_document_frequency_hand_case():
    labels = {"we can see": 0, "we know that": 0, "let's try it": 1, "so the answer": 2}
    docs = [
        {"we can see", "we know that"},  # cluster 0 once, although two of its grams occur
        {"we can see", "let's try it"},
        {"so the answer", "unlabelled gram"},
        set(),
    ]
    assert cluster_document_frequency(docs, labels) == {0: 2, 1: 1, 2: 1}


def test_selection_top_fraction_ties_and_order():
    members = {0: ["we can see", "we know that"], 1: ["let's try it"], 2: ["so the answer"], 3: ["a b c"],
               4: ["z z z"]}
    cdf = {0: 5, 1: 3, 2: 3, 3: 1}  # cluster 4 never occurs
    assert select_clusters(cdf, members, 0.2) == [0]
    assert select_clusters(cdf, members, 0.4) == [0, 1]  # tie 1/2 broken by first gram: "let's" < "so"
    assert select_clusters(cdf, members, 0.01) == [0]  # at least one
    assert selected_grams([0, 1], members, cdf) == ["we can see", "we know that", "let's try it"]


def test_every_ngram_is_found_by_the_matcher_in_its_source(solutions):
    text = " ".join(solutions) + " Hmm, so, let's see: x_1 + y's value?! Don't stop\u2019s"
    for gram in set(ngrams(text, 3, 5)):
        assert find_gram_spans(text, compile_grams([gram])), gram
        assert load_grams is not None  # the gram is already in load_grams' normal form:
        assert gram == " ".join(gram.split()).lower()
        assert not re.search(r"[.,!?\n]", gram)


def test_drop_answer_sentence_keeps_the_work_and_leaves_no_run_across_the_gap():
    from hicra.grams.mining import drop_answer_sentence

    reply = "Step by step: 7 + 4 = 11, 11 + 8 = 19. The answer is \\boxed{19}."
    assert drop_answer_sentence(reply) == "Step by step: 7 + 4 = 11, 11 + 8 = 19."
    assert drop_answer_sentence("The answer is \\boxed{16}.") == ""
    assert drop_answer_sentence("no box here. the answer is 3") == "no box here. the answer is 3"
    # a sentence between two kept ones goes, and the kept ones do not join into one run of words
    text = "we can use the fact. so the answer is \\boxed{4}. then check it"
    assert ngrams(drop_answer_sentence(text), 3, 3) == ["we can use", "can use the", "use the fact", "then check it"]
