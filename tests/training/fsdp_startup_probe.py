"""trainer=fsdp's start-up on two gloo ranks (CPU), as configure_model runs it: rank 0 loads a saved model, rank 1
builds it on the meta device, `shard_from_rank0` shards both and fills rank 1's shards from rank 0. Each rank compares
what it ends with to the model loaded as today (every rank reading the folder) and saves its findings to OUT/rankR.pt.

    python tests/training/fsdp_startup_probe.py MODEL_FOLDER OUT          # gloo, CPU (tests/training/test_fsdp_startup.py)
    python tests/training/fsdp_startup_probe.py MODEL_FOLDER OUT nccl     # 2 GPUs: also where the reference's shards live
"""

from __future__ import annotations

import os
import sys
import threading

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

IDS = torch.tensor([[5, 17, 2, 9, 33, 4], [7, 7, 12, 40, 1, 3]])


def tensors_on_meta(model) -> bool:
    return all(t.is_meta for t in (*model.parameters(), *model.buffers()))


def same_weights(model, expected) -> bool:
    """Every weight gathered from its shards (full_tensor) and every buffer equals today's model's."""
    pairs = zip(model.state_dict(keep_vars=True).items(), expected.state_dict(keep_vars=True).items(), strict=True)
    weights = all(n == m and torch.equal(w.full_tensor(), e) for (n, w), (m, e) in pairs)
    buffers = all(n == m and torch.equal(b, e)
                  for (n, b), (m, e) in zip(model.named_buffers(), expected.named_buffers(), strict=True))
    return weights and buffers


def same_shards(model, other) -> bool:
    """This rank's shards (and buffers) of two models sharded alike are equal (wherever each keeps them)."""
    pairs = zip((*model.parameters(), *model.buffers()), (*other.parameters(), *other.buffers()), strict=True)
    return all(torch.equal(_local(a).cpu(), _local(b).cpu()) for a, b in pairs)


def _local(tensor):
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def tied(model) -> bool:
    return model.lm_head.weight is model.model.embed_tokens.weight


def worker(rank: int, folder: str, out: str, backend: str) -> None:
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"file://{out}/store", rank=rank, world_size=2)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule

    from hicra.models.loaders import load_pretrained
    from hicra.models.reference import build_reference
    from hicra.training.distributed import shard_from_rank0

    mesh = init_device_mesh(device.type, (2,))
    expected = load_pretrained(folder).model.to(device)  # today's start-up: every rank reads the whole model
    ids = IDS.to(device)
    found = {}
    models = {}
    for offload in (False, True):
        policy = load_pretrained(folder, meta_device=rank != 0).model
        reference = build_reference(policy, needed=True, empty=True)
        found[f"policy_on_meta_before/{offload}"] = tensors_on_meta(policy)
        found[f"reference_on_meta_before/{offload}"] = tensors_on_meta(reference)
        shard_from_rank0(policy, reference, mesh, reference_offload=offload)
        policy.to(device), reference.to(device)  # what Lightning's model_to_device does next: offloaded shards stay
        found[f"policy_same/{offload}"] = same_weights(policy, expected)
        found[f"reference_same/{offload}"] = same_shards(reference, policy)  # so today's weights too
        found[f"tied/{offload}"] = tied(policy) and tied(reference)
        found[f"reference_frozen/{offload}"] = not any(p.requires_grad for p in reference.parameters())
        found[f"reference_offloaded/{offload}"] = all(
            fsdp_param.offload_to_cpu == offload for module in reference.modules() if isinstance(module, FSDPModule)
            for group in module._get_fsdp_state()._fsdp_param_groups for fsdp_param in group.fsdp_params)
        found[f"reference_shards_on/{offload}"] = {p.to_local().device.type for p in reference.parameters()}
        models[offload] = policy, reference
    found["inv_freq"] = models[False][0].model.rotary_emb.inv_freq.cpu()  # a non-persistent buffer: not broadcast
    # by the state dict; the test compares rank 1's with rank 0's
    with torch.no_grad():
        found["reference_logits"] = {offload: models[offload][1](input_ids=ids).logits.cpu() for offload in (False, True)}
        found["expected_logits"] = expected(input_ids=ids).logits.cpu()
    # one training step on the same batch on both ranks: FSDP averages two equal gradients
    policy = models[False][0]
    loss = policy(input_ids=ids).logits.logsumexp(-1).mean()
    loss.backward()
    expected_loss = expected(input_ids=ids).logits.logsumexp(-1).mean()
    expected_loss.backward()
    found["loss"], found["expected_loss"] = float(loss), float(expected_loss)
    found["gradients"] = {n: p.grad.full_tensor().cpu() for n, p in policy.named_parameters()}
    found["expected_gradients"] = {n: p.grad.cpu() for n, p in expected.named_parameters()}
    torch.save(found, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def exit_when_failed(rank1) -> None:
    """End this process (rank 0) as soon as rank 1 fails: rank 0 would otherwise wait for it in the rendezvous or a
    collective until the test's timeout (300 s) instead of failing at once."""
    rank1.join()
    if rank1.exitcode != 0:
        print(f"fsdp_startup_probe: rank 1 failed (exit code {rank1.exitcode}); rank 0 stops", file=sys.stderr, flush=True)
        os._exit(1)


if __name__ == "__main__":
    # This process is rank 0 and starts only rank 1: mp.spawn would start both and leave a third interpreter (torch
    # imported, ~2 s of CPU) waiting. Rank 1 is a daemon, ended with this process if rank 0 fails.
    args = (sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "gloo")
    rank1 = mp.get_context("spawn").Process(target=worker, args=(1, *args), daemon=True)
    rank1.start()
    watcher = threading.Thread(target=exit_when_failed, args=(rank1,), daemon=True)
    watcher.start()
    worker(0, *args)
    watcher.join()  # the watcher is rank 1's only waiter: two threads in waitpid race, and the loser reads no exit code
    sys.exit(rank1.exitcode)
