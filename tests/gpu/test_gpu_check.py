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


@pytest.mark.slow  # three fresh interpreters importing torch and transformers
def test_the_dry_run_starts_every_stage_and_writes_its_json(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(tmp_path)], check=False,
                          cwd=PROJECT_ROOT, env=cli_env(), capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["ok"] and report["dry_run"] and report["environment"]["torch"]
    assert [(s["stage"], s["rc"]) for s in report["stages"]] == [("gpu_tier", 0), ("decode_speed", 0),
                                                                 ("step_speed", 0)]
    tier = report["stages"][0]["tail"]
    assert "test_decode_equals_generate_on_the_device" in tier and "test_fsdp_on_one_gpu" in tier
