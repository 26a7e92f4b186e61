"""benchmarks/bench_step.py: the report arithmetic, the arms' overrides, and one real `--preset tiny` run.

No timing thresholds: the benchmark measures its targets, tests only check that it measures.
"""

from __future__ import annotations

import json

import pytest

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


def test_summary_skips_warmup_and_compares_arms(bench):
    _, report = bench
    perf = [{"perf/step_time_s": 9.0, "perf/planner_s": 0.5}, {"perf/step_time_s": 2.0, "perf/planner_s": 0.1}]
    summaries = {"grpo": report.summarize(_run([9.0, 2.0, 4.0], [64, 64, 64], perf + [perf[1]]), warmup=1),
                 "hicra": report.summarize(_run([9.0, 3.3], [64, 64], perf), warmup=1),
                 "hicra+diag": report.summarize(_run([9.0, 3.63], [64, 64], perf), warmup=1),
                 "trl": report.summarize(_run([30.0, 10.0, 10.0], [64, 64, 64]), warmup=1)}
    assert summaries["grpo"]["median_step_s"] == 3.0 and summaries["grpo"]["steps_measured"] == 2
    assert summaries["trl"]["tokens_per_s"] == pytest.approx(6.4)
    assert summaries["grpo"]["perf_median"]["planner_s"] == pytest.approx(0.1)
    c = report.compare(summaries)
    assert c["grpo_over_trl"] == pytest.approx(0.3)
    assert c["hicra_overhead_pct"] == pytest.approx(10.0)
    assert c["diagnostics_overhead_pct"] == pytest.approx(10.0)
    assert c["planner_share_pct"] == pytest.approx(5.0)


def test_a_missing_or_failed_arm_leaves_its_ratios_empty(bench):
    _, report = bench
    c = report.compare({"grpo": report.summarize(_run([1.0, 1.0], [8, 8]), 1),
                        "trl": report.summarize({"error": "OutOfMemoryError: ..."}, 1)})
    assert c["grpo_over_trl"] is None and c["hicra_overhead_pct"] is None


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
    assert block["compare"]["hicra_overhead_pct"] is not None
