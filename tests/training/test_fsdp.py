"""FSDP2 under the semantics of a GPU run, on CPU: one rank over gloo, a device mesh of 1.

On NCCL Lightning validates under `torch.inference_mode()` (it falls back to `no_grad` only for gloo, XLA and its FSDP
v1 strategy), so the two-rank gloo runs in test_ddp.py never see it. Here the inference mode is put back by hand.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from support import TINY_RUN

from hicra.models.loaders import build_tiny_model
from hicra.rollout.hf import HFSampler
from hicra.training.distributed import full_weights_for_generation, shard_model


@pytest.fixture
def no_process_group_left():
    """Lightning leaves its process group initialised after fit: destroy it, so that later tests start clean."""
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def test_sharded_model_generates_under_inference_mode_and_then_trains(one_rank_mesh):
    bundle = build_tiny_model(seed=0)
    shard_model(bundle.model, one_rank_mesh)
    # torch.inference_mode: what Lightning's validation loop runs in on NCCL
    with torch.inference_mode(), full_weights_for_generation(bundle.model):
        rollout = HFSampler(max_new_tokens=4).generate(bundle.model, bundle.tokenizer, ["1 + 1 ="], 2)
    assert rollout.response_ids.shape[0] == 2
    # Nothing FSDP allocated while gathering is an inference tensor: a training forward and backward still work.
    logits = bundle.model(input_ids=rollout.response_ids).logits
    logits.float().logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in bundle.model.parameters())


@pytest.mark.slow  # a whole tiny run in-process
def test_fsdp_run_validates_under_lightnings_nccl_inference_mode(compose_cfg, tmp_path, monkeypatch,
                                                                  no_process_group_left):
    """hicra-train trainer=fsdp, in-process on one CPU rank, with Lightning's loops choosing their context as on
    NCCL: step-0 validation, one update, and the final validation."""
    import pytorch_lightning.loops.utilities as loop_utilities

    from hicra.training import preflight, run

    class NcclBackend:  # the loops' only question to torch.distributed: which backend? (gloo -> no_grad)
        def __getattr__(self, name):
            return getattr(dist, name)

        @staticmethod
        def get_backend(group=None):
            return "nccl"

    monkeypatch.setattr(loop_utilities, "dist", NcclBackend())
    monkeypatch.setattr(preflight, "check_devices", lambda cfg: None)  # trainer=fsdp is refused on CPU otherwise
    seen = []
    validation_step = run.PolicyGradientModule.validation_step
    monkeypatch.setattr(run.PolicyGradientModule, "validation_step",
                        lambda self, *a: seen.append(torch.is_inference_mode_enabled()) or validation_step(self, *a))
    cfg = compose_cfg(*TINY_RUN, "task._target_=support.ParityTask", "trainer=fsdp", "trainer.accelerator=cpu",
                      "trainer.devices=1", "trainer.precision=32-true", "trainer.max_steps=1", "logger=none",
                      f"paths.output_dir={tmp_path}")
    summary = run.train(cfg, choices={"trainer": "fsdp"})
    assert summary["steps"] == 1 and [row["step"] for row in summary["val_history"]] == [0, 1]
    assert seen[0]  # the step-0 validation (`trainer.validate`) ran under inference mode, as on NCCL


def test_bf16_precision_gathers_bf16_weights_over_fp32_masters(one_rank_mesh):
    """trainer.precision=bf16-mixed: FSDP2 gathers the weights in bf16 and reduces gradients in fp32 (verl's policy);
    the sharded master weights, their gradients (what AdamW reads) and so the optimizer state stay fp32."""
    bundle = build_tiny_model(seed=0)
    shard_model(bundle.model, one_rank_mesh, precision="bf16-mixed")
    assert {p.dtype for p in bundle.model.parameters()} == {torch.float32}  # sharded masters
    with full_weights_for_generation(bundle.model):
        assert {p.dtype for p in bundle.model.parameters()} == {torch.bfloat16}  # gathered for the rollout
    assert {p.dtype for p in bundle.model.parameters()} == {torch.float32}
    logits = bundle.model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.dtype == torch.bfloat16  # computed on the gathered bf16 weights
    logits.float().logsumexp(-1).mean().backward()
    assert {p.grad.dtype for p in bundle.model.parameters()} == {torch.float32}
