"""Fixtures of the vLLM tests (test_vllm*.py): a fake `vllm` module in place of the real one, and the tiny policy."""

from __future__ import annotations

import pytest
from rollout.test_vllm_fake import install_fake_vllm

from hicra.models.loaders import build_tiny_model


@pytest.fixture
def with_fake_vllm(monkeypatch):
    return install_fake_vllm(monkeypatch)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_model(seed=0)
