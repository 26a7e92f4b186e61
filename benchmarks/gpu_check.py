"""The GPU check: the gpu test tier and the speed probes in one call of at most 8 minutes, JSON out.

Run THERE (a GPU host with no network) by benchmarks/run_gpu.sh, after it installed the carried wheels
(benchmarks/prepare_gpu.sh fills benchmarks/.gpu_carry here); or directly where everything is installed:

    python benchmarks/gpu_check.py [--out DIR]      # DIR: $OUT, else benchmarks/results
    python benchmarks/gpu_check.py --dry-run        # any machine, seconds: every stage starts (see below)
    python benchmarks/gpu_check.py --cpu            # no GPU: the tier's tests that have a CPU meaning, on the CPU

Stages, each a subprocess under its own timeout inside one overall budget (a slow stage cannot eat the rest), each
appending a record to DIR/gpu_check.json as soon as it ends (a killed call still leaves what ran):
  environment   torch / CUDA / transformers / Lightning versions, the device, nvidia-smi;
  gpu_tier      pytest -m gpu on tests/gpu (decode = generate on CUDA, at most one device sync per decoded token,
                the bf16 KV cache, a bf16-mixed step against
                the memory plan, FSDP on one GPU over NCCL with validation) and, where MLflow is installed (its test
                module imports it), the memory plan's own GPU test; counts from a JUnit XML;
  decode_speed  benchmarks/bench_decode.py --preset gpu (generate, static cache, hicra's loop, the forward floor);
  step_speed    benchmarks/bench_step.py --preset gpu with hicra's decoding loop, against TRL.
The exit status is 0 when every stage that ran passed. The dry run measures nothing: the gpu tier is collected (a
subprocess, as above) while, in this process, each benchmark script is loaded as its stage runs it and its own parser
takes the stage's real argument list (all but its CUDA check): an import that fails or an option it refuses fails it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import runpy
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent
CARRY = ROOT / "benchmarks" / ".gpu_carry"
BUDGET_S = 470  # under the 8 minutes a device call is given, with room for the install run_gpu.sh does first
MEMORY_PLAN_GPU_TEST = "tests/training/test_memory_plan.py::test_generation_and_update_peaks_on_a_gpu_match_the_plan"


def environment() -> dict:
    """What the host has: versions, the device, the driver."""
    import torch

    record = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
              "cuda_available": torch.cuda.is_available(),
              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    for package in ("transformers", "pytorch_lightning", "hydra", "omegaconf", "trl", "mlflow", "pytest"):
        spec = importlib.util.find_spec(package)
        record[package] = _version(package) if spec is not None else None
    try:
        record["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            check=False, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        record["nvidia_smi"] = None
    return record


def _version(package: str) -> str | None:
    try:
        return getattr(__import__(package), "__version__", None)
    except Exception as err:  # noqa: BLE001 - an import that fails on the host is itself the finding
        return f"import failed: {type(err).__name__}: {err}"


def tier_command(out: Path, collect_only: bool) -> list[str]:
    """pytest on the gpu tier, without the root conftest (it needs MLflow, which GPU hosts rarely have)."""
    targets = ["tests/gpu"] + ([MEMORY_PLAN_GPU_TEST] if importlib.util.find_spec("mlflow") else [])
    mode = ["--collect-only"] if collect_only else [f"--junitxml={out / 'gpu_tier.xml'}"]
    return [sys.executable, "-m", "pytest", "--noconftest", "-p", "no:cacheprovider", "-q", "-m", "gpu", *mode,
            *targets]


def bench_commands(out: Path) -> list[tuple[str, list[str], int]]:
    tokenizer = ["--tokenizer", str(CARRY / "tokenizer")] if (CARRY / "tokenizer").is_dir() else []
    arms = "hicra,trl" if importlib.util.find_spec("trl") else "hicra"  # TRL: from the carry (run_gpu.sh)
    decode = [sys.executable, "benchmarks/bench_decode.py", "--preset", "gpu", "--repeats", "3", *tokenizer,
              "--out", str(out / "decode.json")]
    step = [sys.executable, "benchmarks/bench_step.py", "--preset", "gpu", "--model", "smollm2",
            "--gradient-checkpointing", "off", "--steps", "3", *tokenizer, "--arms", arms,
            "--hicra-override", "rollout.cache_implementation=null", "--out", str(out / "step-loop")]
    return [("decode_speed", decode, 90), ("step_speed", step, 130)]


def planned_stages(out: Path, dry_run: bool, cpu: bool) -> list[tuple[str, list[str], int]]:
    """(name, command, timeout in seconds), in the order they run."""
    stages = [("gpu_tier", tier_command(out, collect_only=dry_run), 240)]
    return stages if cpu else stages + bench_commands(out)


def parse_stage(name: str, command: list[str]) -> dict:
    """A benchmark stage's dry run, in this process: `command`'s script (loaded as `python SCRIPT` would load it, with
    the stage's PYTHONPATH) parses the command's arguments with its own `parse_args`, the CUDA check skipped. A record
    like run_stage's: rc 0, the parser's exit status (2: an option refused), or 1 for an exception (the traceback)."""
    started, output = time.monotonic(), io.StringIO()
    saved, path = sys.path[:], ROOT / command[1]
    sys.path[:0] = [str(path.parent), *stage_env(cpu=False)["PYTHONPATH"].split(os.pathsep)]  # as `python SCRIPT`
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            script = runpy.run_path(str(path), run_name=f"{path.stem}_dry_run")  # not __main__: nothing runs
            script["parse_args"](command[2:], need_device=False)
        rc = 0
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except Exception:  # noqa: BLE001 - a script that fails to import or parse is the finding
        rc = 1
        output.write(traceback.format_exc())
    finally:
        sys.path[:] = saved
    return {"stage": name, "command": command, "rc": rc, "timed_out": False,
            "seconds": round(time.monotonic() - started, 1), "tail": output.getvalue()[-4000:]}


def junit_counts(path: Path) -> dict | None:
    if not path.is_file():
        return None
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed = [case.get("name") for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    return {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")} | {"failed": failed}


def run_stage(name: str, command: list[str], timeout_s: float, env: dict) -> dict:
    started = time.monotonic()
    try:
        done = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
        rc, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        rc, output = 124, _text(err.stdout) + _text(err.stderr)
    return {"stage": name, "command": command, "rc": rc, "timed_out": rc == 124,
            "seconds": round(time.monotonic() - started, 1), "tail": output[-4000:]}


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def stage_env(cpu: bool) -> dict:
    """The tree is the package (not installed there); the carried tokenizer stands in for the bundled one."""
    env = dict(os.environ, PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH")])))
    if (CARRY / "tokenizer").is_dir():
        env["HICRA_TOKENIZER"] = str(CARRY / "tokenizer")
    if cpu:
        env["HICRA_GPU_TIER_DEVICE"] = "cpu"
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "benchmarks" / "results"))
    parser.add_argument("--dry-run", action="store_true", help="every stage only starts: the tier's collection, the "
                        "benchmarks' own parsers on their real arguments")
    parser.add_argument("--cpu", action="store_true", help="no GPU: the tier's CPU-meaningful tests on the CPU")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="all stages together")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget_s
    report = {"dry_run": args.dry_run, "cpu": args.cpu, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "environment": environment(), "stages": []}
    path = args.out / "gpu_check.json"
    stages = planned_stages(args.out, args.dry_run, args.cpu)
    if args.dry_run:  # the tier's collection beside the benchmarks' parsing (module docstring); nothing is measured
        with ThreadPoolExecutor(1) as pool:
            tier = pool.submit(run_stage, *stages[0], stage_env(args.cpu))
            parsed = [parse_stage(name, command) for name, command, _ in stages[1:]]
            report["stages"] = [tier.result(), *parsed]
        stages = []
    for name, command, timeout_s in stages:
        left = deadline - time.monotonic()
        if left < 10:
            report["stages"].append({"stage": name, "rc": None, "skipped": "the overall budget is spent"})
            continue
        record = run_stage(name, command, min(timeout_s, left), stage_env(args.cpu))
        if name == "gpu_tier" and not args.dry_run:
            record["tests"] = junit_counts(args.out / "gpu_tier.xml")
        report["stages"].append(record)
        path.write_text(json.dumps(report, indent=1))
        print(f"gpu_check: {name}: rc={record['rc']} in {record['seconds']} s", flush=True)
    report["ok"] = all(stage["rc"] == 0 for stage in report["stages"])
    path.write_text(json.dumps(report, indent=1))
    print(f"gpu_check: {'ok' if report['ok'] else 'FAILED'}; {path}", flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
