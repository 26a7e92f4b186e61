"""Data contracts of local files: validation is held out of training (repeated questions included), field values
that are not strings follow documented rules or are refused in one line, and a byte-order mark is no obstacle."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest

from hicra.errors import ConfigError
from hicra.tasks import EvalFileTask, LocalFileTask


def write_jsonl(path, records, encoding="utf-8"):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding=encoding)
    return str(path)


def questions(examples):
    return [ex.question for ex in examples]


# --- held out means held out ---


def test_a_repeated_question_is_held_out_with_all_its_rows(tmp_path):
    # 10 questions, each written 3 times (one with extra whitespace): every split holds a question whole
    rows = [{"question": f"What is {i} + {i}?" if k else f"What  is {i} +\n{i}?", "answer": str(2 * i)}
            for i in range(10) for k in range(3)]
    path = write_jsonl(tmp_path / "dupes.jsonl", rows)
    for seed in range(5):
        task = LocalFileTask(path, val_size=4, seed=seed)
        train, val = task.train_examples(), task.val_examples()
        held_out = {" ".join(q.split()) for q in questions(val)}
        assert len(val) == len(held_out) == 4  # each validation question once
        assert not held_out & {" ".join(q.split()) for q in questions(train)}
        assert len(train) == 3 * 6  # the other six questions, every row of each


def test_a_file_without_repeats_splits_as_before(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": f"q{i}", "answer": str(i)} for i in range(20)])
    task = LocalFileTask(path, val_size=5, seed=3)
    # the rows a seeded shuffle of row indices holds out (the split before repeats were handled)
    order = list(range(20))
    random.Random(3).shuffle(order)
    assert questions(task.val_examples()) == [f"q{i}" for i in sorted(order[:5])]


def test_val_path_questions_leave_training(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"question": f"q{i}", "answer": str(i)} for i in range(6)])
    val = write_jsonl(tmp_path / "val.jsonl", [{"question": q, "answer": "1"} for q in ("q1", "q4", " q4 ", "new")])
    task = LocalFileTask(train, val_path=val)
    assert questions(task.val_examples()) == ["q1", "q4", "new"]
    assert questions(task.train_examples()) == ["q0", "q2", "q3", "q5"]


def test_val_path_covering_every_training_question_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "same.jsonl", [{"question": "q", "answer": "1"}])
    with pytest.raises(ConfigError, match="nothing is left to train on") as err:
        LocalFileTask(path, val_path=path).train_examples()
    assert "\n" not in str(err.value)


# --- non-string fields ---


@pytest.mark.parametrize(("answer", "reference"), [
    (7, "7"), (7.0, "7"), (-2.5, "-2.5"), (1e20, "100000000000000000000"), (1e-7, "0.0000001"), ("007", "007"),
])
def test_numbers_are_written_in_plain_decimal_notation(tmp_path, answer, reference):
    task = LocalFileTask(write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": answer}]), val_size=0)
    assert task.train_examples()[0].answer == reference


def test_a_parquet_float_column_of_whole_numbers_reads_as_integers(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"question": ["a", "b"], "answer": [1.0, 3.0]}).to_parquet(path)  # e.g. an int column that had gaps
    assert [ex.answer for ex in LocalFileTask(str(path), val_size=0).train_examples()] == ["1", "3"]


@pytest.mark.parametrize(("answer", "message"), [
    (True, "key 'answer' holds a bool (true)"),
    ([1, 2], "key 'answer' holds a list ([1, 2])"),
    ({"value": 3}, 'key \'answer\' holds a dict ({"value": 3})'),
    (float("inf"), "key 'answer' holds a non-finite number (Infinity)"),
])
def test_other_answers_are_refused_in_one_line(tmp_path, answer, message):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": 1}, {"question": "r", "answer": answer}])
    for task in (LocalFileTask(path, val_size=0), EvalFileTask(path)):
        with pytest.raises(ConfigError) as err:
            task.val_examples()
        assert str(err.value) == (f"data file '{path}' line 2: {message}; allowed: a string or a finite number "
                                  "(write any other answer as the text the model should box)")


def test_a_list_question_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": ["a", "b"], "answer": "1"}])
    with pytest.raises(ConfigError, match="line 1: key 'question' holds a list"):
        LocalFileTask(path, val_size=0).train_examples()


def test_a_nan_answer_is_named_nan_not_missing(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": 1}, {"question": "r", "answer": float("nan")}])
    parquet = tmp_path / "d.parquet"
    pd.DataFrame({"question": ["a", "b"], "answer": [1.0, None]}).to_parquet(parquet)  # a number column's gap
    for task, where in ((LocalFileTask(path, val_size=0), "line 2"), (EvalFileTask(path), "line 2"),
                        (EvalFileTask(str(parquet)), "row 2")):
        with pytest.raises(ConfigError) as err:
            task.val_examples()
        assert f"' {where}: key 'answer' holds NaN, which is not an answer" in str(err.value), err.value
        assert "missing" not in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_an_integer_of_5000_digits_is_an_answer_like_any_other(tmp_path, suffix):
    digits = "7" * 5000  # more than Python converts to int (4300): json.loads raised a ValueError
    path = tmp_path / f"d{suffix}"
    record = '{"question": "q", "answer": ' + digits + "}"
    path.write_text(f"[{record}]" if suffix == ".json" else record + "\n")
    task = EvalFileTask(str(path))
    (example,) = task.val_examples()
    assert example.answer == digits
    assert task.score(f"\\boxed{{{digits}}}", example) == 1.0 and task.score("\\boxed{7}", example) == 0.0


@pytest.mark.parametrize("key", ["question", "answer"])
def test_a_lone_surrogate_is_refused_naming_file_line_and_key(tmp_path, key):
    """A JSON "\\ud800" escape without its pair decodes to no character: the tokenizer (and UTF-8) cannot carry it."""
    record = {"question": "What is 1 + 1?", "answer": "2"} | {key: "before \ud800 after"}
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "ok", "answer": "1"}, record])
    for task in (LocalFileTask(path, val_size=0), EvalFileTask(path)):
        with pytest.raises(ConfigError) as err:
            task.val_examples()
        assert str(err.value).startswith(f"data file '{path}' line 2: key '{key}' holds a lone surrogate ('\\ud800' "
                                         "at character 7), which is not text; allowed: valid Unicode"), err.value


# --- encodings ---


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_byte_order_mark_is_skipped(tmp_path, suffix):
    path = tmp_path / f"bom{suffix}"
    records = [{"question": "q0", "answer": "1"}, {"question": "q1", "answer": "2"}]
    text = json.dumps(records) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in records)
    path.write_text(text, encoding="utf-8-sig")
    assert questions(LocalFileTask(str(path), val_size=0).train_examples()) == ["q0", "q1"]
