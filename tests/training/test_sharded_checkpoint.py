"""Sharded checkpoints (trainer=fsdp): written by every rank, swapped in crash-safely, found and checked like a file,
resumed on another number of ranks with the same weights and optimizer state."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from support import PROJECT_ROOT, TINY_RUN, cli_env, load_script, run_in_process

from hicra.errors import ConfigError
from hicra.training import sharded_checkpoint
from hicra.training.export import main as export_main
from hicra.training.find_checkpoint import checkpoint_at, resolve_checkpoint
from hicra.training.resume import RUN_KEY, config_snapshot, load_checkpoint, resume_point
from hicra.training.sharded_checkpoint import recover_interrupted_save, retired_path, staging_path, swap_in

PROBE = PROJECT_ROOT / "tests" / "training" / "sharded_checkpoint_probe.py"


def write_sharded(folder: Path, step: int, record: dict | None = None, complete: bool = True) -> Path:
    """A sharded checkpoint as FullyShardedStrategy lays it out (DCP shards, then meta.pt), written by one process."""
    weights = {"policy.model.w": torch.full((4, 2), float(step)), "policy.lm_head.weight": torch.ones(3, 2)}
    dcp.save({"state_dict": weights, "optimizer_0": {"state": {"policy.model.w": {"exp_avg": torch.zeros(4, 2)}}}},
             checkpoint_id=folder, no_dist=True)
    if complete:
        torch.save({"global_step": step, **({RUN_KEY: record} if record else {})}, folder / sharded_checkpoint.META)
    return folder


def _step(path: Path) -> int:
    return int(load_checkpoint(path)["global_step"])


class Killed(BaseException):
    """SIGKILL, at a chosen line of the swap."""


def _kill_at(monkeypatch, name: str, call: int) -> None:
    """The `call`-th call of `sharded_checkpoint.<name>` never returns (nor does anything after it)."""
    real, calls = getattr(sharded_checkpoint, name) if name != "rename" else os.rename, []

    def dying(*args):
        calls.append(args)
        if len(calls) == call:
            raise Killed
        return real(*args)

    if name == "rename":
        monkeypatch.setattr(sharded_checkpoint.os, "rename", dying)
    else:
        monkeypatch.setattr(sharded_checkpoint, name, dying)


@pytest.mark.parametrize(("killed", "kept"), [
    (None, 2),              # the new save was still being written (no meta.pt yet): the old checkpoint stays
    (("rename", 2), 2),     # between the two renames: last.ckpt is gone, the complete new save takes its place
    (("_remove", 2), 2),    # after the swap, while the replaced checkpoint was being deleted
], ids=["while-writing", "between-renames", "while-deleting-the-old"])
def test_a_kill_during_a_save_leaves_a_checkpoint_that_start_up_restores(tmp_path, monkeypatch, killed, kept):
    target = write_sharded(tmp_path / "last.ckpt", step=1)
    if killed is None:
        write_sharded(staging_path(target), step=2, complete=False)
        kept = 1
    else:
        write_sharded(staging_path(target), step=2)
        _kill_at(monkeypatch, *killed)
        with pytest.raises(Killed):
            swap_in(staging_path(target), target)
        monkeypatch.undo()
    assert recover_interrupted_save(target) is not None
    assert _step(target) == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no leftovers
    assert recover_interrupted_save(target) is None  # nothing left to do


def test_a_completed_swap_replaces_a_full_file_with_a_folder_and_back(tmp_path):
    target = tmp_path / "last.ckpt"
    torch.save({"global_step": 1, "state_dict": {}}, target)
    swap_in(write_sharded(staging_path(target), step=2), target)
    assert target.is_dir() and _step(target) == 2
    torch.save({"global_step": 3, "state_dict": {}}, staging_path(target))
    swap_in(staging_path(target), target)
    assert target.is_file() and _step(target) == 3 and not retired_path(target).exists()


def _lightning_checkpoint(step: int) -> dict:
    """What Lightning hands the strategy to save (plain tensors stand for the ranks' shards)."""
    return {"global_step": step, "state_dict": {"policy.model.w": torch.full((4, 2), float(step))},
            "optimizer_states": [{"state": {"policy.model.w": {"exp_avg": torch.ones(4, 2)}}, "param_groups": []}]}


def _one_process_strategy(sharded: bool):
    """FullyShardedStrategy as rank 0 of a job of one, without a process group (DCP then writes as one process)."""
    from hicra.training.checkpointing import AtomicCheckpointIO

    strategy = sharded_checkpoint.fully_sharded_strategy(save_distributed_checkpoint=sharded)
    strategy.checkpoint_io = AtomicCheckpointIO()
    strategy.broadcast = lambda obj, src=0: obj
    strategy.barrier = lambda name=None: None
    return strategy


def test_the_strategy_swaps_shards_in_for_a_file_and_a_full_file_in_for_shards(tmp_path):
    target = tmp_path / "last.ckpt"
    torch.save({"global_step": 1, "state_dict": {}}, target)  # a run saved with save_distributed_checkpoint=false
    _one_process_strategy(sharded=True).save_checkpoint(_lightning_checkpoint(2), target)
    assert target.is_dir() and _step(target) == 2 and "optimizer_0.state.policy.model.w.exp_avg" in \
        sharded_checkpoint.SafeFileSystemReader(target).read_metadata().state_dict_metadata
    _one_process_strategy(sharded=True).save_checkpoint(_lightning_checkpoint(3), target)
    assert _step(target) == 3
    _one_process_strategy(sharded=False).save_checkpoint(_lightning_checkpoint(4), target)
    assert target.is_file() and _step(target) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_full_disk_during_a_sharded_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from hicra.errors import TrainingError

    target = write_sharded(tmp_path / "last.ckpt", step=1)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dcp, "save", full_disk)
    with pytest.raises(TrainingError, match="cannot write checkpoint .* .No space left on device.; the previous "
                                            "checkpoint is intact"):
        _one_process_strategy(sharded=True).save_checkpoint(_lightning_checkpoint(2), target)
    assert _step(target) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.fixture
