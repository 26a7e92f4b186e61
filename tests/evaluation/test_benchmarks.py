"""Benchmarks: every conf/benchmark option instantiates; CHAMP answers and local benchmark files."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hydra.utils import instantiate
from support import CONF_DIR

from hicra.errors import ConfigError
from hicra.evaluation.benchmarks import Benchmark, questions, skipped_count
from hicra.tasks import ChampTask, EvalFileTask, ReasoningGymTask
from hicra.tasks.champ import reference_answers

MATH500_STYLE = [
    {"problem": "What is half of one?", "solution": "Half is $\\boxed{\\frac{1}{2}}$.", "answer": "\\frac{1}{2}"},
    {"problem": "What is 6 * 7?", "solution": "...", "answer": "42"},
]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_every_benchmark_option_instantiates(compose_eval, tmp_path):
    options = sorted(p.stem for p in (CONF_DIR / "benchmark").glob("*.yaml"))
    assert {"held_out", "champ", "local_file", "chain_sum"} <= set(options)
    data = write_jsonl(tmp_path / "aime.jsonl", MATH500_STYLE)
    for name in options:
        extra = [f"benchmark.task.path={data}"] if name == "local_file" else []
        benchmark = instantiate(compose_eval(f"benchmark={name}", *extra).benchmark)
        assert isinstance(benchmark, Benchmark)
        if name == "held_out":
            assert benchmark.task is None  # filled with the evaluated run's own task
        elif name == "local_file":
            assert benchmark.name is None and benchmark.task.name == "aime"
        elif name != "champ":
            assert isinstance(benchmark.task, ReasoningGymTask) and benchmark.name == name


def test_reasoning_gym_benchmark_uses_the_task_group_knobs(compose_eval):
    """benchmark=chain_sum asks the same held-out questions as a training run on task=chain_sum."""
    benchmark = instantiate(compose_eval("benchmark=chain_sum").benchmark)
    trained_on = instantiate(compose_eval().task)  # eval.yaml's task group = training's default task
    assert [e.question for e in benchmark.task.val_examples()] == [e.question for e in trained_on.val_examples()]
    assert len(questions(benchmark.task, limit=5)) == 5


@pytest.mark.parametrize("raw,expected", [
    ("239", ["239"]),
    ("@@2^(n-1)@@", ["2^(n-1)"]),
    ("@@C(10, 5)@@, or equivalently @@252@@", ["\\binom{10}{5}", "252"]),
    ("@@5/14@@, or approximately 35.7%", ["5/14"]),
    ("100 (i.e., all values)", ["100"]),
    ("-3 is the only possible value", ["-3"]),
    ("The limit exists and is equal to @@2/3@@", ["2/3"]),
    ("@@sum_(i=1)^n i^2@@, or equivalently @@n(n+1)(2n+1)/6@@", ["n(n+1)(2n+1)/6"]),
    ("No", []), ("376 and 625", []), ("@@x=6, y=5@@", []), ("At least 1 number", []),
    ("@@2^floor(n/2)*floor(n/2)!@@", []),  # math-verify cannot read it
])
def test_champ_reference_answers(raw, expected):
    assert reference_answers(raw) == expected


def test_champ_keeps_checkable_problems_and_counts_the_rest():
    task = ChampTask()
    examples = task.val_examples()
    assert len(examples) + skipped_count(task) == 270
    assert len(examples) == 177  # documented in conf/benchmark/champ.yaml and the README
    first = examples[0]
    assert first.meta["id"] == "P_Combinatorics_1" and first.answer == "239"
    assert task.score("... so there are \\boxed{239} strings.", first) == 1.0
    assert task.score("\\boxed{240}", first) == 0.0
    binomial = next(e for e in examples if e.meta["references"] == ["\\binom{10}{5}", "252"])
    assert task.score("\\boxed{252}", binomial) == task.score("\\boxed{\\binom{10}{5}}", binomial) == 1.0
    with pytest.raises(ConfigError, match="evaluation benchmark"):
        task.train_examples()


def test_eval_file_reads_math500_style_problems(tmp_path):
    task = EvalFileTask(str(write_jsonl(tmp_path / "math500.jsonl", MATH500_STYLE)))
    examples = task.val_examples()
    assert [e.question for e in examples] == ["What is half of one?", "What is 6 * 7?"]
    assert task.score("so \\boxed{0.5}", examples[0]) == 1.0 and task.score("\\boxed{41}", examples[1]) == 0.0


def test_eval_file_question_key_and_boxed_solutions(tmp_path):
    records = [{"question": "q1", "answer": "Worked out: $\\boxed{7}$"}, {"question": "q2", "answer": "x #### 12"}]
    frame = pd.DataFrame(records)
    frame.to_parquet(tmp_path / "aime.parquet")
    examples = EvalFileTask(str(tmp_path / "aime.parquet")).val_examples()
    assert [(e.question, e.answer) for e in examples] == [("q1", "7"), ("q2", "12")]


def test_eval_file_without_answers_names_file_line_and_keys(tmp_path):
    path = write_jsonl(tmp_path / "no_answers.jsonl", [{"problem": "p1", "solution": "s1"}])
    task = EvalFileTask(str(path))
    with pytest.raises(ConfigError) as err:
        task.val_examples()
    message = str(err.value)
    for fragment in ("no_answers.jsonl", "line 1", "'answer'", "problem, solution", "benchmark.task.answer_key"):
        assert fragment in message, message


def test_eval_file_missing_file_fails_at_construction(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        EvalFileTask(str(tmp_path / "missing.jsonl"))
