"""Data parallelism through Lightning's DDP strategy, for real: two CPU processes over gloo."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from support import PROJECT_ROOT, TINY_RUN, cli_env, load_script, run_cli, run_train, shared_by_workers
from transformers import AutoModelForCausalLM

from hicra.models.loaders import build_tiny_model

pytestmark = pytest.mark.slow

GRADIENT_PROBE = PROJECT_ROOT / "tests" / "training" / "ddp_gradient_probe.py"


@pytest.fixture(scope="module")
def single_rank_gradient(tmp_path_factory):
    """tests/training/ddp_gradient_probe.py's findings on one rank: "gradients" (name -> full gradient), "exchanges"
    (the micro-batch of each gradient exchange), "micro_batches". In this process: one rank, no process group, so a
    fresh interpreter would prove nothing more."""
    out = tmp_path_factory.mktemp("single")
    with torch.random.fork_rng():  # the probe seeds the global generator: leave this process's alone
        load_script(GRADIENT_PROBE).main(str(out), 1, 2, "auto")  # 8 responses, 4 micro-batches
    return torch.load(out / "auto.pt")


@pytest.fixture(scope="module")
def two_rank_probes(tmp_path_factory) -> Path:
    """The folder tests/training/two_rank_probes.py filled: one launch of two gloo ranks for the gradient probe (DDP,
    then FSDP2) and the sampling probe (a run, then its resume), one fit after another in the same two processes.
    pytest-xdist may hand this module's tests to both workers: they share the launch through a file lock, as
    conftest.py's trained_run (the first launches, the other waits and reads)."""
    with shared_by_workers(tmp_path_factory, "two_rank_probes") as out:
        if not (out / "done").exists():  # a failed launch leaves no mark: the other worker retries and fails too
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            subprocess.run([sys.executable, str(PROJECT_ROOT / "tests" / "training" / "two_rank_probes.py"), str(out)],
                           cwd=out, env=cli_env(), check=True, timeout=600, stdin=subprocess.DEVNULL,
                           capture_output=True)
            (out / "done").touch()
    return out


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_gradient_is_the_same_for_one_rank_x4_micro_batches_and_two_ranks_x2(strategy, single_rank_gradient,
                                                                              two_rank_probes):
    """... with one gradient exchange per optimizer step: every all-reduce (DDP's buckets) or reduce-scatter (FSDP2's
    units) runs in the last micro-batch's backward. Under FSDP2 rank 1 started on the meta device (rank 0's weights)."""
    single = single_rank_gradient["gradients"]
    probe = torch.load(two_rank_probes / "gradient" / f"{strategy}.pt")  # per rank: a group of 4, 2 micro-batches
    ranked = probe["gradients"]
    assert probe["micro_batches"] == 2 and probe["exchanges"] and set(probe["exchanges"]) == {1}, probe["exchanges"]
    if strategy == "fsdp":  # each FSDP unit (2 decoder blocks, the root) reduce-scatters, once per forward pass
        assert len(probe["exchanges"]) >= 3  # through it (prompt sharing runs the blocks twice: 5 in all)
    assert single_rank_gradient["exchanges"] == []  # one process: nothing to exchange
    assert single.keys() == ranked.keys()
    assert sum(float(g.abs().sum()) for g in single.values()) > 0
    for name in single:  # the ranks hold different token counts (LENGTHS): only a global normaliser matches
        torch.testing.assert_close(ranked[name], single[name], rtol=1e-4, atol=1e-7, msg=name)


# DAPO's dynamic sampling on real ranks, in trainer=ddp's run below (its own launch would cost two more interpreters):
# rank 1 finds a third as many informative groups as rank 0 (support.HalfSolvableTask, groups of 2).
DYNAMIC_SAMPLING = ["task._target_=support.HalfSolvableTask", "+task.rank1_solvable_every=3", "score_truncated=true",
                    "algorithm=grpo", "algorithm.group_size=2", "algorithm.dynamic_sampling_rounds=3",
                    "prompts_per_step=4"]


