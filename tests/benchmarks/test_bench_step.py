"""benchmarks/bench_step.py: the report arithmetic, the arms' overrides, and one real `--preset tiny` run.

No timing thresholds: the benchmark measures its targets, tests only check that it measures.
"""

from __future__ import annotations

import json

import pytest
import torch
from support import PROJECT_ROOT


@pytest.fixture
def bench(monkeypatch):
    """The benchmark's modules, imported the way `python benchmarks/bench_step.py` imports them."""
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "benchmarks"))
    import bench_report
    import bench_step

    return bench_step, bench_report


def _run(step_s, tokens, perf=None):
    run = {"step_s": step_s, "tokens": tokens, "peak_memory_gib": [None] * len(step_s)}
    return run | ({"perf": perf} if perf is not None else {})


def test_summary_skips_warmup_and_compares_arms_round_by_round(bench):
    _, report = bench
    perf = [{"perf/step_time_s": 9.0, "perf/planner_s": 0.5}, {"perf/step_time_s": 2.0, "perf/planner_s": 0.1}]
    # round 0 is the warm-up; rounds 1 and 2 are paired across arms
    runs = {"grpo": _run([9.0, 2.0, 4.0], [64, 64, 64], perf + [perf[1]]),
            "hicra": _run([9.0, 2.2, 4.4], [64, 64, 64], perf + [perf[1]]),
            "hicra+diag": _run([9.0, 2.42, 4.84], [64, 64, 64], perf + [perf[1]]),
            "trl": _run([30.0, 10.0, 10.0], [64, 64, 64])}
    summaries = {arm: report.summarize(run, warmup=1) for arm, run in runs.items()}
    assert summaries["grpo"]["median_step_s"] == 3.0 and summaries["grpo"]["steps_measured"] == 2
    assert summaries["grpo"]["median_step_ci"] is None  # 2 values: no 95% interval for a median
    assert summaries["trl"]["tokens_per_s"] == pytest.approx(6.4)
    assert summaries["grpo"]["perf_median"]["planner_s"] == pytest.approx(0.1)
    c = report.compare(runs, summaries, warmup=1)
    assert c["grpo_over_trl"]["ratio"] == pytest.approx((0.2 * 0.4) ** 0.5)  # geometric mean of the rounds' ratios
    assert c["grpo_over_trl"]["low"] < c["grpo_over_trl"]["ratio"] < c["grpo_over_trl"]["high"]
    assert c["hicra_overhead"]["pct"] == pytest.approx(10.0)  # +10% in both rounds: no spread
    assert c["hicra_overhead"]["low"] == pytest.approx(10.0) and c["hicra_overhead"]["high"] == pytest.approx(10.0)
    assert c["diagnostics_overhead"]["pct"] == pytest.approx(10.0)
    assert c["planner_share_pct"] == pytest.approx(5.0)


def test_a_missing_or_failed_arm_leaves_its_ratios_empty(bench):
    _, report = bench
    runs = {"grpo": _run([1.0, 1.0], [8, 8]), "trl": {"error": "OutOfMemoryError: ..."}}
    c = report.compare(runs, {arm: report.summarize(run, 1) for arm, run in runs.items()}, warmup=1)
    assert c["grpo_over_trl"] is None and c["hicra_overhead"] is None
    assert report._step_cell({"error": "not run"}) == "not run"  # an arm left out by --arms
    assert report._step_cell(runs["trl"]) == "error"


def test_median_interval_is_the_binomial_order_statistics(bench):
    _, report = bench
    assert report.median_ci([5.0, 1.0, 3.0, 2.0, 4.0]) is None  # P(all 5 on one side) = 1/16 > 0.025
    assert report.median_ci([6.0, 1.0, 3.0, 2.0, 4.0, 5.0]) == [1.0, 6.0]  # n = 6: min and max (96.9%)
    values = list(range(1, 21))  # n = 20: x_(6) and x_(15), coverage 95.9%
    assert report.median_ci(values) == [6, 15]


