"""The step's Stopwatch, the perf/* metrics read from it, and the StepOutput the callbacks receive."""

from __future__ import annotations

import time

import pytest

from hicra.training.step_metrics import perf_metrics
from hicra.training.step_output import KEY, StepOutput, step_output
from hicra.training.timing import Stopwatch


def test_phases_nest_and_a_repeated_phase_adds_up():
    watch = Stopwatch()
    with watch.phase("step_time"):
        for _ in range(2):  # e.g. two micro-batches
            with watch.phase("forward"):
                time.sleep(0.01)
    assert watch.seconds["forward"] >= 0.02
    assert watch.seconds["step_time"] >= watch.seconds["forward"]


def test_a_phase_that_raises_is_still_timed():
    watch = Stopwatch()
    with pytest.raises(RuntimeError), watch.phase("update"):
        raise RuntimeError
    assert watch.seconds["update"] >= 0.0


def test_perf_metrics_name_every_phase_that_ran():
    watch = Stopwatch()
    watch.seconds = {"step_time": 2.0, "generation": 1.5, "forward": 0.25, "backward": 0.25}
    metrics = perf_metrics(watch, num_tokens=100)
    assert {k: v for k, v in metrics.items() if k != "perf/peak_memory_gib"} == {
        "perf/step_time_s": 2.0, "perf/generation_s": 1.5, "perf/forward_s": 0.25, "perf/backward_s": 0.25,
        "perf/tokens_per_s": 50.0}


def test_step_output_travels_under_its_key():
    out = StepOutput(0, None, [], None, None, None, None, None, [])
    assert step_output({KEY: out}) is out
    assert step_output({}) is None and step_output(None) is None
