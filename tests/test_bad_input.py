"""Bad input: non-zero exit, one line naming the bad value and what is allowed, no stack trace.

Every case runs `hicra-train`'s entry point in this process (sys.argv patched); one case per failure stage also runs
the real console script in a fresh interpreter, which is what a user types.
"""

from __future__ import annotations

import pytest

from support import run_cli, run_train


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "malformed.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n{"question": oops}\n')
    (root / "no_answer.jsonl").write_text('{"question": "1+1?"}\n')
    (root / "bool_answer.jsonl").write_text('{"question": "1+1?", "answer": 2}\n{"question": "Odd?", "answer": true}\n')
    (root / "list_answer.jsonl").write_text('{"question": "Roots?", "answer": [1, 2]}\n')
    (root / "one.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n')
    (root / "binary_grams.txt").write_bytes(b"wait\n\x89PNG\r\n\x1a\n\x00\x00")
    (root / "used_run" / "final_model").mkdir(parents=True)  # an earlier run's output: must not be overwritten
    return root


CASES = [
    (["algorithm=foo"], ["unknown algorithm 'foo'",
                         "dr_grpo, entropy_reg, grpo, grpo_kl_reward, gspo, hicra, hicra_authors_rule"]),
    (["planner=nope"], ["unknown planner 'nope'",
                        "authors_rule, high_entropy, none, placebo_grams, random, strategic_grams, union"]),
    (["-m", "algorithm=grpo,bad"], ["unknown algorithm 'bad'"]),
    (["algorithm=hicra", "algorithm.alpha=1.5"], ["algorithm.alpha=1.5", "[0, 1)"]),
    (["algorithm=hicra", "algorithm.alpha=-0.1"], ["algorithm.alpha=-0.1", "[0, 1)"]),
    (["algorithm.group_size=1"], ["algorithm.group_size=1", ">= 2"]),
    (["algorithm=hicra", "planner=none"], ["planner=none", "planner=strategic_grams"]),
    (["task=local_file", "task.path={root}/missing.jsonl"], ["missing.jsonl", "does not exist"]),
    (["task=local_file", "task.path={root}/malformed.jsonl"], ["malformed.jsonl", "line 2"]),
    (["task=local_file", "task.path={root}/no_answer.jsonl"], ["no_answer.jsonl", "answer"]),
    (["model=hf", "model.name_or_path={root}/no_such_model"], ["no_such_model", "does not exist"]),
    (["algorithm.no_such_key=1"], ["algorithm.no_such_key"]),
    (["rollout.temperature=0"], ["rollout.temperature=0", "(0, 10]"]),
    (["rollout.max_new_tokens=0"], ["rollout.max_new_tokens=0", "must be > 0"]),
    (["algorithm.clip_high=1.5"], ["algorithm.clip_high=1.5", "(0, 1)"]),
    (["algorithm.aggregation=mean"], ["algorithm.aggregation='mean'", "token_mean"]),
    (["hparams_search=nope"], ["unknown hparams_search 'nope'", "hicra_optuna"]),
    (["-m", "hydra/launcher=jobli", "seed=0,1"], ["unknown hydra/launcher 'jobli'", "joblib"]),
    (["task=local_file"], ["task.path"]),
    (["task=local_file", "task.path={root}/bool_answer.jsonl"],
     ["bool_answer.jsonl' line 2: key 'answer' holds a bool (true)", "allowed: a string or a finite number"]),
    (["task=local_file", "task.path={root}/list_answer.jsonl"], ["line 1: key 'answer' holds a list ([1, 2])"]),
    (["task=local_file", "task.path={root}/one.jsonl", "task.val_path={root}/one.jsonl"],
     ["one.jsonl' is also in task.val_path", "nothing is left to train on"]),
    (["planner=strategic_grams", "planner.grams_path={root}/no_grams.txt"], ["planner.grams_path=",
                                                                             "strategic grams file not found"]),
    (["planner=strategic_grams", "planner.grams_path={root}/binary_grams.txt"], ["planner.grams_path=",
                                                                                 "is not UTF-8 text"]),
    (["diagnostics.grams_path={root}/no_grams.txt"], ["diagnostics.grams_path=", "strategic grams file not found"]),
    (["experiment=smoke", "rollout.max_prompt_tokens=8"],
     ["rollout.max_prompt_tokens=8 leaves no room for a question", "allowed: a value above"]),
    (["hydra.run.dir=/proc/hicra/run"], ["hydra.run.dir=/proc/hicra/run cannot be created", "paths.output_dir"]),
    (["hydra.run.dir={root}/malformed.jsonl/run"], ["hydra.run.dir=", "is a file"]),
    (["hydra.run.dir={root}/used_run"], ["used_run/final_model already exists", "another hydra.run.dir"]),
    (["ckpt_path={root}/no_such.ckpt"], ["ckpt_path=", "does not exist", "allowed: last"]),
    (["ckpt_path=last", "paths.output_dir={root}/empty"], ["ckpt_path=last: no last.ckpt"]),
    (["checkpoint_every_n_steps=-1"], ["checkpoint_every_n_steps=-1", ">= 1"]),
    (["logger=mlflow", "logger.tracking_uri=http://127.0.0.1:9"], ["logger.tracking_uri=http://127.0.0.1:9",
                                                                   "unreachable"]),
    (["logger=mlflow", "logger.tracking_uri=sqlite:///{root}/malformed.jsonl/db"], ["logger.tracking_uri",
                                                                                  "cannot be used"]),
    (["trainer=gpu"], ["trainer.accelerator=gpu", "trainer=cpu"]),
    (["+trainer.strategy=fsdp"], ["FSDP", "strategy=auto"]),
]
NEEDS_NO_GPU = ("trainer=gpu", "+trainer.strategy=fsdp")


# One per stage a bad value is caught at: the command line (before Hydra), Hydra's composition, the job's own checks
# (inside Hydra's job), the tracking store.
STAGE_ARGS = (["algorithm=foo"], ["algorithm.no_such_key=1"], ["algorithm=hicra", "algorithm.alpha=1.5"],
              ["logger=mlflow", "logger.tracking_uri=http://127.0.0.1:9"])
STAGES = [case for case in CASES if case[0] in STAGE_ARGS]


def assert_one_error_line(result, expected: list[str]) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("hicra-train: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    for fragment in expected:
        assert fragment in errors[0], errors[0]


def _prepared(args: list[str], bad_files) -> list[str]:
    import torch

    if torch.cuda.is_available() and set(args) & set(NEEDS_NO_GPU):
        pytest.skip("a GPU is visible: this combination is valid here")
    args = [a.format(root=bad_files) for a in args]
    return args + ([] if any(a.startswith("logger") for a in args) else ["logger=none"])


@pytest.mark.parametrize("args,expected", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_fails_in_one_line(args, expected, bad_files, tmp_path):
    assert_one_error_line(run_train(_prepared(args, bad_files), tmp_path), expected)


@pytest.mark.slow
@pytest.mark.parametrize("args,expected", STAGES, ids=[" ".join(a) for a, _ in STAGES])
def test_bad_input_through_the_real_console_script(args, expected, bad_files, tmp_path):
    assert_one_error_line(run_cli(_prepared(args, bad_files), tmp_path, timeout=300), expected)