def test_turns_interleave_arms_one_step_at_a_time(bench, monkeypatch):
    """Three arms in threads, each with 3 steps: every step runs alone, in the scheduler's rotated order."""
    import threading

    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "benchmarks"))
    from bench_turns import Turns, rotations

    turns, log, running = Turns(), [], []

    def arm(name):
        for step in range(3):
            turns.take(name)
            running.append(name)
            assert len(running) == 1  # nobody else is inside a step
            log.append((name, step))
            running.remove(name)
        turns.end(name)

    arms = ["a", "b", "c"]
    threads = [threading.Thread(target=arm, args=(name,), daemon=True) for name in arms]
    for name, thread in zip(arms, threads):
        thread.start()
        turns.wait_ready(name)
    order = rotations(arms, 3)
    assert order == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    for round_order in order:
        for name in round_order:
            assert turns.give(name)
    for thread in threads:
        thread.join(timeout=10)
    assert [name for name, _ in log] == [name for r in order for name in r]
    assert not turns.give("a")  # an ended arm takes no more turns


def test_process_turns_interleave_arms_each_in_its_own_process(monkeypatch, tmp_path):
    """--isolation process: the same rotated schedule, each arm in a process of its own, its result returned; an arm
    whose process dies ends with an error and the others go on. The arms are support.logging_arm: a spawned arm
    imports its target's module, and that one is light (no torch), as is bench_turns (no bench_step either)."""
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "benchmarks"))
    import os

    from bench_turns import ProcessTurns, rotations
    from support import logging_arm

    log = tmp_path / "steps.log"
    turns, arms = ProcessTurns(), ["a", "b", "dies"]
    for name in arms:
        turns.start(name, logging_arm, name, 3, str(log))
        turns.wait_ready(name)
    order = rotations(arms, 3)
    for round_order in order:
        for name in round_order:
            turns.give(name)
    turns.join()
    lines = [line.split() for line in log.read_text().splitlines()]
    expected = [name for r in order for name in r]
    del expected[len(expected) - 1 - expected[::-1].index("dies")]  # no third turn: it died in its second step
    assert [name for name, _, _ in lines] == expected
    pids = {name: {pid for n, _, pid in lines if n == name} for name in arms}
    assert all(len(p) == 1 for p in pids.values()) and len(set.union(*pids.values())) == 3
    assert str(os.getpid()) not in set.union(*pids.values())
    assert turns.results["a"] == {"steps": 3, "pid": int(pids["a"].pop())}
    assert turns.results["dies"] == {"error": "process exited with code 3"}
    assert not turns.give("dies")


def test_an_ended_arm_hands_its_memory_back(bench, monkeypatch):
    """Arms release freed memory when they park and when they end (an ended arm kept its peak: the OOM in TRL's last
    checkpointing-off step)."""
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "benchmarks"))
    from bench_turns import Turns

    released = []
    turns = Turns(release=lambda: released.append("release"))
    turns.end("a")
    assert released == ["release"]
    assert not turns.give("a")


def test_killed_run_re_rendered_from_its_step_lines(bench, tmp_path, monkeypatch):
    """Complete rounds only; the paired ratio is the geometric mean of the per-round ratios."""
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "benchmarks"))
    import bench_from_log

    log = tmp_path / "run.log"
    log.write_text("[bench] smollm2 gc=off round 1/3 (warm-up): grpo trl\n"
                   "[bench]     grpo step 1: 9.00 s\n[bench]     trl step 1: 30.00 s\n"
                   "[bench]     grpo step 2: 10.00 s\n[bench]     trl step 2: 20.00 s\n"
                   "[bench]     grpo step 3: 10.00 s\n[bench]     trl step 3: 40.00 s\n"
                   "[bench]     grpo step 4: 11.00 s\n")  # killed in TRL's step 4: round 4 is not paired
    runs = bench_from_log.runs_from_log(log.read_text())
    assert runs["grpo"]["step_s"] == [9.0, 10.0, 10.0] and runs["trl"]["step_s"] == [30.0, 20.0, 40.0]
    report = bench_from_log.main([str(log), "--out", str(tmp_path / "run")])
    assert report["compare"]["grpo_over_trl"]["ratio"] == pytest.approx((0.5 * 0.25) ** 0.5)
    assert report["compare"]["grpo_over_trl"]["rounds"] == 2
    assert "not run" in (tmp_path / "run.md").read_text()
    with pytest.raises(ValueError, match="gaps"):
        bench_from_log.runs_from_log("[bench]     grpo step 1: 1.0 s\n[bench]     grpo step 3: 1.0 s\n"
                                     "[bench]     trl step 1: 1.0 s\n[bench]     trl step 2: 1.0 s\n")


