"""Bad input: non-zero exit, one line naming the bad value and what is allowed, no stack trace, and no MLflow run
created by a config that does not pass or left RUNNING by a failure.

Every case runs `hicra-train`'s entry point in this process (sys.argv patched); one case per failure stage also runs
the real console script in a fresh interpreter, which is what a user types, and so does the sweep pre-check. A
failure after the MLflow run exists, and the other CLIs' bad stores and model folders, run in-process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import TINY_RUN, exit_code, run_cli, run_in_process, run_train


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "malformed.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n{"question": oops}\n')
    (root / "no_answer.jsonl").write_text('{"question": "1+1?"}\n')
    (root / "bool_answer.jsonl").write_text('{"question": "1+1?", "answer": 2}\n{"question": "Odd?", "answer": true}\n')
    (root / "list_answer.jsonl").write_text('{"question": "Roots?", "answer": [1, 2]}\n')
    (root / "surrogate.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n{"question": "\\ud800?", "answer": "3"}\n')
    (root / "one.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n')
    (root / "binary_grams.txt").write_bytes(b"wait\n\x89PNG\r\n\x1a\n\x00\x00")
    (root / "used_run" / "final_model").mkdir(parents=True)  # an earlier run's output: must not be overwritten
    (root / "ok.jsonl").write_text("".join(f'{{"question": "{i}+1?", "answer": "{i + 1}"}}\n' for i in range(20)))
    (root / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    (root / "not_a_database.db").write_text("this is not an MLflow store\n")
    _model_with_more_layers_than_weights(root / "more_layers")
    return root


def _model_with_more_layers_than_weights(folder: Path) -> None:
    from hicra.models.loaders import build_tiny_model

    bundle = build_tiny_model()
    bundle.model.save_pretrained(folder)
    bundle.tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))


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
    (["model=hf", "model.name_or_path={root}/more_layers"], ["more_layers' does not load as saved",
                                                            "weights missing from its weights files"]),
    (["algorithm.no_such_key=1"], ["algorithm.no_such_key"]),
    (["rollout.temperature=0"], ["rollout.temperature=0", "(0, 10]"]),
    (["rollout.max_new_tokens=0"], ["rollout.max_new_tokens=0", "an integer >= 1"]),
    (["algorithm.clip_high=1.5"], ["algorithm.clip_high=1.5", "(0, 1)"]),
    (["algorithm.aggregation=mean"], ["algorithm.aggregation='mean'", "token_mean"]),
    (["hparams_search=nope"], ["unknown hparams_search 'nope'", "hicra_optuna"]),
    (["-m", "hydra/launcher=jobli", "seed=0,1"], ["unknown hydra/launcher 'jobli'", "joblib"]),
    (["task=local_file"], ["task.path"]),
    (["task=local_file", "task.path={root}/bool_answer.jsonl"],
     ["bool_answer.jsonl' line 2: key 'answer' holds a bool (true)", "allowed: a string or a finite number"]),
    (["task=local_file", "task.path={root}/list_answer.jsonl"], ["line 1: key 'answer' holds a list ([1, 2])"]),
    (["task=local_file", "task.path={root}/surrogate.jsonl"],
     ["surrogate.jsonl' line 2: key 'question' holds a lone surrogate", "allowed: valid Unicode"]),
    (["task=local_file", "task.path={root}/one.jsonl", "task.val_path={root}/one.jsonl"],
     ["one.jsonl' is also in task.val_path", "nothing is left to train on"]),
    (["planner=strategic_grams", "planner.grams_path={root}/no_grams.txt"], ["planner.grams_path=",
                                                                             "strategic grams file not found"]),
    (["planner=strategic_grams", "planner.grams_path={root}/binary_grams.txt"], ["planner.grams_path=",
                                                                                 "is not UTF-8 text"]),
    (["diagnostics.grams_path={root}/no_grams.txt"], ["diagnostics.grams_path=", "strategic grams file not found"]),
    # a task without a shipped placebo list draws its own (hicra/config/checks.py)
    (["algorithm=hicra", "planner=placebo_grams", "task=countdown"],
     ["planner.grams_path=bundled://placebo_grams_countdown.txt", "ships placebo lists", "the task is countdown",
      "hicra-grams placebo --mlflow-run", "planner.grams_path=placebo.txt"]),
    # another task's shipped list, named by hand
    (["algorithm=hicra", "planner=placebo_grams", "task=countdown", "planner.grams_path=bundled://placebo_grams_chain_sum.txt"],
     ["planner.grams_path=bundled://placebo_grams_chain_sum.txt", "the task is countdown"]),
    (["experiment=smoke", "rollout.max_prompt_tokens=8"],
     ["rollout.max_prompt_tokens=8 leaves no room for a question", "allowed: a value above"]),
    (["hydra.run.dir=/proc/hicra/run"], ["hydra.run.dir=/proc/hicra/run cannot be created", "paths.output_dir"]),
    (["hydra.run.dir={root}/malformed.jsonl/run"], ["hydra.run.dir=", "is a file"]),
    (["hydra.run.dir={root}/used_run"], ["used_run/final_model already exists", "another hydra.run.dir"]),
    (["ckpt_path={root}/no_such.ckpt"], ["ckpt_path=", "does not exist", "allowed: last"]),
    (["ckpt_path=last", "paths.output_dir={root}/empty"], ["ckpt_path=last: no last.ckpt"]),
    (["checkpoint_every_n_steps=-1"], ["checkpoint_every_n_steps=-1", ">= 0"]),
    (["logger=mlflow", "logger.tracking_uri=http://127.0.0.1:9"], ["logger.tracking_uri=http://127.0.0.1:9",
                                                                   "unreachable"]),
    (["logger=mlflow", "logger.tracking_uri=sqlite:///{root}/malformed.jsonl/db"], ["logger.tracking_uri",
                                                                                  "cannot be used"]),
    (["trainer=gpu"], ["trainer.accelerator=gpu", "trainer=cpu"]),
    (["+trainer.strategy=fsdp"], ["FSDP", "strategy=auto"]),
    # processes: vLLM's tensor-parallel groups must tile the ranks, before vLLM or a model loads (placement.py)
    (["rollout=vllm", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "rollout.tensor_parallel_size=4"],
     ["rollout.tensor_parallel_size=4 does not divide the 2 training ranks", "allowed: a divisor of 2"]),
    (["rollout=vllm", "trainer=fsdp", "trainer.devices=4", "rollout.tensor_parallel_size=3"],
     ["rollout.tensor_parallel_size=3 does not divide the 4 training ranks"]),
    (["rollout=vllm", "trainer.num_nodes=2", "rollout.tensor_parallel_size=4"],
     ["rollout.tensor_parallel_size=4 does not divide the 2 training ranks"]),
    (["rollout=vllm", "rollout.tensor_parallel_size=0"], ["rollout.tensor_parallel_size=0 is not allowed", "an integer >= 1"]),
    (["-m", "hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu", "experiment=paper/qwen2_5_7b_base",
      "task.path={root}/ok.jsonl", "hydra.launcher.tasks_per_node=1"],
     ["hydra.launcher.tasks_per_node=1 but trainer.devices=4", "allowed: hydra.launcher.tasks_per_node=4"]),
    # typed values, checked before anything is instantiated (hicra/config/schema.py)
    (["checkpoint_every_n_steps=abc"], ["checkpoint_every_n_steps='abc' is not allowed", "an integer >= 0"]),
    (["trainer.precision=bogus"], ["trainer.precision='bogus' is not allowed", "bf16-mixed"]),
    (["prompts_per_step=2.5"], ["prompts_per_step=2.5 is not allowed", "an integer >= 1"]),
    (["prompts_per_step=abc"], ["prompts_per_step='abc' is not allowed", "an integer >= 1"]),
    (["optim.lr=-1e-3"], ["optim.lr=-0.001 is not allowed", "a finite number > 0"]),
    (["optim.lr=nan"], ["optim.lr=nan is not allowed", "a finite number > 0"]),
    (["optim.lr=inf"], ["optim.lr=inf is not allowed", "a finite number > 0"]),
    (["seed=abc"], ["seed='abc' is not allowed", "an integer in [0, 4294967295]"]),
    (["seed=-1"], ["seed=-1 is not allowed", "an integer in [0, 4294967295]"]),
    (["algorithm.group_size=abc"], ["algorithm.group_size='abc' is not allowed", "an integer >= 2"]),
    (["logger=mlflow", "logger.tracking_uri=sqlite:///{root}/store.db", "logger.experiment_name="],
     ["logger.experiment_name='' is not allowed", "a non-empty string"]),
    (["format_reward=true"], ["format_reward=True is not allowed", "[0, 1)"]),
    # keys: a new key only where a group takes it (a `_target_`'s argument), never a typo
    (["+prompts_per_stepp=4"], ["prompts_per_stepp=4 is not a setting", "did you mean prompts_per_step?"]),
    (["++optim.bogus=1"], ["optim.bogus=1 is not an argument of torch.optim.AdamW", "allowed: ", "weight_decay"]),
    (["lora=default", "+lora.rank=8"], ["lora.rank=8 is not a setting", "under lora: alpha, dropout, r,"]),
    (["experiment=smoke", "task=local_file", "task.path={root}/ok.jsonl"],
     ["task.train_size=64 is not an argument of hicra.tasks.LocalFileTask", "val_size"]),
    # data and the model's context
    (["task=local_file", "task.path={root}/binary.jsonl"], ["binary.jsonl' is not UTF-8 text", "allowed: UTF-8"]),
    ([*TINY_RUN, "rollout.max_new_tokens=1000000000"],
     ["rollout.max_new_tokens=1000000000 plus the longest prompt", "context of 2048 tokens", "allowed: "]),
    # a sweep: every job's values before the first job starts
    (["-m", "algorithm.group_size=4,1,4"], ["job 1 of 3 (algorithm.group_size=1):",
                                           "algorithm.group_size=1 is not allowed; allowed: an integer >= 2"]),
]
NEEDS_NO_GPU = ("trainer=gpu", "+trainer.strategy=fsdp")


# One per stage a bad value is caught at: the command line (before Hydra), Hydra's composition, the job's own checks
# (inside Hydra's job), the tracking store.
STAGE_ARGS = (["algorithm=foo"], ["algorithm.no_such_key=1"], ["algorithm=hicra", "algorithm.alpha=1.5"],
              ["logger=mlflow", "logger.tracking_uri=http://127.0.0.1:9"])
STAGES = [case for case in CASES if case[0] in STAGE_ARGS]


def assert_one_error_line(result, expected: list[str], prog: str = "hicra-train") -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{prog}: error:")]
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


def _runs(store: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.slow
def test_every_job_of_a_sweep_is_checked_before_the_first_starts(tmp_path):
    result = run_cli(["-m", *TINY_RUN, "algorithm.group_size=4,1,4"], tmp_path, timeout=300)
    assert_one_error_line(result, ["job 1 of 3 (algorithm.group_size=1): algorithm.group_size=1 is not allowed"])
    assert not (tmp_path / "sweep").exists()  # job 0 never started: no job folder, no MLflow run
    assert _runs(tmp_path / "mlflow.db") == []


@pytest.mark.slow  # a tiny run's start and step-0 validation
def test_a_failure_once_the_run_exists_ends_it_failed(tmp_path):
    """hicra's own handling (hicra/tracking/run_end.py) ends the run, not the process's exit: in this process."""
    result = run_train([*TINY_RUN, "trainer._target_=support.trainer_failing_at_fit"], tmp_path)
    assert result.returncode != 0 and "injected failure before fit" in result.stderr
    (run,) = _runs(tmp_path / "mlflow.db")
    assert run.info.status == "FAILED"  # not RUNNING: the step-0 validation had reopened it


def test_an_interrupt_once_the_run_exists_ends_it_killed(compose_cfg, tmp_path):
    from hicra.training.run import train

    cfg = compose_cfg(*TINY_RUN, "trainer._target_=support.trainer_failing_at_fit", "+trainer.interrupt=true",
                      f"paths.output_dir={tmp_path}", f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                      f"logger.artifact_location={tmp_path}/mlartifacts")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, choices={})
    (run,) = _runs(tmp_path / "mlflow.db")
    assert run.info.status == "KILLED"


def test_a_config_that_fails_its_checks_creates_no_run(tmp_path):
    """Refused on the command line, or in the job once the model's context is known: no run either way."""
    for args in (["checkpoint_every_n_steps=abc"], ["trainer.precision=bogus"],
                 [*TINY_RUN, "rollout.max_new_tokens=1000000000"]):
        assert run_train(args, tmp_path).returncode == 2
    assert _runs(tmp_path / "mlflow.db") == []


