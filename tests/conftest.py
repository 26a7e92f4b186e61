"""Shared test fixtures."""

import pytest


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer (byte-level BPE, eos = pad = id 2), loaded offline once."""
    from hicra.models import load_tokenizer

    return load_tokenizer("bundled://smollm2-135m-instruct")