def test_arms_do_the_same_work(bench, monkeypatch):
    step, _ = bench
    monkeypatch.setattr(step.torch.cuda, "is_available", lambda: True)  # the gpu preset's arguments, on any machine
    s = step.settings(step.parse_args(["--preset", "gpu", "--model", "qwen0.5b"]))
    grpo, diag = step.overrides(s, "qwen0.5b", True, "grpo"), step.overrides(s, "qwen0.5b", True, "hicra+diag")
    shared = {o for o in grpo if not o.startswith(("algorithm=", "planner=", "diagnostics="))}
    assert shared <= set(diag)
    assert {"rollout.max_new_tokens=256", "rollout.min_new_tokens=256", "micro_batch_size=64",
            "++model.gradient_checkpointing=true", "model.dtype=bfloat16"} <= shared
    assert "diagnostics=null" in grpo and "diagnostics=null" not in diag


def test_micro_batch_is_the_same_on_both_sides(bench, capsys):
    """--micro-batch: hicra's micro_batch_size and TRL's per-device batch with accumulation over the rollout batch."""
    step, _ = bench
    s = step.settings(step.parse_args(["--preset", "cpu", "--micro-batch", "8"]))
    assert "micro_batch_size=8" in step.overrides(s, "smollm2", False, "grpo")
    assert "micro_batch_size=8" in step.overrides(s, "smollm2", False, "trl")  # bench_trl reads it from there
    whole = step.settings(step.parse_args(["--preset", "cpu"]))
    assert "micro_batch_size=32" in step.overrides(whole, "smollm2", False, "grpo")
    with pytest.raises(SystemExit):
        step.parse_args(["--preset", "cpu", "--micro-batch", "12"])
    assert "--micro-batch 12 must divide the 32 rows" in capsys.readouterr().err


def test_trl_accumulates_micro_batches_over_one_rollout_batch(bench, tmp_path):
    pytest.importorskip("trl")  # the `bench` extra
    step, _ = bench
    from bench_hicra import compose
    from bench_trl import grpo_config

    s = step.settings(step.parse_args(["--preset", "cpu", "--micro-batch", "8"]))
    args = grpo_config(compose(step.overrides(s, "smollm2", False, "trl")), 2, True, False, str(tmp_path))
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.steps_per_generation) == (8, 4, 4)
    assert args.generation_batch_size == 32  # one generation of 4 prompts x 8, one optimizer step


@pytest.mark.slow  # a whole training run or a fresh interpreter (make test-fast leaves it out)
def test_update_benchmark_times_forward_and_backward(monkeypatch):
    """The benchmark's own loop and timers, on a small batch of its shape (its 32 rows x 229 tokens through the tiny
    model's 49k-token head cost seconds per step and prove nothing more)."""
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "benchmarks"))
    import bench_update

    for name, size in {"PROMPTS": 2, "GROUP": 2, "PROMPT_TOKENS": 6, "RESPONSE_TOKENS": 5}.items():
        monkeypatch.setattr(bench_update, name, size)

    times = bench_update.main(["--model", "tiny", "--steps", "2", "--threads", "1", "--entropy"])
    assert len(times) == 2 and all(forward > 0 and backward > 0 and faults >= 0 for forward, backward, faults in times)
    model = bench_update.build_tiny_model().model
    bench_update.compile_parts(model)
    parts = [m for m in model.modules() if type(m).__name__.endswith(("MLP", "RMSNorm"))]
    assert len(parts) == 2 * 3 + 1  # per layer: MLP and two norms; the final norm
    assert all(m._compiled_call_impl is not None for m in parts)
    assert all(m._compiled_call_impl is None for m in model.modules() if m not in parts)


