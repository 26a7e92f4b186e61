"""Data parallelism through Lightning's DDP strategy, for real: two CPU processes over gloo."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pytest
import torch
from support import PROJECT_ROOT, TINY_RUN, cli_env, run_cli, run_train
from transformers import AutoModelForCausalLM

from hicra.models.loaders import build_tiny_model

pytestmark = pytest.mark.slow


def _probe(tmp_path, ranks: int, micro_batch_size: int, strategy: str = "auto") -> dict:
    """tests/training/ddp_gradient_probe.py's findings: "gradients" (name -> full gradient), "exchanges" (the
    micro-batch of each gradient exchange), "micro_batches" (per rank)."""
    out = tmp_path / f"grad_{strategy}_{ranks}x{micro_batch_size}.pt"
    subprocess.run([sys.executable, str(PROJECT_ROOT / "tests" / "training" / "ddp_gradient_probe.py"), str(out), str(ranks),
                    str(micro_batch_size), strategy], cwd=tmp_path, env=cli_env(), check=True, timeout=600,
                   stdin=subprocess.DEVNULL, capture_output=True)
    return torch.load(out)


@pytest.fixture(scope="module")
def single_rank_gradient(tmp_path_factory):
    return _probe(tmp_path_factory.mktemp("single"), ranks=1, micro_batch_size=2)  # 8 responses, 4 micro-batches


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_gradient_is_the_same_for_one_rank_x4_micro_batches_and_two_ranks_x2(strategy, single_rank_gradient,
                                                                              tmp_path):
    """... with one gradient exchange per optimizer step: every all-reduce (DDP's buckets) or reduce-scatter (FSDP2's
    units) runs in the last micro-batch's backward. Under FSDP2 rank 1 started on the meta device (rank 0's weights)."""
    single = single_rank_gradient["gradients"]
    probe = _probe(tmp_path, ranks=2, micro_batch_size=2, strategy=strategy)  # 4 responses (a group) per rank
    ranked = probe["gradients"]
    assert probe["micro_batches"] == 2 and probe["exchanges"] and set(probe["exchanges"]) == {1}, probe["exchanges"]
    if strategy == "fsdp":  # each FSDP unit (2 decoder blocks, the root) reduce-scatters, once per forward pass
        assert len(probe["exchanges"]) >= 3  # through it (prompt sharing runs the blocks twice: 5 in all)
    assert single_rank_gradient["exchanges"] == []  # one process: nothing to exchange
    assert single.keys() == ranked.keys()
    assert sum(float(g.abs().sum()) for g in single.values()) > 0
    for name in single:  # the ranks hold different token counts (LENGTHS): only a global normaliser matches
        torch.testing.assert_close(ranked[name], single[name], rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize("trainer", ["ddp", "fsdp"])
def test_hicra_train_on_two_ranks_logs_one_run(trainer, tmp_path):
    # fsdp: rank 1 starts on the meta device, and a KL term's reference is built from the policy's shards
    kl = ["algorithm.kl_coef=0.01"] if trainer == "fsdp" else []
    result = run_cli([*TINY_RUN, f"trainer={trainer}", "trainer.accelerator=cpu", "trainer.devices=2",
                      "trainer.precision=32-true", "prompts_per_step=2", "trainer.max_steps=2",
                      "save_final_model=true", "checkpoint_every_n_steps=1", *kl], tmp_path)
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


def _sampling_probe(out, seed: int, steps: int, ckpt=None) -> list[list[dict]]:
    """[rank 0's per-step records, rank 1's] of tests/training/ddp_sampling_probe.py (2 DDP ranks, gloo)."""
    out.mkdir(parents=True)
    subprocess.run([sys.executable, str(PROJECT_ROOT / "tests" / "training" / "ddp_sampling_probe.py"), str(out),
                    str(seed), str(steps), *([str(ckpt)] if ckpt else [])], cwd=out, env=cli_env(), check=True,
                   timeout=600, stdin=subprocess.DEVNULL, capture_output=True)
    return [torch.load(out / f"rank{rank}.pt") for rank in (0, 1)]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a, b)


def test_each_rank_samples_its_own_stream_which_checkpoints_keep(tmp_path):
    """Same prompts, same weights on both ranks: their responses differ only through their sampling streams; the
    shared stream (init, data order) stays the same on both; a resumed run continues each rank's own stream."""
    ranks = _sampling_probe(tmp_path / "run", seed=5, steps=2)
    for step in (0, 1):
        assert not _same(ranks[0][step]["responses"], ranks[1][step]["responses"]), step
        assert torch.equal(ranks[0][step]["shared"], ranks[1][step]["shared"])
    # the corpus recorder: rank 0 gathers and writes both ranks' correct replies in its folder; rank 1 writes nothing
    assert not (tmp_path / "run" / "folder_of_rank1").exists()
    corpus = (tmp_path / "run" / "folder_of_rank0" / "corpus" / "correct_completions.jsonl").read_text()
    texts = [json.loads(line)["text"] for line in corpus.splitlines()]
    assert sorted({t.rsplit(" row", 1)[0] for t in texts}) == ["rank 0 step 0", "rank 0 step 1", "rank 1 step 1"]
    resumed = _sampling_probe(tmp_path / "resumed", seed=5, steps=2, ckpt=tmp_path / "run" / "step=1.ckpt")
    for rank in (0, 1):
        (record,) = resumed[rank]  # only the second step ran
        assert record["step"] == 1 and _same(record["responses"], ranks[rank][1]["responses"]), rank