def sharded_run(compose_cfg, tmp_path):
    """A run folder whose checkpoints/last.ckpt is sharded and carries its run record; the fsdp config resumes it."""
    cfg = compose_cfg(*TINY_RUN, "trainer=fsdp", "logger=none")
    record = {"mlflow_run_id": None, "run_dir": str(tmp_path), "config": config_snapshot(cfg)}
    (tmp_path / "checkpoints").mkdir()
    write_sharded(tmp_path / "checkpoints" / "last.ckpt", step=4, record=record)
    return tmp_path, cfg


def test_a_sharded_checkpoint_is_found_and_checked_like_a_file(sharded_run, compose_cfg):
    run, cfg = sharded_run
    ckpt = run / "checkpoints" / "last.ckpt"
    assert checkpoint_at(str(ckpt)) == ckpt and checkpoint_at(str(run)) == ckpt
    assert resolve_checkpoint("last", run, run_dir=run) == ckpt
    point = resume_point(ckpt, cfg, None)
    assert point.step == 4
    assert point.weight_shapes == {"policy.model.w": (4, 2), "policy.lm_head.weight": (3, 2)}  # from DCP's index
    other = compose_cfg(*TINY_RUN, "trainer=fsdp", "~trainer.strategy", "logger=none")  # e.g. trainer=gpu
    with pytest.raises(ConfigError, match="is a sharded checkpoint .trainer=fsdp.; resume it with trainer=fsdp"):
        resume_point(ckpt, other, None)


def test_ckpt_path_auto_completes_a_save_killed_between_its_renames_then_resumes_it(sharded_run, compose_cfg, capsys):
    """What a requeued job does at start-up (run_checkpoints.find_resume_point, with the run's lock held)."""
    from hicra.training.run_checkpoints import find_resume_point
    from hicra.training.run_lock import RunLocks

    run, _ = sharded_run
    ckpt = run / "checkpoints" / "last.ckpt"
    os.rename(ckpt, staging_path(ckpt))  # the kill: the old one already moved away, the new one not yet in place
    cfg = compose_cfg(*TINY_RUN, "trainer=fsdp", "logger=none", "ckpt_path=auto", f"paths.output_dir={run}")
    with RunLocks() as locks:
        point = find_resume_point(cfg, run, locks)
    assert point.checkpoint == ckpt and point.step == 4
    assert "completed an interrupted checkpoint save" in capsys.readouterr().out
    assert not staging_path(ckpt).exists()


class _Planted:
    def __reduce__(self):
        return (os.getcwd, ())  # harmless if it ran; it must not run


@pytest.mark.parametrize("damage", ["no-meta", "truncated-meta", "planted-index", "not-a-checkpoint"])
def test_a_damaged_or_planted_sharded_checkpoint_is_refused_in_one_line(sharded_run, damage):
    run, cfg = sharded_run
    ckpt = run / "checkpoints" / "last.ckpt"
    if damage == "no-meta":
        (ckpt / "meta.pt").unlink()
    elif damage == "truncated-meta":
        (ckpt / "meta.pt").write_bytes((ckpt / "meta.pt").read_bytes()[:100])
    elif damage == "planted-index":
        (ckpt / ".metadata").write_bytes(pickle.dumps(_Planted()))
    else:
        for part in ckpt.iterdir():
            part.unlink()
    expected = {"no-meta": "is damaged (meta.pt is missing)", "truncated-meta": "is damaged",
                "planted-index": "holds objects hicra does not load (posix.getcwd)",
                "not-a-checkpoint": "is a folder but not a sharded checkpoint"}[damage]
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")) as err:
        resume_point(ckpt, cfg, None)
    assert "\n" not in str(err.value)