def test_linear_benchmark_times_plain_and_packed_for_every_shape(monkeypatch):
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "benchmarks"))
    import bench_linear

    from hicra.rollout.packed_linear import available

    if not available():
        pytest.skip("this torch build has no oneDNN packed linear ops")
    times = bench_linear.main(["--calls", "1", "--threads", "1", "--rows", "4"])
    assert set(times) == set(bench_linear.SHAPES) and all(a > 0 and b > 0 for a, b in times.values())


def test_the_earlier_log_prob_head_gives_the_same_values_and_gradients(monkeypatch):
    """bench_update's `--logprobs autograd` must be what it claims: the same numbers by the old route."""
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "benchmarks"))
    import bench_update

    from hicra.algorithms import logprobs_and_entropy

    logits = (3 * torch.randn(2, 5, 17, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    targets = torch.randint(0, 17, (2, 5), generator=torch.Generator().manual_seed(1))
    old_lp, old_h = bench_update._autograd_head(logits, targets, 0.7, chunk=3)
    new_lp, new_h = logprobs_and_entropy(logits, targets, 0.7)
    assert torch.allclose(old_lp, new_lp, atol=1e-5) and torch.allclose(old_h, new_h, atol=1e-5)
    grads = [torch.autograd.grad((lp + h).sum(), logits)[0] for lp, h in ((old_lp, old_h), (new_lp, new_h))]
    assert torch.allclose(*grads, atol=1e-5)


def test_gpu_preset_refuses_variable_length(bench, capsys):
    step, _ = bench
    with pytest.raises(SystemExit):
        step.parse_args(["--preset", "gpu", "--no-fixed-length"])
    assert "--no-fixed-length is not allowed" in capsys.readouterr().err


def test_gpu_preset_needs_a_gpu(bench, monkeypatch, capsys):
    step, _ = bench
    monkeypatch.setattr(step.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        step.parse_args(["--preset", "gpu"])
    assert "needs a CUDA GPU" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_preset_writes_a_complete_report(bench, tmp_path):
    step, _ = bench
    step.main(["--preset", "tiny", "--gradient-checkpointing", "off", "--out", str(tmp_path / "tiny")])
    data = json.loads((tmp_path / "tiny.json").read_text())
    assert (tmp_path / "tiny.md").read_text().startswith("# hicra vs TRL step benchmark")
    assert data["machine"]["cpu_count"] >= 1 and data["machine"]["torch"]
    (block,) = data["results"]
    arms = ["grpo", "hicra", "hicra+diag"] + (["trl"] if data["machine"]["trl"] else [])
    assert sorted(block["summary"]) == sorted(arms)
    if not data["machine"]["trl"]:
        assert any("TRL side skipped" in note for note in data["notes"])
    for arm in arms:
        summary = block["summary"][arm]
        assert "error" not in summary, summary
        assert summary["median_step_s"] > 0 and summary["tokens_per_s"] > 0
        assert summary["median_tokens_per_step"] == 2 * 2 * 8  # fixed length: every arm does the same work
    for arm in ("grpo", "hicra", "hicra+diag"):
        perf = block["summary"][arm]["perf_median"]
        assert perf["generation_s"] > 0 and perf["step_time_s"] > 0
    assert "diagnostics_s" in block["summary"]["hicra+diag"]["perf_median"]
    assert block["compare"]["hicra_overhead"]["pct"] is not None
    assert block["decode_floor"]["floor_s"] > 0 and block["decode_floor"]["rows"] == 2 * 2
    assert len(block["load_per_round"]) == data["settings"]["warmup"] + data["settings"]["steps"]
