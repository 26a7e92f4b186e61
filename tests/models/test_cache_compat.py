"""The KV cache's name (hicra/models/cache_compat.py): read from the installed transformers, and the decoding loop and
the prompt prefill run on a release that knows only `past_key_values` (transformers 5.17-5.20) as on one that says
`cache`. `make test-compat` runs this file and the decoding tests on a real 5.17; here an old-release model is
emulated over the installed one."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from transformers.cache_utils import Cache

from hicra.models import cache_compat
from hicra.models.loaders import build_tiny_model
from hicra.rollout.decode import decode

INSTALLED_NAME = cache_compat.CACHE_NAME


@dataclasses.dataclass
class _OldOutput:
    logits: torch.Tensor | None = None
    past_key_values: object = None


@dataclasses.dataclass
class _NewOutput:
    logits: torch.Tensor | None = None
    cache: object = None


def test_the_name_is_read_from_the_output_class():
    assert cache_compat.cache_name_of(_OldOutput) == "past_key_values"
    assert cache_compat.cache_name_of(_NewOutput) == "cache"


class _PastKeyValuesOnlyModel(torch.nn.Module):
    """A model as transformers 5.17-5.20 build it: forward knows `past_key_values` and no `cache`, and its output
    carries the cache as `past_key_values` only."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, past_key_values=None, **kwargs):
        if "cache" in kwargs:
            raise TypeError("forward() got an unexpected keyword argument 'cache'")
        out = self.model(**kwargs, **{INSTALLED_NAME: past_key_values})
        return SimpleNamespace(logits=out.logits, past_key_values=getattr(out, INSTALLED_NAME))


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_model(seed=0)


def test_the_installed_release_returns_its_cache_under_that_name(tiny):
    ids = torch.tensor([[5, 6, 7]])
    out = tiny.model(input_ids=ids, use_cache=True)
    assert isinstance(cache_compat.output_cache(out), Cache)


def test_decode_on_a_release_that_knows_only_past_key_values(tiny, monkeypatch):
    enc = tiny.tokenizer(["What is 2 + 2?", "Hi"], return_tensors="pt", padding=True, add_special_tokens=False)
    pad = tiny.tokenizer.pad_token_id
    expected = decode(tiny.model, enc.input_ids, enc.attention_mask, 2, 6, [-1], pad, greedy=True)
    monkeypatch.setattr(cache_compat, "CACHE_NAME", cache_compat.cache_name_of(_OldOutput))
    got = decode(_PastKeyValuesOnlyModel(tiny.model), enc.input_ids, enc.attention_mask, 2, 6, [-1], pad,
                 greedy=True)
    assert torch.equal(got, expected)
