"""benchmarks/gpu_check.py, the one prepared call on a GPU host: it must be known to start before a GPU is lent
(its dry run on this CPU), fit the 8 minutes of a device call, and count the tier's results."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support import PROJECT_ROOT, cli_env

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
import gpu_check


def test_every_stage_fits_the_budget_and_the_budget_fits_a_device_call(tmp_path):
    stages = gpu_check.planned_stages(tmp_path, dry_run=False, cpu=False)
    assert [name for name, _, _ in stages] == ["gpu_tier", "decode_speed", "step_speed"]
    assert sum(timeout for _, _, timeout in stages) <= gpu_check.BUDGET_S <= 8 * 60


def test_tier_counts_come_from_the_junit_report(tmp_path):
    (tmp_path / "tier.xml").write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
        '<testcase name="a"/><testcase name="b"><failure message="x"/></testcase>'
        '<testcase name="c"><skipped/></testcase></testsuite></testsuites>')
    assert gpu_check.junit_counts(tmp_path / "tier.xml") == {"tests": 3, "failures": 1, "errors": 0, "skipped": 1,
                                                            "failed": ["b"]}
    assert gpu_check.junit_counts(tmp_path / "absent.xml") is None


@pytest.mark.slow  # a fresh interpreter, and the tier's collection in another, importing torch and transformers
def test_the_dry_run_starts_every_stage_and_writes_its_json(tmp_path):
    """The real script in a fresh interpreter, as run_gpu.sh starts it: the tier collects its GPU tests in a
    subprocess, and each benchmark script, loaded in gpu_check's process, accepts the stage's real GPU argument list
    with its own parser (a stronger check than the `--help` it used to get, and two interpreters fewer)."""
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(tmp_path)], check=False,
                          cwd=PROJECT_ROOT, env=cli_env(), capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["ok"] and report["dry_run"] and report["environment"]["torch"]
    assert [(s["stage"], s["rc"]) for s in report["stages"]] == [("gpu_tier", 0), ("decode_speed", 0),
                                                                 ("step_speed", 0)]
    planned = gpu_check.bench_commands(tmp_path)
    assert [s["command"] for s in report["stages"][1:]] == [command for _, command, _ in planned]  # the real ones
    tier = report["stages"][0]["tail"]
    assert "test_decode_equals_generate_on_the_device" in tier and "test_fsdp_on_one_gpu" in tier


STAND_IN = """import argparse


def parse_args(argv, need_device=True):
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int)
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit("the dry run ran the script")
"""


def test_an_option_the_parser_refuses_or_a_missing_script_fails_the_dry_run(tmp_path):
    """A dry-run benchmark stage is as strong as its parse: a stage whose script refuses its arguments, or whose
    script is missing, fails naming why (a stand-in script with the benchmarks' `parse_args` signature: loading the
    real ones costs seconds of imports, which the dry run above pays)."""
    script = tmp_path / "bench_stand_in.py"
    script.write_text(STAND_IN)
    assert gpu_check.parse_stage("decode_speed", [sys.executable, str(script), "--repeats", "3"])["rc"] == 0
    refused = gpu_check.parse_stage("decode_speed", [sys.executable, str(script), "--repeats", "three"])
    assert refused["rc"] == 2 and "invalid int value: 'three'" in refused["tail"]
    missing = gpu_check.parse_stage("decode_speed", [sys.executable, str(tmp_path / "bench_gone.py")])
    assert missing["rc"] == 1 and "bench_gone.py" in missing["tail"]
