"""One gradient exchange per optimizer step: `gradient_sync` skips the exchange on every micro-batch but the last,
under DDP (`no_sync`) and under FSDP2 (`set_requires_gradient_sync`). In-process on one gloo rank here; the two-rank
runs (tests/training/test_ddp.py) count the exchanges of a real update and check its gradient against one rank's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from hicra.training.distributed import gradient_sync, shard_model


@pytest.fixture
def one_rank(tmp_path):
    """A gloo process group of one rank in this process; torn down after the test."""
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _sharded():
    from torch.distributed.device_mesh import init_device_mesh

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    shard_model(model, init_device_mesh("cpu", (1,)))
    return model


def _reduces(model) -> set[bool]:
    """Whether FSDP2 will reduce-scatter each parameter group's gradients after the next backward."""
    return {group.reduce_grads for module in model.modules() if hasattr(module, "_get_fsdp_state")
            for group in module._get_fsdp_state()._fsdp_param_groups}


def test_fsdp_reduces_on_the_last_micro_batch_only_unless_asked_for_every_one(one_rank):
    model = _sharded()
    with gradient_sync(None, last=False, model=model):
        assert _reduces(model) == {False}
    assert _reduces(model) == {True}  # outside an update FSDP2 behaves as by default
    with gradient_sync(None, last=True, model=model):
        assert _reduces(model) == {True}
    with gradient_sync(None, last=False, model=model, every_micro_batch=True):  # memory-bound runs
        assert _reduces(model) == {True}
    with pytest.raises(RuntimeError), gradient_sync(None, last=False, model=model):
        raise RuntimeError("a failed micro-batch")
    assert _reduces(model) == {True}


def test_fsdp_gradients_accumulated_without_sync_equal_the_synced_ones(one_rank):
    """Skipping the reduce-scatter keeps unsharded gradients that add up: the same sum as reducing every time."""
    torch.manual_seed(0)
    batches = [torch.randn(3, 4) for _ in range(3)]
    grads = []
    for every in (False, True):
        torch.manual_seed(1)  # the same initial weights for both
        model = _sharded()
        for i, batch in enumerate(batches):
            with gradient_sync(None, last=i == 2, model=model, every_micro_batch=every):
                model(batch).square().sum().backward()
        grads.append([p.grad.full_tensor() for p in model.parameters()])
    for skipped, synced in zip(*grads, strict=True):
        torch.testing.assert_close(skipped, synced)


def test_ddp_all_reduces_once_per_update(one_rank):
    """DDP's comm hook runs for each bucket it all-reduces: only during the last micro-batch's backward."""
    ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
    exchanges: list[int] = []
    micro_batch = [-1]

    def counting_allreduce(state, bucket):
        exchanges.append(micro_batch[0])
        fut = torch.futures.Future()
        fut.set_result(bucket.buffer())
        return fut

    ddp.register_comm_hook(None, counting_allreduce)
    trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(model=ddp))  # what Lightning's DDP holds
    for update in range(2):
        for i in range(3):
            micro_batch[0] = update * 3 + i
            with gradient_sync(trainer, last=i == 2, model=ddp.module):
                ddp(torch.randn(2, 4)).sum().backward()
    assert exchanges == [2, 5]  # one bucket (a small model), exchanged at the last micro-batch of each update


def _plan(**overrides):
    from hicra.training.memory_check import run_dtypes
    from hicra.training.memory_plan import ModelShape, RunShape, memory_plan

    model = ModelShape(parameters=1000, trainable=800, block_parameters=100, layers=2, hidden=8, intermediate=16,
                       kv_heads=1, head_dim=4, vocab=50)
    run = dict(ranks=4, sharded=True, **run_dtypes("float32", "bf16-mixed", True), optimizer_bytes=8,
               reference=True, gradient_checkpointing=False, rollout_rows=8, val_rows=2, prompt_tokens=8,
               new_tokens=6, val_new_tokens=6, micro_batch_size=2, scoring_pass=False,
               unsharded_gradient_accumulation=True)
    return memory_plan(model, RunShape(**run | overrides))


def test_the_memory_plan_counts_the_unsharded_gradients_an_fsdp_update_accumulates():
    plan = _plan()
    assert plan.terms["accumulated_gradients"] == 800 * 4  # every trainable weight's, fp32 (FSDP2 reduces in fp32)
    assert "accumulated_gradients" in plan.phases["update"] and "accumulated_gradients" not in plan.phases["generation"]
    assert plan.terms["gradients"] == 800 * 4 // 4  # the sharded ones, kept between updates
    bf16_weights = _plan(weight_bytes=2, compute_bytes=2, gather_bytes=2)  # model.dtype=bfloat16: still fp32 sums
    assert bf16_weights.terms["accumulated_gradients"] == 800 * 4
    for no_accumulation in ({"unsharded_gradient_accumulation": False},  # a reduce-scatter per micro-batch
                            {"rollout_rows": 2},  # one micro-batch
                            {"sharded": False, "ranks": 1}):  # DDP or one device: gradients are whole anyway
        assert _plan(**no_accumulation).terms["accumulated_gradients"] == 0, no_accumulation


def test_the_memory_plan_puts_an_offloaded_reference_in_host_memory():
    assert _plan().terms["reference"] == 1000 * 4 // 4 and _plan(reference_offload=True).terms["reference"] == 0
