"""benchmarks/bench_decode.py on the tiny model: the floor (bench_support.decode_floor) is one forward per step, every
variant does the same fixed-length work, and the "before" variants put the loop back as it was. No timing thresholds.
And no benchmark script imports another: what two of them share lives in bench_support.py."""

from __future__ import annotations

import ast

import pytest
import torch
from support import PROJECT_ROOT

from hicra.models.loaders import build_tiny_model
from hicra.rollout import decode as decode_module


@pytest.fixture
def bench_decode(monkeypatch):
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "benchmarks"))
    import bench_decode

    return bench_decode


@pytest.fixture
def bench_support(monkeypatch):
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "benchmarks"))
    import bench_support

    return bench_support


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_model(seed=0)


def _prompts(tokenizer):
    enc = tokenizer(["What is 2 + 2?", "Add 3 and 4."], return_tensors="pt", padding=True, add_special_tokens=False)
    return enc.input_ids, enc.attention_mask


def test_floor_times_one_forward_per_new_token(bench_support, tiny):
    ids, mask = _prompts(tiny.tokenizer)
    floor = bench_support.decode_floor(tiny.model, ids, mask, group_size=3, max_new_tokens=10, calls=3)
    assert floor["rows"] == 6 and floor["cache_length"] == ids.shape[1] + 5
    assert floor["floor_s"] == pytest.approx(floor["forward_s"] * 10)


def test_every_variant_does_the_same_work_and_the_loop_is_restored(bench_decode, tiny):
    ids, mask = _prompts(tiny.tokenizer)
    eos = [tiny.tokenizer.eos_token_id]
    runs = bench_decode.variants(tiny.model, tiny.tokenizer, ids, mask, 2, 6, eos, 1.0)
    assert set(runs) == {"generate", "generate-static", "loop-before", "loop-prealloc", "loop-cdf", "loop",
                         "loop-packed"}
    restored = decode_module.preallocate, decode_module.sample_from
    for name in ("generate", "loop-before", "loop-prealloc", "loop-cdf", "loop", "loop-packed"):
        torch.manual_seed(0)
        assert runs[name]().shape == (4, 6), name  # min_new_tokens = max: no row stops early
        assert (decode_module.preallocate, decode_module.sample_from) == restored
        assert all("forward" not in vars(m) for m in tiny.model.modules())  # packed linears unpacked again


def test_no_benchmark_script_imports_another():
    folder = PROJECT_ROOT / "benchmarks"
    scripts = {p.stem for p in folder.glob("*.py") if "__main__" in p.read_text()}  # bench_step, bench_decode, ...
    assert {"bench_step", "bench_decode"} <= scripts
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | \
                   {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert imported & scripts == set(), path.name
