"""The paper's Placebo HICRA list (`hicra-grams placebo`): random n-grams of the task's completions, as many of each
word length as the grams they replace, drawn with a seed, found again by the matcher; and the shipped chain_sum list."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from hicra.errors import ConfigError
from hicra.grams.cli import main
from hicra.grams.mining import document_frequency
from hicra.grams.placebo import draw_placebo_grams, word_length
from hicra.planning.strategic_grams import compile_grams, find_gram_spans, load_grams

REFERENCE = ["so", "let me", "hmm,", "we can see", "## step"]  # word lengths 1, 2, 1, 3, 1


def test_word_length_counts_words_as_mining_does():
    assert [word_length(g) for g in REFERENCE] == [1, 2, 1, 3, 1]


def test_draw_matches_the_reference_lengths_and_stays_in_the_frequent_pool(solutions):
    grams, report = draw_placebo_grams(solutions, REFERENCE, seed=0, min_df=2)
    assert {n: v["wanted"] for n, v in report.items()} == {1: 3, 2: 1, 3: 1}
    assert Counter(word_length(g) for g in grams) == Counter({1: 3, 2: 1, 3: 1})  # the pools are large enough
    assert "so" not in grams  # a reference gram is never its own placebo
    for gram in grams:
        n = word_length(gram)
        assert document_frequency(solutions, n, n)[gram] >= 2  # frequent, as a mined gram would be
    text = "\n".join(solutions)
    assert all(find_gram_spans(text, compile_grams([g])) for g in grams)  # the matcher finds every drawn gram


def test_draw_is_seeded(solutions):
    first, _ = draw_placebo_grams(solutions, REFERENCE, seed=0, min_df=2)
    assert draw_placebo_grams(solutions, REFERENCE, seed=0, min_df=2)[0] == first
    assert any(draw_placebo_grams(solutions, REFERENCE, seed=s, min_df=2)[0] != first for s in range(1, 6))


def test_a_short_pool_gives_fewer_grams_and_says_so():
    grams, report = draw_placebo_grams(["a b", "a b", "a b c"], ["b", "y z", "u v w"], seed=0, min_df=3)
    assert grams == ["a", "a b"]  # "b" is a reference gram, "c" and "b c" are too rare; no 3-word run is frequent
    assert report == {1: {"wanted": 1, "drawn": 1, "pool": 1}, 2: {"wanted": 1, "drawn": 1, "pool": 1},
                      3: {"wanted": 1, "drawn": 0, "pool": 0}}


def test_cli_writes_the_list_and_its_report(tmp_path, solutions_jsonl, capsys):
    out = tmp_path / "placebo.txt"
    main(["placebo", "--jsonl", str(solutions_jsonl), "--min-df", "2", "--seed", "1", "--out", str(out)])
    grams = out.read_text().splitlines()
    assert grams
    assert load_grams(str(out)) == grams  # planner.grams_path reads it unchanged
    report = json.loads((tmp_path / "placebo.report.json").read_text())
    assert report["seed"] == 1 and report["grams_written"] == len(grams) and report["corpus"]["texts"] == 30
    assert sum(v["wanted"] for v in report["by_word_length"].values()) == 249
    assert "placebo grams:" in capsys.readouterr().out


def test_cli_bad_min_df_is_one_line(tmp_path, solutions_jsonl, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["placebo", "--jsonl", str(solutions_jsonl), "--min-df", "1000", "--out", str(tmp_path / "p.txt")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--min-df=1000" in err[0]


def test_the_shipped_chain_sum_list_loads_as_a_bundled_file():
    grams = load_grams("bundled://placebo_grams_chain_sum.txt")
    assert "so the answer is" in grams and "so" not in grams  # drawn from chain_sum replies, never a paper gram
    with pytest.raises(ConfigError, match="no bundled gram file 'nope.txt'; allowed: .*bundled://strategic_grams"):
        load_grams("bundled://nope.txt")
