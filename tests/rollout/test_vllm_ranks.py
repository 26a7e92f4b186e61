"""rollout=vllm on two real gloo ranks, each with the fake vLLM (rollout/test_vllm_fake.py) as its engine: what every
rank's engine receives with tensor_parallel_size=2 (one engine over both ranks) and 1 (two data-parallel engines),
the rows each rank gets back, the seeds, the sleep/wake order, the launcher's environment, and an FSDP2 policy
sharded over both ranks synced as whole tensors.

This file is also the ranks' program: `python test_vllm_ranks.py RANK WORLD PORT OUT` runs one rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hicra.browser import free_port

pytestmark = pytest.mark.slow  # two real ranks, each importing torch and transformers: ~20-40 s on 2 busy cores

G = 3
RANK_PROMPTS = [["What is 2 + 2?", "Name a prime above 10."], ["Compute 7 * 6."]]  # uneven on purpose


def run_rank(rank: int, world: int, port: int, out: Path) -> None:
    import torch
    import torch.distributed as dist
    from rollout.test_vllm_fake import LAUNCHER_ENV, fake_vllm
    from torch.distributed.device_mesh import init_device_mesh

    from hicra.models.loaders import build_tiny_model
    from hicra.rollout.sampling_stream import SamplingStream
    from hicra.rollout.vllm import VLLMSampler
    from hicra.training.distributed import shard_model

    for name in LAUNCHER_ENV:  # as under Lightning's launcher on rank 0: the sampler takes them from the group
        os.environ.pop(name, None)
    torch.cuda.is_available = lambda: True
    sys.modules["vllm"] = fake_vllm()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    bundle = build_tiny_model(seed=0)
    tok = bundle.tokenizer
    report = {"eos": tok.eos_token_id, "pad": tok.pad_token_id,
              "own": tok(RANK_PROMPTS[rank], add_special_tokens=False).input_ids}
    for tp in (2, 1):
        sampler = VLLMSampler(max_new_tokens=8, max_prompt_tokens=16, tensor_parallel_size=tp, seed=3)
        with SamplingStream(0, rank).active("cpu"):  # the rank's own stream, as the LightningModule samples
            batch = sampler.generate(bundle.model, tok, RANK_PROMPTS[rank], group_size=G)
        llm = sampler._llm
        prompts, params, _ = llm.requests[0]
        report[f"tp{tp}"] = {
            "kwargs": {k: v for k, v in llm.kwargs.items() if k not in ("model", "tokenizer")}, "env": llm.env,
            "events": [list(e) for e in llm.events], "requests": [p["prompt_token_ids"] for p in prompts],
            "seeds": [p.seed for p in params], "n": [p.n for p in params],
            "rows": [row[:n].tolist() for row, n in zip(batch.response_ids, batch.response_mask.sum(1).tolist())],
            "row_prompts": [row[m].tolist() for row, m in zip(batch.prompt_ids, batch.prompt_mask)]}
    whole = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    shard_model(bundle.model, init_device_mesh("cpu", (world,)))
    sampler = VLLMSampler(max_new_tokens=8, max_prompt_tokens=16)
    with SamplingStream(0, rank).active("cpu"):
        sampler.generate(bundle.model, tok, RANK_PROMPTS[rank], group_size=G)
    (synced,) = sampler._llm.loaded
    report["fsdp"] = {"shard_rows": bundle.model.state_dict()["model.embed_tokens.weight"].to_local().shape[0],
                      "rows": whole["model.embed_tokens.weight"].shape[0],
                      "whole": synced.keys() == whole.keys() and all(
                          type(synced[k]) is torch.Tensor and torch.equal(synced[k], v) for k, v in whole.items()),
                      "load_sizes": sorted(set(sampler._llm.load_sizes))}
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


def _canned_rows(requests: range, eos: int) -> list[list[int]]:
    from rollout.test_vllm_fake import canned

    return [canned(i, j, eos)[0] for i in requests for j in range(G)]


def test_two_ranks_share_or_split_engines_and_keep_their_own_rows(tmp_path):
    from support import PROJECT_ROOT, cli_env

    port = free_port()
    ranks = [subprocess.Popen([sys.executable, __file__, str(rank), "2", str(port), str(tmp_path)], cwd=PROJECT_ROOT,
                              env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    logs = [r.communicate(timeout=180)[0] for r in ranks]
    assert [r.returncode for r in ranks] == [0, 0], "\n".join(log[-3000:] for log in logs)
    r0, r1 = (json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2))
    eos = r0["eos"]

    # tensor_parallel_size=2: one engine over both ranks, fed the same requests (both ranks' prompts, rank order)
    # with the same seeds; each rank keeps its own rows.
    both = r0["own"] + r1["own"]
    for rank, r in enumerate((r0, r1)):
        tp = r["tp2"]
        assert tp["kwargs"]["tensor_parallel_size"] == 2 and tp["kwargs"]["seed"] == 3
        assert tp["kwargs"]["distributed_executor_backend"] == "external_launcher"
        assert tp["env"] == {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        assert tp["requests"] == both and tp["n"] == [G] * 3
        assert tp["row_prompts"] == [p for p in r["own"] for _ in range(G)]
    assert r0["tp2"]["seeds"] == r1["tp2"]["seeds"]
    assert r0["tp2"]["rows"] == _canned_rows(range(2), eos)  # requests 0 and 1 of the engine
    assert r1["tp2"]["rows"] == _canned_rows(range(2, 3), eos)  # request 2
    children = [s + j for s in r0["tp2"]["seeds"] for j in range(G)]
    assert len(set(children)) == len(children)

    # tensor_parallel_size=1: two data-parallel engines, each with its rank's prompts; no child seed in common.
    assert [r["tp1"]["requests"] for r in (r0, r1)] == [r0["own"], r1["own"]]
    assert [r["tp1"]["kwargs"]["seed"] for r in (r0, r1)] == [3, 4]  # the engine's seed: + its data-parallel index
    assert r0["tp1"]["rows"] == _canned_rows(range(2), eos) and r1["tp1"]["rows"] == _canned_rows(range(1), eos)
    children = [{s + j for s in r["tp1"]["seeds"] for j in range(G)} for r in (r0, r1)]
    assert len(children[0]) == 2 * G and len(children[1]) == G and not children[0] & children[1]

    # Every engine: asleep from its start, woken weights-first for the sync, asleep again after generating.
    for r in (r0, r1):
        for tp in ("tp2", "tp1"):
            names = [e[0] for e in r[tp]["events"]]
            assert names[:3] == ["init", "sleep", "wake_up"] and names[-4:] == ["reset_prefix_cache", "wake_up",
                                                                                 "generate", "sleep"], names
            assert [e for e in r[tp]["events"] if e[0] in ("sleep", "wake_up")] == [
                ["sleep", 2], ["wake_up", ["weights"]], ["wake_up", ["kv_cache"]], ["sleep", 2]]

    # FSDP2 over both ranks: each holds half the rows of a weight, and each engine gets every weight whole.
    for r in (r0, r1):
        assert r["fsdp"]["shard_rows"] * 2 == r["fsdp"]["rows"] and r["fsdp"]["whole"] and r["fsdp"]["load_sizes"] == [1]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: `rollout.test_vllm_fake`, `support`
    run_rank(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