@pytest.mark.parametrize("trainer", ["ddp", "fsdp"])
def test_hicra_train_on_two_ranks_logs_one_run(trainer, tmp_path):
    """The real console script on two gloo ranks (Lightning re-executes it for rank 1): one MLflow run, rank 0's, with
    every step's metrics; the whole final weights; the last checkpoint (under FSDP a folder of the ranks' shards); the
    run record rank 0 wrote.
    fsdp: rank 1 starts on the meta device, and a KL term's reference is built from the policy's shards.
    ddp: with dynamic sampling, ranks that find different numbers of informative groups both train the smaller count
    and stay in step (the property tests/training/test_dynamic_sampling.py launched its own two ranks for)."""
    extra = ["algorithm.kl_coef=0.01", "prompts_per_step=2"] if trainer == "fsdp" else DYNAMIC_SAMPLING
    result = run_cli([*TINY_RUN, f"trainer={trainer}", "trainer.accelerator=cpu", "trainer.devices=2",
                      "trainer.precision=32-true", "trainer.max_steps=2", "save_final_model=true",
                      "checkpoint_every_n_steps=1", *extra], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stdout + result.stderr
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # rank 1 logs nothing of its own
    run_id = runs[0].info.run_id
    assert [m.step for m in client.get_metric_history(run_id, "train/reward_mean")] == [0, 1]
    val = client.get_metric_history(run_id, "val/accuracy")
    assert [m.step for m in val] == [0, 2]
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final_model")  # whole weights, even if sharded
    assert sum(p.numel() for p in final.parameters()) == sum(p.numel() for p in build_tiny_model().model.parameters())
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert last.is_dir() if trainer == "fsdp" else last.is_file()  # FSDP: a folder of the ranks' shards
    assert run_id in (tmp_path / "run" / "checkpoints" / "run.json").read_text()  # rank 1 did not overwrite it
    if trainer == "ddp":
        kept = [m.value for m in client.get_metric_history(run_id, "sampling/kept_frac")]
        informative = [m.value for m in client.get_metric_history(run_id, "sampling/informative_frac")]
        assert len(kept) == 2 and all(k in (0.0, 0.5, 1.0) for k in kept)  # whole groups of 2 per rank, same on both
        assert min(informative) < 1.0


@pytest.mark.parametrize("devices", ["2", "auto"])
def test_prompts_not_divisible_by_ranks_fail_in_one_line(devices, tmp_path, monkeypatch):
    """trainer.devices=2 is checked before any rank starts; with `auto` each rank checks its own sampler."""
    from hicra.training import data

    trainer = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
    if devices == "auto":  # one process that believes it is one of 2 ranks (launching ranks: the tests above)
        monkeypatch.setattr(data, "SkipFirstBatches", _two_ranks(data.SkipFirstBatches))
        trainer = ["trainer=cpu", "trainer.devices=auto"]
    result = run_train([*TINY_RUN, *trainer, "prompts_per_step=3", "logger=none"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("hicra-train: error:")]
    assert errors and "prompts_per_step=3 must be divisible by the number of ranks (2" in errors[0]


def _two_ranks(sampler_class):
    return lambda num_batches, batch_size, skip=0, rank=0, num_ranks=1: sampler_class(num_batches, batch_size, skip,
                                                                                      rank, 2)


def _sampling_records(folder: Path) -> list[list[dict]]:
    """[rank 0's per-step records, rank 1's] of tests/training/ddp_sampling_probe.py's fit into `folder`."""
    return [torch.load(folder / f"rank{rank}.pt") for rank in (0, 1)]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a, b)


def test_each_rank_samples_its_own_stream_which_checkpoints_keep(two_rank_probes):
    """Same prompts, same weights on both ranks: their responses differ only through their sampling streams; the
    shared stream (init, data order) stays the same on both; a resumed run continues each rank's own stream.

    The resume runs in the run's two processes (one launch, not two), after every global generator and the module's
    fallback sampling seed were reseeded with another seed: what the resumed ranks draw can only come from the
    checkpoint (a fresh stream, or one carried over in the process, would not replay the run's second step)."""
    out = two_rank_probes / "sampling"  # seed 5, 2 steps
    ranks, resumed = _sampling_records(out / "run"), _sampling_records(out / "resumed")
    for step in (0, 1):
        assert not _same(ranks[0][step]["responses"], ranks[1][step]["responses"]), step
        assert torch.equal(ranks[0][step]["shared"], ranks[1][step]["shared"])
    # the corpus recorder: rank 0 gathers and writes both ranks' correct replies in its folder; rank 1 writes nothing
    assert not (out / "run" / "folder_of_rank1").exists()
    corpus = (out / "run" / "folder_of_rank0" / "corpus" / "correct_completions.jsonl").read_text()
    texts = [json.loads(line)["text"] for line in corpus.splitlines()]
    assert sorted({t.rsplit(" row", 1)[0] for t in texts}) == ["rank 0 step 0", "rank 0 step 1", "rank 1 step 1"]
    for rank in (0, 1):
        (record,) = resumed[rank]  # only the second step ran
        assert record["step"] == 1 and _same(record["responses"], ranks[rank][1]["responses"]), rank
