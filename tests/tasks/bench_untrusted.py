"""Measure the verifier worker's overhead and the worst adversarial completion's wall time through `Task.score`.

Not collected by pytest (no ``test_`` prefix): run ``.venv/bin/python tests/tasks/bench_untrusted.py`` on an idle
machine. Prints one line per measurement; the README section on untrusted model output quotes these numbers.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hicra.tasks import LocalFileTask, ReasoningGymTask
from hicra.tasks.bounded import run_bounded
from hicra.tasks.math_equivalence import match_in_worker

MARKER = Path(tempfile.gettempdir()) / "hicra_bench_pwned"
FULLWIDTH_EVAL = "".join(chr(ord(c) + 0xFEE0) for c in "eval")
PAYLOADS = [
    f"__import__('os').system('touch {MARKER}')",
    f"{FULLWIDTH_EVAL}(\"__import__('os').system('touch {MARKER}')\")",
]
ADVERSARIAL = {
    "\\boxed{ x 100000": "\\boxed{" * 100_000,
    "1 MB, box at the end": "x" * 1_000_000 + "\\boxed{42}",
    "1 MB inside a box": "\\boxed{" + "9" * 1_000_000 + "}",
    "9^{9^{9^{9}}}": "\\boxed{9^{9^{9^{9}}}}",
    "10**10**10": "\\boxed{10**10**10}",
    "9**9**9**9": "\\boxed{9**9**9**9}",
    "10^{10^{10}}": "\\boxed{10^{10^{10}}}",
    "(10^{10})!": "\\boxed{(10^{10})!}",
    "2^2^2^2^2^2": "\\boxed{2^{2^{2^{2^{2^{2}}}}}}",
    "\\frac{1}{0}": "\\boxed{\\frac{1}{0}}",
    "sqrt nested 60": "\\boxed{" + "\\sqrt{" * 60 + "2" + "}" * 60 + "}",
    "sqrt nested 10000": "\\boxed{" + "\\sqrt{" * 10_000 + "2" + "}" * 10_000 + "}",
    "braces nested 250": "\\boxed{" + "{" * 250 + "1" + "}" * 250 + "}",
    "x * 500": "\\boxed{" + "x" * 500 + "}",
    "((((( x 240": "\\boxed{" + "(" * 240 + "1" + ")" * 240 + "}",
    "fullwidth 42": "\\boxed{４２}",
    "U+2212 minus": "\\boxed{−42}",
    "Cyrillic x": "\\boxed{х+1}",
    "__import__ payload": "\\boxed{" + PAYLOADS[0] + "}",
    "fullwidth eval payload": "\\boxed{" + PAYLOADS[1] + "}",
}


def timed(fn, *args, repeat=1):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return times


def local_task(directory: str, gold: str) -> LocalFileTask:
    path = Path(directory) / "d.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": gold}) + "\n")
    return LocalFileTask(str(path), val_size=0)


def worker_rss_mb() -> dict[str, int]:
    """RSS of the supervisor and its executor (children of this process, then of the supervisor)."""
    rss = {}
    for role, parent in (("supervisor", os.getpid()), ("executor", None)):
        parent = parent if parent is not None else rss.get("_pid")
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split() if parent else []
        if children:
            pid = int(children[0])
            status = Path(f"/proc/{pid}/status").read_text()
            rss[role] = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) // 1024
            rss["_pid"] = pid
    rss.pop("_pid", None)
    return rss


def main() -> None:
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}; python {sys.version.split()[0]}")
    start = time.perf_counter()
    run_bounded(math.sqrt, 4.0)
    print(f"worker start-up (once per process): {time.perf_counter() - start:.2f} s")
    trip = timed(run_bounded, math.sqrt, 4.0, repeat=500)
    print(f"round trip, trivial function: median {statistics.median(trip) * 1e3:.2f} ms")
    with tempfile.TemporaryDirectory() as directory:
        frac = local_task(directory, "\\frac{3}{4}")
        example = frac.train_examples()[0]
        frac.score("\\boxed{0.75}", example)  # loads math_equivalence in the worker
        worker = timed(frac.score, "so \\boxed{0.75}", example, repeat=100)
        inproc = timed(match_in_worker, "\\frac{3}{4}", "0.75", repeat=100)
        print(f"math-verify via worker: median {statistics.median(worker) * 1e3:.2f} ms; same call in-process: "
              f"{statistics.median(inproc) * 1e3:.2f} ms")
        integer = local_task(directory, "42")
        ex42 = integer.train_examples()[0]
        fast = timed(integer.score, "\\boxed{41}", ex42, repeat=1000)
        print(f"integer fast path (no worker): median {statistics.median(fast) * 1e6:.0f} us")
        answers = ["41", "0.75", "\\frac{6}{8}", "3/4", "x+1"] * 100
        start = time.perf_counter()
        for answer in answers:
            frac.score("The answer is \\boxed{" + answer + "}", example)
        through_worker = time.perf_counter() - start
        start = time.perf_counter()
        for answer in answers:
            match_in_worker("\\frac{3}{4}", answer)
        print(f"eval-style batch of {len(answers)} completions: {through_worker:.2f} s through Task.score and the "
              f"worker, {time.perf_counter() - start:.2f} s for the same math-verify calls in-process")
        print(f"worker memory (RSS, MB): {worker_rss_mb()}")

        tasks = {"LocalFileTask(42)": (integer, ex42)}
        for name, kw in [("countdown", {"min_numbers": 3, "max_numbers": 4}), ("chain_sum", {})]:
            task = ReasoningGymTask(name, train_size=4, val_size=1, **kw)
            ex = task.train_examples()[0]
            task.score("\\boxed{" + ex.answer + "}", ex)
            tasks[f"ReasoningGymTask({name})"] = (task, ex)
        worst = (0.0, "")
        for task_name, (task, ex) in tasks.items():
            for case, text in ADVERSARIAL.items():
                elapsed = timed(task.score, text, ex)[0]
                worst = max(worst, (elapsed, f"{task_name} {case}"))
                print(f"{task_name:28} {case:24} {elapsed:6.3f} s  score {task.score(text, ex) if elapsed < 0.5 else '-'}")
            print(f"{task_name}: faults {task.verifier_faults.read()}")
        print(f"WORST: {worst[0]:.2f} s ({worst[1]}), bound {integer.verify_timeout_s} s; "
              f"marker file created: {MARKER.exists()}")


if __name__ == "__main__":
    main()
