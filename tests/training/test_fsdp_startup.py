"""trainer=fsdp's meta-device start-up: only global rank 0 reads the weights, the other ranks build the model on the
meta device (no host memory for its weights) and receive their shards from rank 0; the KL term's reference is built
from the policy's shards, in host memory with `reference_offload`. The two-rank run is tests/training/fsdp_startup_probe.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from support import PROJECT_ROOT, cli_env

from hicra.errors import ConfigError
from hicra.models.loaders import build_tiny_model, load_pretrained
from hicra.models.reference import build_reference


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """The tiny model as a local folder (weights, config, tokenizer): what `model=hf model.name_or_path=...` loads."""
    folder = tmp_path_factory.mktemp("tiny_model")
    bundle = build_tiny_model(seed=0)
    bundle.model.save_pretrained(folder)
    bundle.tokenizer.save_pretrained(folder)
    return folder


def structure(model) -> list[tuple[str, tuple, torch.dtype]]:
    return [(name, tuple(t.shape), t.dtype) for name, t in (*model.named_parameters(), *model.named_buffers())]


def on_meta(model) -> bool:
    return all(t.is_meta for t in (*model.parameters(), *model.buffers()))


def test_a_meta_device_load_is_the_same_model_without_its_weights(saved_model):
    loaded, empty = load_pretrained(str(saved_model)).model, load_pretrained(str(saved_model), meta_device=True).model
    assert on_meta(empty) and not on_meta(loaded)
    assert structure(empty) == structure(loaded)
    assert empty.config.to_dict() == loaded.config.to_dict()  # prompt sharing, attention, dtype, ids
    assert empty.generation_config.to_dict() == loaded.generation_config.to_dict()
    assert empty.lm_head.weight is empty.model.embed_tokens.weight  # tied, as loaded
    assert not empty.training and not loaded.training
    tiny, tiny_empty = build_tiny_model(seed=0).model, build_tiny_model(seed=0, meta_device=True).model
    assert on_meta(tiny_empty) and structure(tiny_empty) == structure(tiny)
    assert tiny_empty.lm_head.weight is tiny_empty.model.embed_tokens.weight


def test_an_empty_reference_holds_no_weights_and_leaves_the_policy_alone():
    policy = build_tiny_model(seed=0).model
    before = {name: (p.data_ptr(), p.clone()) for name, p in policy.named_parameters()}
    reference = build_reference(policy, needed=True, empty=True)
    assert on_meta(reference) and structure(reference) == structure(policy)
    assert reference.lm_head.weight is reference.model.embed_tokens.weight
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())
    for name, p in policy.named_parameters():  # the policy keeps its own tensors and values
        assert p.data_ptr() == before[name][0] and torch.equal(p, before[name][1]) and p.requires_grad, name


@pytest.mark.slow  # two processes importing torch and transformers: 20-40 s on 2 busy cores
def test_two_ranks_start_from_rank_0s_weights_as_if_each_had_loaded_them(saved_model, tmp_path):
    ranks = _two_ranks(saved_model, tmp_path, "gloo")
    assert ranks[1]["reference_shards_on/True"] == {"cpu"}  # offloaded
    _check(ranks)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_two_gpus_start_from_rank_0s_weights_and_keep_an_offloaded_reference_in_host_memory(saved_model, tmp_path):
    """NCCL, and a reference whose shards stay in (pinned) host memory after Lightning's model.to(device)."""
    ranks = _two_ranks(saved_model, tmp_path, "nccl")
    for found in ranks:
        assert found["reference_shards_on/True"] == {"cpu"} and found["reference_shards_on/False"] == {"cuda"}
    _check(ranks)


def _two_ranks(saved_model, tmp_path, backend: str) -> list[dict]:
    subprocess.run([sys.executable, str(PROJECT_ROOT / "tests" / "training" / "fsdp_startup_probe.py"),
                    str(saved_model), str(tmp_path), backend], cwd=tmp_path, env=cli_env(), check=True, timeout=300,
                   stdin=subprocess.DEVNULL, capture_output=True)
    return [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]


def _check(ranks: list[dict]) -> None:
    for offload in (False, True):
        # rank 1 held no weights before the start-up (its host memory: none for the model, the reference neither);
        # rank 0 held the one loaded copy
        assert ranks[1][f"policy_on_meta_before/{offload}"] and not ranks[0][f"policy_on_meta_before/{offload}"]
        assert ranks[0][f"reference_on_meta_before/{offload}"] and ranks[1][f"reference_on_meta_before/{offload}"]
        for rank, found in enumerate(ranks):
            for check in ("policy_same", "reference_same", "tied", "reference_frozen", "reference_offloaded"):
                assert found[f"{check}/{offload}"], (check, offload, rank)
    assert torch.equal(ranks[1]["inv_freq"], ranks[0]["inv_freq"])  # the rotary buffer rank 1 had only on meta
    for found in ranks:
        logits = found["reference_logits"]
        assert torch.equal(logits[True], logits[False])  # offloaded or not, the same reference log-probs
        # the same weights, gathered: the same numbers as today's model up to the order of float sums
        torch.testing.assert_close(logits[False], found["expected_logits"], rtol=1e-5, atol=1e-6)
        assert found["loss"] == pytest.approx(found["expected_loss"], rel=1e-6)
        for name, grad in found["gradients"].items():
            torch.testing.assert_close(grad, found["expected_gradients"][name], rtol=1e-5, atol=1e-6, msg=name)


def test_run_builds_rank_1_on_meta_and_refuses_an_offload_without_fsdp(compose_cfg, monkeypatch):
    from omegaconf import open_dict
    from pytorch_lightning.utilities import rank_zero_only

    from hicra.training import preflight as checks
    from hicra.training import run
    from hicra.training.preflight import preflight

    monkeypatch.setattr(checks, "check_devices", lambda cfg: None)  # trainer=fsdp and ddp want GPUs otherwise

    def builder(trainer: str):
        cfg = compose_cfg("experiment=smoke", "algorithm.kl_coef=0.1", f"trainer={trainer}")
        checked = preflight(cfg, {})  # (algorithm, sampler, task)

        def built(rank: int, **keys):
            with open_dict(cfg):  # keys that conf/train.yaml does not hold yet (hicra.config.schema would refuse them)
                cfg.update(keys)
            monkeypatch.setattr(rank_zero_only, "rank", rank)
            return run.build_module(cfg, *checked, num_batches=1)[2]

        return built

    fsdp, ddp = builder("fsdp"), builder("ddp")
    rank1 = fsdp(rank=1)
    assert on_meta(rank1.policy) and on_meta(rank1.reference)
    rank0 = fsdp(rank=0)
    assert not any(p.is_meta for p in rank0.policy.parameters()) and on_meta(rank0.reference)
    rank1 = ddp(rank=1)  # every DDP rank holds whole weights: loaded as before
    assert not any(p.is_meta for p in (*rank1.policy.parameters(), *rank1.reference.parameters()))
    with pytest.raises(ConfigError, match=r"^reference_offload=true needs trainer=fsdp .*allowed with this trainer: "
                                          r"reference_offload=false$"):
        ddp(rank=0, reference_offload=True)
