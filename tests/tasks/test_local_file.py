import json
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from hicra.errors import ConfigError
from hicra.tasks import LocalFileTask


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def numbered(n):
    return [{"question": f"q{i}", "answer": f"step {i} ... #### {i}"} for i in range(n)]


def test_jsonl_gsm8k_answers_keep_the_part_after_hashes(tmp_path):
    task = LocalFileTask(write_jsonl(tmp_path / "gsm8k.jsonl", numbered(10)), val_size=3)
    examples = task.train_examples() + task.val_examples()
    assert sorted(ex.answer for ex in examples) == sorted(str(i) for i in range(10))
    assert task.name == "gsm8k"


def test_math_style_solutions_reduce_to_their_box(tmp_path):
    records = [
        {"problem": "Half of one?", "solution": "It is $\\boxed{\\frac{1}{2}}$."},
        {"problem": "p", "solution": 7},
    ]
    task = LocalFileTask(write_jsonl(tmp_path / "math.json", records), "problem", "solution", val_size=0)
    assert [ex.answer for ex in task.train_examples()] == ["\\frac{1}{2}", "7"]


def test_parquet_and_custom_keys(tmp_path):
    path = tmp_path / "data.parquet"
    pd.DataFrame({"prompt": ["a", "b", "c"], "target": [1, 2, 3]}).to_parquet(path)
    task = LocalFileTask(str(path), question_key="prompt", answer_key="target", val_size=1)
    assert len(task.train_examples()) == 2 and len(task.val_examples()) == 1
    assert {ex.answer for ex in task.train_examples() + task.val_examples()} == {"1", "2", "3"}


def test_json_array_file(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(numbered(4), indent=1))
    assert len(LocalFileTask(str(path), val_size=1).train_examples()) == 3


@pytest.mark.parametrize(
    ("gold", "completion", "score"),
    [
        ("\\frac{1}{2}", "so \\boxed{0.5}", 1.0),
        ("0.5", "\\boxed{\\frac12}", 1.0),
        ("1000", "\\boxed{1,000}", 1.0),
        ("42", "\\boxed{42.0}", 1.0),
        ("\\sqrt{2}/2", "\\boxed{\\frac{\\sqrt{2}}{2}}", 1.0),
        ("18", "\\boxed{\\$18}", 1.0),
        ("42", "\\boxed{43}", 0.0),
        ("42", "the answer is 42", 0.0),
        ("42", "\\boxed{\\frac{}{}}", 0.0),
    ],
)
def test_math_verify_scoring(tmp_path, gold, completion, score):
    task = LocalFileTask(write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": gold}]), val_size=0)
    assert task.score(completion, task.train_examples()[0]) == score


def test_holdout_split_is_disjoint_seeded_and_keeps_one_train_row(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", numbered(50))

    def split(seed, val_size=10):
        task = LocalFileTask(path, val_size=val_size, seed=seed)
        return [e.question for e in task.train_examples()], [e.question for e in task.val_examples()]

    train, val = split(0)
    assert len(val) == 10 and len(train) == 40 and not set(train) & set(val)
    assert split(0) == (train, val) and split(1)[1] != val
    assert len(split(0, val_size=500)[0]) == 1


def test_val_path(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", numbered(5))
    val = write_jsonl(tmp_path / "val.jsonl", numbered(2))
    task = LocalFileTask(train, val_path=val)
    assert len(task.train_examples()) == 3 and len(task.val_examples()) == 2  # q0, q1 are held out of training


def expect_error(message, path, **kwargs):
    with pytest.raises(ConfigError) as err:
        LocalFileTask(str(path), **kwargs).train_examples()
    assert str(err.value) == message.format(path=path)


def test_missing_file(tmp_path):
    expect_error("data file '{path}' does not exist", tmp_path / "nope.jsonl")
    good = write_jsonl(tmp_path / "d.jsonl", numbered(3))
    with pytest.raises(ConfigError, match="data file '.*missing.jsonl' does not exist"):
        LocalFileTask(good, val_path=str(tmp_path / "missing.jsonl"))


def test_bad_json_line_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "a", "answer": "1"}\n\n{"question": "b", "answer": \n')
    expect_error("data file '{path}' line 3: not valid JSON (Expecting value)", path)


def test_non_object_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("[1, 2]\n")
    expect_error("data file '{path}' line 1: expected a JSON object, got list", path)


def test_missing_key_names_line_and_keys(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "a", "answer": "1"}, {"question": "b", "solution": "2"}])
    expect_error("data file '{path}' line 2: missing key 'answer' (keys: question, solution)", path)


def test_missing_parquet_column_names_the_row(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"question": ["a"], "label": ["1"]}).to_parquet(path)
    expect_error("data file '{path}' row 1: missing key 'answer' (keys: question, label)", path)


def test_empty_file(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n")
    expect_error("data file '{path}' is empty: expected one JSON object per line or a non-empty table", path)


def test_empty_answer(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "a", "answer": "work #### "}])
    expect_error("data file '{path}' line 1: key 'answer' has no final answer", path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("question,answer\n")
    expect_error("data file '{path}' has unsupported suffix '.csv'; allowed: .jsonl, .json, .parquet", path)


def test_scoring_works_off_the_main_thread(tmp_path):
    # math-verify's default timeout uses SIGALRM, which raises outside the main thread (e.g. in a reward pool).
    task = LocalFileTask(write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "\\frac{3}{4}"}]), val_size=0)
    example = task.train_examples()[0]
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(task.score, "\\boxed{0.75}", example).result() == 1.0
