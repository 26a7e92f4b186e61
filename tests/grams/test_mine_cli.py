"""`hicra-grams mine` end to end with the real MiniLM model on a small corpus, and every bad-input case."""

from __future__ import annotations

import json

import pytest
import torch

from hicra.grams.cli import main
from hicra.planning.strategic_grams import StrategicGramDetector, compile_grams, find_gram_spans, load_grams

SMALL = ["--min-df", "2", "--no-progress", "--seed", "3"]


def mine(tmp_path, name, *args):
    out = tmp_path / name
    main(["mine", *args, *SMALL, "--out", str(out)])
    return out


def test_mining_is_deterministic_and_writes_a_loadable_file(tmp_path, solutions_jsonl, capsys):
    first = mine(tmp_path, "a.txt", "--jsonl", str(solutions_jsonl))
    second = mine(tmp_path, "b.txt", "--jsonl", str(solutions_jsonl))
    grams = first.read_text().splitlines()
    assert grams and grams == second.read_text().splitlines()
    assert load_grams(str(first)) == grams  # the planner's grams_path reads it unchanged
    report = json.loads((tmp_path / "a.report.json").read_text())
    assert report["corpus"]["solutions"] == 30 and report["counts"]["grams_written"] == len(grams)
    assert report["clusters_kept"] and report["parameters"]["seed"] == 3
    out = capsys.readouterr().out
    assert "solutions: 30" in out and "overlap with the paper's" in out
    assert "grams written" in out and "after DF filter" in out


def test_mined_grams_round_trip_through_the_detector(tmp_path, solutions_jsonl, solutions, smollm2_tokenizer):
    out = mine(tmp_path, "grams.txt", "--jsonl", str(solutions_jsonl))
    grams = out.read_text().splitlines()
    detector = StrategicGramDetector(smollm2_tokenizer, grams_path=str(out))
    corpus = "\n".join(solutions)
    for gram in grams:
        assert find_gram_spans(corpus, compile_grams([gram])), f"{gram!r} is not in the corpus it came from"
        text = f"Okay. {gram.capitalize()} and more."
        ids = torch.tensor([smollm2_tokenizer(text, add_special_tokens=False)["input_ids"]])
        mask = detector.mask(ids, torch.ones_like(ids, dtype=torch.bool))
        assert mask.any(), gram
        assert gram in detector.occurrences(ids, torch.ones_like(ids, dtype=torch.bool))[0]


def test_agglomerative_and_explicit_k(tmp_path, solutions_jsonl):
    out = mine(tmp_path, "agg.txt", "--jsonl", str(solutions_jsonl), "--clusterer", "agglomerative",
               "--clusters", "5", "--top-fraction", "0.4")
    report = json.loads((tmp_path / "agg.report.json").read_text())
    assert report["counts"]["clusters"] == 5 and report["counts"]["clusters_kept"] == 2
    assert out.read_text().splitlines()


def test_mlflow_run_corpus(tmp_path, mlflow_store):
    uri, with_corpus, _ = mlflow_store
    out = mine(tmp_path, "run.txt", "--mlflow-run", with_corpus, "--tracking-uri", uri, "--limit", "25")
    assert json.loads((tmp_path / "run.report.json").read_text())["corpus"]["solutions"] == 25
    assert out.read_text().splitlines()


def test_champ_corpus_loads_human_solutions():
    from hicra.grams.corpus import read_champ

    texts = read_champ()
    assert len(texts) == 270 and all(t.strip() for t in texts)
    assert len(read_champ(limit=7)) == 7