def test_the_index_reader_builds_dcp_metadata_and_nothing_else(tmp_path):
    write_sharded(tmp_path / "ckpt", step=1)
    reader = sharded_checkpoint.SafeFileSystemReader(tmp_path / "ckpt")
    assert "state_dict.policy.model.w" in reader.read_metadata().state_dict_metadata
    planted = io.BytesIO(pickle.dumps(_Planted()))
    with pytest.raises(pickle.UnpicklingError, match="posix.getcwd"):
        sharded_checkpoint._MetadataUnpickler(planted).load()


@pytest.fixture
def no_process_group_left():
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


# --- real ranks --------------------------------------------------------------------------------------------------

def _probe(out: Path, ranks: int, steps: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, str(PROBE), str(out), str(ranks), str(steps)], check=False, cwd=out,
                            env=cli_env(), timeout=600, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def _probe_in_process(out: Path, steps: int, ckpt: Path) -> None:
    """The probe on one rank in this process (a fresh interpreter costs seconds of imports)."""
    out.mkdir(parents=True, exist_ok=True)
    load_script(PROBE).main(out, ranks=1, steps=steps, ckpt=str(ckpt))


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["weights"].keys() == b["weights"].keys() and a["optimizer"].keys() == b["optimizer"].keys()
    for name in a["weights"]:
        torch.testing.assert_close(b["weights"][name], a["weights"][name], rtol=0, atol=0, msg=name)
    for name in a["optimizer"]:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(b["optimizer"][name][key], a["optimizer"][name][key], rtol=0, atol=0)


@pytest.mark.slow  # two gloo ranks, then one, then the export CLI
def test_two_ranks_save_shards_that_one_rank_resumes_and_the_cli_exports(tmp_path, no_process_group_left):
    _probe(tmp_path / "two", ranks=2, steps=1)
    ckpt = tmp_path / "two" / "checkpoints" / "last.ckpt"
    assert sorted(p.name for p in ckpt.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"]
    assert not any(p.name.endswith((".saving", ".old")) for p in ckpt.parent.iterdir())
    assert load_checkpoint(ckpt)[RUN_KEY]["config"]["model.hidden_size"] == 64  # the run record, in meta.pt
    saved = torch.load(tmp_path / "two" / "end.pt")
    assert saved["step"] == 1 and all(len(s) == 3 for s in saved["optimizer"].values())  # AdamW moments exist

    _probe_in_process(tmp_path / "one", steps=2, ckpt=ckpt)
    resumed = torch.load(tmp_path / "one" / "start.pt")
    assert resumed["step"] == 1
    _assert_same_state(saved, resumed)  # resharded 2 -> 1: every weight and AdamW moment as saved
    assert torch.load(tmp_path / "one" / "end.pt")["step"] == 2  # and it trains on

    # The console script pyproject.toml declares starts in a fresh interpreter (its --help imports nothing heavy);
    # the export itself runs its `main` here: a fresh interpreter would add ~7 s of imports and prove nothing more.
    hicra_export = Path(sys.executable).parent / "hicra-export"
    started = subprocess.run([str(hicra_export), "--help"], check=False, env=cli_env(), timeout=120,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert started.returncode == 0 and started.stdout.startswith("usage: hicra-export"), started.stderr[-2000:]
    export = run_in_process(export_main, "hicra-export", [str(ckpt), str(tmp_path / "hf")])
    assert export.returncode == 0 and f"hicra-export: wrote {tmp_path / 'hf'}" in export.stdout, export.stderr[-2000:]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert model.state_dict().keys() == saved["weights"].keys()
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved["weights"][name]), name


def test_another_rank_waits_for_rank_0_to_recover_before_looking_for_the_checkpoint(tmp_path, monkeypatch):
    """Killed between the two renames: `last.ckpt` is missing until rank 0 recovers it. A rank that looked at once
    would find no checkpoint and start afresh while rank 0 resumes; it waits for the leftovers to go instead."""
    import threading

    from hicra.training.sharded_checkpoint import wait_for_recovery

    target = write_sharded(tmp_path / "last.ckpt", step=1)
    write_sharded(staging_path(target), step=2)
    _kill_at(monkeypatch, "rename", 2)
    with pytest.raises(Killed):
        swap_in(staging_path(target), target)
    monkeypatch.undo()
    assert not target.exists()
    rank0 = threading.Timer(0.5, recover_interrupted_save, args=(target,))
    rank0.start()
    wait_for_recovery(target, timeout_s=30, poll_s=0.05)
    assert target.exists() and _step(target) == 2  # the checkpoint rank 0 resumes
    rank0.join()
