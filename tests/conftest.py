"""Shared fixtures: the real tokenizer and Hydra composition (helpers shared by tests live in support.py)."""

from __future__ import annotations

import pytest
from support import composer


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer (byte-level BPE, eos = pad = id 2), loaded offline once."""
    from hicra.models.loaders import load_tokenizer

    return load_tokenizer("bundled://smollm2-135m-instruct")


@pytest.fixture
def compose_cfg():
    """compose_cfg(*overrides) -> DictConfig composed from conf/train.yaml with Hydra's compose API."""
    from hydra.core.global_hydra import GlobalHydra

    yield composer("train")
    GlobalHydra.instance().clear()