def _fails(capsys, args, *fragments):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("hicra-grams: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_inputs(tmp_path, capsys):
    out = ["--out", str(tmp_path / "g.txt")]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    short = tmp_path / "short.jsonl"
    short.write_text('{"text": "Yes."}\n{"text": "So two."}\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine text here"}\n{"text": oops}\n')
    nokey = tmp_path / "nokey.jsonl"
    nokey.write_text('{"solution": "fine text here"}\n')
    _fails(capsys, ["mine", "--jsonl", str(empty), *out], "corpus is empty")
    _fails(capsys, ["mine", "--jsonl", str(short), *out], "no 3-to-5-word n-gram")
    _fails(capsys, ["mine", "--jsonl", str(tmp_path / "missing.jsonl"), *out], "not found", "missing.jsonl")
    _fails(capsys, ["mine", "--jsonl", str(bad), *out], f"{bad}:2:", "malformed JSON")
    _fails(capsys, ["mine", "--jsonl", str(nokey), *out], f"{nokey}:1:", "'text'")
    _fails(capsys, ["mine", "--jsonl", str(short), "--min-n", "4", "--max-n", "3", *out], "--min-n=4", "--max-n=3")
    _fails(capsys, ["mine", *out], "one of the arguments")
    _fails(capsys, ["mine", "--champ", "--jsonl", str(short), *out], "not allowed with")
    _fails(capsys, ["mine", "--champ", "--top-fraction", "1.5", *out], "--top-fraction")
    _fails(capsys, ["mine", "--champ", "--min-df", "0", *out], "--min-df")
    _fails(capsys, ["mine", "--champ", "--min-df", "1000", *out], "--min-df=1000")
    _fails(capsys, ["mine", "--mlflow-run", "abc", "--tracking-uri", f"sqlite:///{tmp_path}/none.db", *out],
           "tracking store not found")
    assert not (tmp_path / "g.txt").exists()


def test_bad_mlflow_runs(tmp_path, capsys, mlflow_store):
    uri, _, without = mlflow_store
    out = ["--out", str(tmp_path / "g.txt")]
    _fails(capsys, ["mine", "--mlflow-run", "0123456789abcdef", "--tracking-uri", uri, *out],
           "run '0123456789abcdef' not found")
    _fails(capsys, ["mine", "--mlflow-run", without, "--tracking-uri", uri, *out],
           f"run '{without}' has no artifact corpus/correct_completions.jsonl")


def test_drop_answer_sentence_keeps_the_plan_phrase_instead_of_the_answer_form(tmp_path):
    """Short replies that plan or not, all ending in the demonstrated answer sentence (experiment=planning_sum's
    form): on frequency alone "the answer is" wins; without the answer sentence only the plan phrase is left (one
    n-gram: one cluster, not an error)."""
    planned = [f"Step by step: {a} + 1 = {a + 1}, {a + 1} + 2 = {a + 3}. The answer is \\boxed{{{a + 3}}}."
               for a in range(6)]
    direct = [f"The answer is \\boxed{{{a}}}." for a in range(6)]
    corpus = tmp_path / "replies.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in planned + direct))
    plain = mine(tmp_path, "plain.txt", "--jsonl", str(corpus), "--top-fraction", "0.5")
    assert plain.read_text().splitlines() == ["the answer is"]
    dropped = mine(tmp_path, "dropped.txt", "--jsonl", str(corpus), "--drop-answer-sentence")
    assert dropped.read_text().splitlines() == ["step by step"]
    report = json.loads((tmp_path / "dropped.report.json").read_text())
    assert report["corpus"]["solutions"] == 6 and report["parameters"]["drop_answer_sentence"] is True


def test_the_shipped_mined_list_is_what_its_committed_corpus_mines_to(tmp_path):
    """bundled://strategic_grams_four_term_sum.txt (the study's hicra_mined arm) from the GRPO replies it came from."""
    from pathlib import Path

    root = Path(__file__).parents[2]
    corpus = root / "experiments" / "hicra_vs_grpo" / "mined" / "corpus.jsonl"
    out = tmp_path / "mined.txt"
    main(["mine", "--jsonl", str(corpus), "--drop-answer-sentence", "--no-progress", "--out", str(out)])
    assert out.read_text().splitlines() == load_grams("bundled://strategic_grams_four_term_sum.txt") == ["step by step"]
