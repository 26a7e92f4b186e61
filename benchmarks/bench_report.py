"""Medians, overhead ratios, machine facts, and the JSON + Markdown the benchmark writes."""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import statistics
from pathlib import Path

from hicra.metrics.stats import mean_ci

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# hicra's per-step time breakdown (perf/* keys of the module's train_history), in the order a step runs them.
BREAKDOWN = ["generation_s", "scoring_s", "old_logprobs_s", "planner_s", "forward_s", "backward_s", "optimizer_s",
             "diagnostics_s"]


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def median_ci(values: list[float], confidence: float = 0.95) -> list[float] | None:
    """Distribution-free interval for the median: the order statistics x_(k), x_(n+1-k) with the largest k such that
    P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2. None below 6 values (no interval reaches 95% there)."""
    x, n = sorted(values), len(values)
    tail, k = 0.0, 0
    while True:
        tail += math.comb(n, k) / 2**n  # P(Binomial < k + 1)
        if tail > (1 - confidence) / 2:
            break
        k += 1
    return [x[k - 1], x[n - k]] if k >= 1 else None


def summarize(run: dict, warmup: int) -> dict:
    """Medians over the steps after warm-up; the raw per-step lists stay in `run`."""
    if "error" in run:
        return {"error": run["error"]}
    steps = run["step_s"][warmup:]
    tokens = run["tokens"][warmup:]
    out = {"steps_measured": len(steps), "median_step_s": median(steps), "median_step_ci": median_ci(steps),
           "min_step_s": min(steps) if steps else None, "max_step_s": max(steps) if steps else None,
           "median_tokens_per_step": median(tokens),
           "tokens_per_s": median([t / s for t, s in zip(tokens, steps)]),
           "peak_memory_gib": max((p for p in run["peak_memory_gib"][warmup:] if p is not None), default=None)}
    if "perf" in run:
        perf = run["perf"][warmup:]
        keys = sorted({k for p in perf for k in p})
        out["perf_median"] = {k.removeprefix("perf/"): median([p.get(k) for p in perf]) for k in keys}
    return out


def paired_ratio(numerator: dict, denominator: dict, warmup: int) -> dict | None:
    """numerator's step time over denominator's, round by round (the arms ran interleaved, so step i of both fell in
    round i): the geometric mean of the per-round ratios and its 95% Student-t interval (on the log ratios)."""
    if "error" in numerator or "error" in denominator:
        return None
    a, b = numerator["step_s"][warmup:], denominator["step_s"][warmup:]
    logs = [math.log(x / y) for x, y in zip(a, b)]
    if not logs:
        return None
    ci = mean_ci(logs)
    low, high = (math.exp(ci.low), math.exp(ci.high)) if ci.low is not None else (None, None)
    return {"ratio": math.exp(ci.mean), "low": low, "high": high, "rounds": len(logs)}


def as_overhead(ratio: dict | None) -> dict | None:
    """A ratio as a percentage over 1: 1.03 [1.01, 1.05] -> +3% [+1%, +5%]."""
    if ratio is None:
        return None
    pct = lambda r: (r - 1.0) * 100.0 if r is not None else None
    return {"pct": pct(ratio["ratio"]), "low": pct(ratio["low"]), "high": pct(ratio["high"]),
            "rounds": ratio["rounds"]}


def compare(runs: dict, summaries: dict, warmup: int) -> dict:
    """The numbers the targets are about: hicra/TRL step-time ratios, HICRA over GRPO, diagnostics over HICRA, each
    paired round by round with its 95% interval."""
    pair = lambda a, b: paired_ratio(runs[a], runs[b], warmup) if a in runs and b in runs else None
    diag = summaries.get("hicra+diag", {})
    return {"grpo_over_trl": pair("grpo", "trl"), "hicra_over_trl": pair("hicra", "trl"),
            "hicra_diag_over_trl": pair("hicra+diag", "trl"),
            "hicra_overhead": as_overhead(pair("hicra", "grpo")),
            "diagnostics_overhead": as_overhead(pair("hicra+diag", "hicra")),
            "planner_share_pct": _share(summaries.get("hicra", {}), "planner_s"),
            "diagnostics_share_pct": _share(diag, "diagnostics_s")}


