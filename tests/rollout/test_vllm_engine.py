"""The vLLM engine's life in the training process, with the fake engine (rollout/test_vllm_fake.py): when it sleeps
and wakes, what it inherits from Lightning (autocast, inference mode), what it leaves behind (reseeded RNGs), the
request seeds of data-parallel engines, and the tensor-parallel sizes refused."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from rollout.test_vllm_fake import PROMPTS

from hicra.errors import ConfigError
from hicra.rollout.vllm import VLLMSampler
from hicra.rollout.vllm_groups import SEED_SPACE, EngineGroup, request_seeds


@pytest.fixture
def cache_empties(monkeypatch):
    """torch.cuda.empty_cache calls, recorded (a no-op on this CPU machine anyway)."""
    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(1))
    return calls


def test_engine_sleeps_between_rollouts_and_wakes_weights_then_kv_cache(with_fake_vllm, tiny, cache_empties):
    sampler = VLLMSampler(max_new_tokens=8)
    sampler.generate(tiny.model, tiny.tokenizer, PROMPTS, group_size=2)
    sampler.generate(tiny.model, tiny.tokenizer, PROMPTS, group_size=2, greedy=True)
    llm = sampler._llm
    assert llm.kwargs["enable_sleep_mode"] is True
    n = len(tiny.model.state_dict())
    one_rollout = [("wake_up", ("weights",)), *[("load", 1)] * n, ("reset_prefix_cache",), ("wake_up", ("kv_cache",)),
                   ("generate", 2), ("sleep", 2)]
    # asleep (level 2: weights and KV cache dropped) from its start, and again after every generation
    assert llm.events == [("init",), ("sleep", 2), *one_rollout, *one_rollout]
    assert len(cache_empties) == 1 + 3 * 2  # after the first sleep; before each wake and after each sleep


def test_without_sleep_mode_the_engine_keeps_its_memory(with_fake_vllm, tiny, cache_empties):
    sampler = VLLMSampler(max_new_tokens=8, enable_sleep_mode=False)
    sampler.generate(tiny.model, tiny.tokenizer, PROMPTS, group_size=2)
    llm = sampler._llm
    assert llm.kwargs["enable_sleep_mode"] is False
    assert {e[0] for e in llm.events} == {"init", "load", "reset_prefix_cache", "generate"} and not cache_empties


def test_engine_starts_and_samples_outside_autocast_inference_mode_and_graph(with_fake_vllm, tiny):
    """Lightning samples inside its autocast and, validating on NCCL, inference mode: the engine sees neither."""
    sampler = VLLMSampler(max_new_tokens=8)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        sampler.generate(tiny.model, tiny.tokenizer, PROMPTS, group_size=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")  # the test's context is real
        sampler.generate(tiny.model, tiny.tokenizer, PROMPTS, group_size=2, greedy=True)
    llm = sampler._llm
    plain = {"inference": False, "grad": False, "autocast_cuda": False, "autocast_cpu": False}
    assert llm.modes_at_init == plain
    assert llm.modes_at_generate == [plain, plain] and all(m == plain for m in llm.modes_at_load)


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_a_lazily_started_engine_leaves_the_process_rngs_where_they_were(with_fake_vllm, tiny):
    """The fake reseeds Python, NumPy and torch when it starts, as vLLM does. A run that starts its engine at this
    rollout (a resumed run) and one whose engine was already running draw the same request seeds and leave the
    same RNG states behind: resuming stays bit-exact."""
    def rollout(sampler):
        random.seed(11), np.random.seed(11), torch.manual_seed(11)
        sampler.generate(tiny.model, tiny.tokenizer, PROMPTS, group_size=2)
        return [p.seed for p in sampler._llm.requests[-1][1]], _draws()

    running = VLLMSampler(max_new_tokens=8, seed=5)
    running.generate(tiny.model, tiny.tokenizer, PROMPTS, group_size=2)  # started earlier
    fresh = VLLMSampler(max_new_tokens=8, seed=5)  # starts (and reseeds) inside the rollout below
    assert rollout(fresh) == rollout(running)
    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    torch.randint(0, 2**62, ())  # the sampler's one draw for its request seeds
    untouched = _draws()
    assert rollout(VLLMSampler(max_new_tokens=8, seed=5))[1] == untouched  # nothing else moved


@pytest.mark.parametrize("engines,requests,G", [(1, 2, 3), (4, 8, 16), (8, 64, 8)])
def test_request_seeds_never_meet_across_prompts_or_engines(engines, requests, G):
    """All B = requests x G child seeds (request seed + j) of every data-parallel engine of a step are distinct,
    whatever each engine's rank drew: the same draw, the smallest and the largest."""
    for draws in ([0] * engines, [2**62 - 1] * engines, list(range(engines)), [7 * k for k in range(engines)]):
        children = [s + j for k in range(engines)
                    for s in request_seeds(draws[k], EngineGroup(k, engines, 1), requests, G) for j in range(G)]
        assert len(set(children)) == len(children) == engines * requests * G
        assert 0 <= min(children) and max(children) < SEED_SPACE


def test_request_seeds_are_the_same_on_every_rank_of_an_engine():
    """Tensor-parallel ranks 2 and 3 (engine 1 of 2) compute the same seeds from their engine's shared draw."""
    ranks = [EngineGroup(rank, 4, 2) for rank in (2, 3)]
    assert request_seeds(99, ranks[0], 3, 4) == request_seeds(99, ranks[1], 3, 4)
    assert request_seeds(99, EngineGroup(0, 4, 2), 3, 4) != request_seeds(99, ranks[0], 3, 4)


def test_a_tensor_parallel_size_that_does_not_divide_the_ranks_is_refused_in_one_line(with_fake_vllm, tiny):
    sampler = VLLMSampler(max_new_tokens=8, tensor_parallel_size=2)  # one process here: 2 does not divide 1
    with pytest.raises(ConfigError, match=r"^rollout.tensor_parallel_size=2 does not divide the 1 training ranks "
                                          r"\(trainer.devices x trainer.num_nodes\); allowed: a divisor of 1, e.g. 1$"):
        sampler.generate(tiny.model, tiny.tokenizer, PROMPTS, group_size=2)
