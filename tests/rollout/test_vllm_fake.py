"""A fake `vllm` module for the rollout=vllm tests (imported by test_vllm*.py as `rollout.test_vllm_fake`, and by the
2-rank children of test_vllm_ranks.py), and the test that it keeps the rules of the real engine it stands in for.

FakeLLM records its settings, the environment the external launcher reads, the mode it was started and called in,
every weight it is given and every request; it answers with `canned` completions. Like vLLM it reseeds the process
RNGs when it starts, and with `enable_sleep_mode` it refuses what a sleeping engine cannot do: weights written while
the "weights" memory sleeps (at level 2 it is gone), generation before both "weights" and "kv_cache" woke.
"""

from __future__ import annotations

import json
import os
import random
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

LAUNCHER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TAGS = ("weights", "kv_cache")
PROMPTS = ["What is 2 + 2?", "Compute the sum of the first three odd numbers, then explain why it is a square."]


def canned(i: int, j: int, eos: int) -> tuple[list[int], str]:
    """Completion j of request i: even j stop on EOS (odd ones without it: hit max_tokens)."""
    body = [100 + 10 * i + j] * (j + 1)
    return (body + [eos], "stop") if j % 2 == 0 else (body, "length")


def canned_logprobs(token_ids: list[int], params) -> list[dict] | None:
    """vLLM's answer with logprobs=0: per position, {sampled token: Logprob}; here -token_id / 1000."""
    if getattr(params, "logprobs", None) is None:
        return None
    return [{t: SimpleNamespace(logprob=-t / 1000)} for t in token_ids]


def modes() -> dict[str, bool]:
    return {"inference": torch.is_inference_mode_enabled(), "grad": torch.is_grad_enabled(),
            "autocast_cuda": torch.is_autocast_enabled("cuda"), "autocast_cpu": torch.is_autocast_enabled("cpu")}


class FakeLLM:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.saved = json.loads(Path(kwargs["model"], "config.json").read_text())
        self.env = {k: os.environ.get(k) for k in LAUNCHER_ENV}
        self.modes_at_init = modes()
        self.inference_mode_at_init = self.modes_at_init["inference"]
        self.awake = set(TAGS)
        self.events: list[tuple] = [("init",)]
        self.loaded: list[dict[str, torch.Tensor]] = []  # one dict per sync (a run of load calls)
        self.load_sizes: list[int] = []  # tensors per load call
        self.modes_at_load: list[dict] = []
        self.modes_at_generate: list[dict] = []
        self.requests: list[tuple[list, list, int]] = []
        self.prefix_cache_resets = 0
        seed = kwargs.get("seed", 0)  # as vLLM does when it starts
        random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
        runner = SimpleNamespace(model=SimpleNamespace(load_weights=self._record))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=SimpleNamespace(
            model_runner=runner)))

    def _record(self, weights):
        weights = list(weights)
        if "weights" not in self.awake:
            raise RuntimeError("weights written while the engine's weight memory sleeps")
        if self.events[-1][0] != "load":
            self.loaded.append({})
        self.loaded[-1].update({name: t.detach().clone() for name, t in weights})
        self.load_sizes.append(len(weights))
        self.modes_at_load.append(modes())
        self.events.append(("load", len(weights)))

    def sleep(self, level=1):
        if not self.kwargs.get("enable_sleep_mode"):
            raise AssertionError("Sleep mode is not enabled in the model config")
        self.awake = set()
        self.events.append(("sleep", level))

    def wake_up(self, tags=None):
        self.awake |= set(tags or TAGS)
        self.events.append(("wake_up", tuple(tags or TAGS)))

    def reset_prefix_cache(self):
        self.prefix_cache_resets += 1
        self.events.append(("reset_prefix_cache",))

    def generate(self, prompts, sampling_params, use_tqdm=True):
        if self.awake != set(TAGS):
            raise RuntimeError(f"generate with {sorted(set(TAGS) - self.awake)} asleep")
        self.requests.append((prompts, sampling_params, len(self.loaded)))
        self.modes_at_generate.append(modes())
        self.events.append(("generate", len(prompts)))
        outputs = []
        for i, params in enumerate(sampling_params):
            eos = params.stop_token_ids[0]
            completions = [SimpleNamespace(index=j, token_ids=canned(i, j, eos)[0], finish_reason=canned(i, j, eos)[1],
                                           stop_reason=None, logprobs=canned_logprobs(canned(i, j, eos)[0], params))
                           for j in range(params.n)]
            outputs.append(SimpleNamespace(outputs=completions[::-1]))  # any order: the sampler sorts by index
        return outputs


class FakeV1LLM(FakeLLM):
    """A vLLM V1 without the V0-compatible `llm_engine.model_executor`: only `collective_rpc` reaches the model."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.worker = SimpleNamespace(model_runner=SimpleNamespace(get_model=lambda: SimpleNamespace(
            load_weights=self._record)))
        del self.llm_engine

    def collective_rpc(self, method, args=()):
        return [method(self.worker, *args)]


def fake_vllm(llm_class=FakeLLM) -> types.ModuleType:
    module = types.ModuleType("vllm")
    module.LLM = llm_class
    module.SamplingParams = lambda **kwargs: SimpleNamespace(**kwargs)
    return module


def install_fake_vllm(monkeypatch):
    """The fake as `vllm` (FakeLLM), CUDA pretended, and the environment the sampler writes restored after the test;
    returns a function that swaps in another LLM class. Each test module's `with_fake_vllm` fixture calls it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm())
    for name in ("VLLM_ENABLE_V1_MULTIPROCESSING", *LAUNCHER_ENV):
        monkeypatch.setenv(name, "1")  # recorded, so that undo restores the original (or its absence)
        monkeypatch.delenv(name)
    return lambda llm_class=FakeLLM: monkeypatch.setitem(sys.modules, "vllm", fake_vllm(llm_class))


def test_the_fake_keeps_the_rules_of_a_sleeping_engine(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    weights = [("w", torch.zeros(1))]
    params = [SimpleNamespace(n=1, stop_token_ids=[2])]
    with pytest.raises(AssertionError, match="Sleep mode is not enabled"):
        FakeLLM(model=str(tmp_path)).sleep(level=2)
    llm = FakeLLM(model=str(tmp_path), enable_sleep_mode=True)
    llm.sleep(level=2)
    with pytest.raises(RuntimeError, match="weights written"):
        llm._record(weights)
    llm.wake_up(tags=["weights"])
    llm._record(weights)
    with pytest.raises(RuntimeError, match=r"\['kv_cache'\] asleep"):
        llm.generate([{"prompt_token_ids": [1]}], params)
    llm.wake_up(tags=["kv_cache"])
    llm.generate([{"prompt_token_ids": [1]}], params)
    assert [e[0] for e in llm.events] == ["init", "sleep", "wake_up", "load", "wake_up", "generate"]