def _share(summary: dict, key: str) -> float | None:
    """`key`'s median as a percentage of the step the module itself timed (no other arm's noise involved)."""
    perf = summary.get("perf_median", {})
    part, step = perf.get(key), perf.get("step_time_s")
    return part / step * 100.0 if part is not None and step else None


# --- machine --------------------------------------------------------------------------------------------------


def machine_info() -> dict:
    import torch
    import transformers

    info = {"hostname": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "transformers": transformers.__version__, "git_sha": git_sha()}
    for package in ("trl", "pytorch_lightning", "accelerate", "datasets"):
        try:
            info[package] = __import__(package).__version__
        except ImportError:
            info[package] = None
    return info


def load_average() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_sha(root: Path = PROJECT_ROOT) -> str:
    """HEAD's SHA read from .git itself (no git process: a benchmark should not touch the index); dirty not checked."""
    git = root / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return "unknown"


# --- output ---------------------------------------------------------------------------------------------------


def write(report: dict, stem: Path) -> tuple[Path, Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path


def _f(value, fmt: str = "{:.2f}", none: str = "n/a") -> str:
    return fmt.format(value) if value is not None else none


ISOLATION = {"thread": "as threads of one process", "process": "each in a process of its own"}


def _micro(s: dict) -> str:
    micro = s.get("micro_batch")
    return "the whole batch" if not micro else f"{micro} rows (TRL: per-device batch {micro}, gradient accumulation)"


def _header(report: dict) -> list[str]:
    s, m = report["settings"], report["machine"]
    length = "fixed length" if s["fixed_length"] else "stopping at EOS, so lengths differ between sides"
    lines = [f"# hicra vs TRL step benchmark: preset `{s['preset']}`", "",
             (f"- machine: {m['cpu_model']} ({m['cpu_count']} cores, torch threads {m['torch_threads']}), GPU: "
             f"{m['gpu'] or 'none'}; load average (1/5/15 min) at start {report['load_start']}, at end "
             f"{report.get('load_end')}"),
             (f"- versions: torch {m['torch']}, transformers {m['transformers']}, trl {m['trl'] or 'not installed'}, "
             f"pytorch-lightning {m['pytorch_lightning']}; git {m['git_sha'][:12]}"),
             (f"- work per step: {s['prompts']} prompts x {s['group_size']} samples x {s['max_new_tokens']} new tokens "
             f"({length}), {s['dtype']}, temperature {s['temperature']}, beta 0, one update per rollout batch, "
             f"{_micro(s)} per forward/backward; task {s['task']}"),
             (f"- schedule: the arms interleaved step by step, {ISOLATION[s.get('isolation', 'thread')]}, the order "
             f"rotated every round "
             f"(A B C D, B C D A, ...); {s['warmup']} warm-up round(s), then {s['steps']} measured rounds"),
             f"- hicra extra overrides: {' '.join(s['hicra_overrides']) or 'none'}"]
    return lines + [f"- note: {note}" for note in report["notes"]]


def _ci(values, fmt: str = "{:.2f}") -> str:
    return f"[{fmt.format(values[0])}, {fmt.format(values[1])}]" if values else "[n/a]"


def _step_cell(summary: dict) -> str:
    if "error" in summary:
        return "not run" if summary["error"] == "not run" else "error"
    return f"{_f(summary.get('median_step_s'), '{:.1f}')} {_ci(summary.get('median_step_ci'), '{:.1f}')}"


def _ratio_cell(ratio: dict | None) -> str:
    if not ratio:
        return "n/a"
    return f"**{ratio['ratio']:.3f}x** {_ci([ratio['low'], ratio['high']] if ratio['low'] else None, '{:.3f}')}"


def _overhead_cell(overhead: dict | None) -> str:
    if not overhead:
        return "n/a"
    interval = [overhead["low"], overhead["high"]] if overhead["low"] is not None else None
    return f"{overhead['pct']:+.1f}% {_ci(interval, '{:+.1f}%')}"


def _step_row(block: dict) -> str:
    r, c = block["summary"], block["compare"]
    cells = [block["model"], "on" if block["gradient_checkpointing"] else "off",
             *(_step_cell(r.get(arm, {"error": "not run"})) for arm in ("grpo", "hicra", "hicra+diag", "trl")),
             _ratio_cell(c["grpo_over_trl"]), _ratio_cell(c["hicra_over_trl"]), _ratio_cell(c["hicra_diag_over_trl"]),
             _overhead_cell(c["hicra_overhead"]), _overhead_cell(c["diagnostics_overhead"])]
    return "| " + " | ".join(cells) + " |"


def _breakdown_rows(block: dict) -> list[str]:
    rows = []
    floor = (block.get("decode_floor") or {}).get("floor_s")
    for arm in ("grpo", "hicra", "hicra+diag"):
        summary = block["summary"].get(arm, {})
        perf = summary.get("perf_median")
        if perf is None:
            continue
        generation = perf.get("generation_s")
        cells = [block["model"], "on" if block["gradient_checkpointing"] else "off", arm,
                 *(_f(perf.get(k), "{:.3f}", "-") for k in BREAKDOWN), _f(perf.get("step_time_s"), "{:.3f}"),
                 _f(generation / floor if generation and floor else None, "{:.2f}x"),
                 _f(_share(summary, "planner_s"), "{:.2f}%"), _f(_share(summary, "diagnostics_s"), "{:.2f}%", "-")]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def markdown(report: dict) -> str:
    lines = _header(report)
    lines += ["", ("| model | grad ckpt | GRPO s | HICRA s | HICRA+diag s | TRL s | GRPO/TRL | HICRA/TRL | "
              "HICRA+diag/TRL | HICRA vs GRPO | diag vs HICRA |"), "|" + "---|" * 11]
    lines += [_step_row(block) for block in report["results"]]
    lines += ["", ("Step times: wall seconds per training step (Lightning batch start to end; TRL step begin to end), "
              "median [distribution-free 95% interval; n/a below 6 rounds]. Ratios and overheads: geometric mean of "
              "the per-round ratios [95% Student-t interval]: each round ran every arm once, back to back."), "",
              "| model | grad ckpt | arm | tokens/step | tok/s | peak GiB |", "|---|---|---|---|---|---|"]
    for block in report["results"]:
        for arm, summary in block["summary"].items():
            lines.append(f"| {block['model']} | {'on' if block['gradient_checkpointing'] else 'off'} | {arm} | "
                         f"{_f(summary.get('median_tokens_per_step'), '{:.0f}')} | "
                         f"{_f(summary.get('tokens_per_s'), '{:.0f}')} | {_f(summary.get('peak_memory_gib'))} |")
    lines += ["", ("hicra time breakdown, median seconds per step (the module's perf/* clocks; `step_time` is its own "
              "rollout-to-update clock, without diagnostics); generation / floor: the decoding loop against the "
              "model's batched single-token forward at the mean cache length times the steps, measured in the "
              "same process after the rounds:"), "",
              "| model | grad ckpt | arm | " + " | ".join(k.removesuffix("_s") for k in BREAKDOWN) +
              " | step_time | generation / floor | planner share | diagnostics share |",
              "|" + "---|" * (len(BREAKDOWN) + 7)]
    for block in report["results"]:
        lines += _breakdown_rows(block)
        floor = block.get("decode_floor")
        if floor:
            lines.append("")
            lines.append(f"Floor ({block['model']}, gc={'on' if block['gradient_checkpointing'] else 'off'}): "
                         f"{floor['forward_s'] * 1e3:.0f} ms per forward of {floor['rows']} rows at cache length "
                         f"{floor['cache_length']} x {report['settings']['max_new_tokens']} steps = "
                         f"{floor['floor_s']:.1f} s.")
    lines += ["", "Load average (1 min) at the start of each round: other jobs on the machine skew the timings:", ""]
    for b in report["results"]:
        loads = " ".join(f"{load[0]:.1f}" if load else "?" for load in b.get("load_per_round", []))
        lines.append(f"- {b['model']} gc={'on' if b['gradient_checkpointing'] else 'off'}: {loads}")
    errors = [f"- error in {b['model']} gc={'on' if b['gradient_checkpointing'] else 'off'} {arm}: {run['error']}"
              for b in report["results"] for arm, run in b["summary"].items() if "error" in run]
    return "\n".join(lines + ([""] + errors if errors else [])) + "\n"