# --- the other CLIs -------------------------------------------------------------------------------------------

def _one_line(code: int, err: str, prog: str, expected: list[str]) -> None:
    assert code == 2 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith(f"{prog}: error:")]
    assert all(fragment in line for fragment in expected), line


@pytest.mark.parametrize("prog", ["hicra-analyze", "hicra-compare", "hicra-grams"])
def test_a_store_that_is_not_a_database_is_one_line(prog, bad_files, tmp_path, capsys):
    from hicra.analyze.cli import main as analyze
    from hicra.compare.cli import main as compare
    from hicra.grams.cli import main as grams

    uri = f"sqlite:///{bad_files}/not_a_database.db"
    main, args = {"hicra-analyze": (analyze, ["--tracking-uri", uri, "--no-log"]),
                  "hicra-compare": (compare, ["--tracking-uri", uri, "--no-log"]),
                  "hicra-grams": (grams, ["mine", "--mlflow-run", "0" * 32, "--tracking-uri", uri,
                                          "--out", str(tmp_path / "grams.txt")])}[prog]
    code = exit_code(main, args)
    _one_line(code, capsys.readouterr().err, prog, ["cannot open MLflow store", "not_a_database.db"])


def test_a_model_folder_with_a_wrong_typed_config_field_is_one_line(tmp_path):
    from hicra.evaluation.cli import main
    from hicra.models.loaders import build_tiny_model

    folder = tmp_path / "model"
    bundle = build_tiny_model()
    bundle.model.save_pretrained(folder)
    bundle.tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": "two"}))
    result = run_in_process(main, "hicra-eval", [f"checkpoint={folder}", "benchmark=chain_sum", "protocol=greedy",
                                                 "limit=1", "logger=none", f"hydra.run.dir={tmp_path}/eval"])
    assert_one_error_line(result, [str(folder), "num_hidden_layers"], prog="hicra-eval")
