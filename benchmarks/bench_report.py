"""Medians, overhead ratios, machine facts, and the JSON + Markdown the benchmark writes."""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# hicra's per-step time breakdown (perf/* keys of the module's train_history), in the order a step runs them.
BREAKDOWN = ["generation_s", "scoring_s", "old_logprobs_s", "planner_s", "forward_s", "backward_s", "optimizer_s",
             "diagnostics_s"]


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(run: dict, warmup: int) -> dict:
    """Medians over the steps after warm-up; the raw per-step lists stay in `run`."""
    if "error" in run:
        return {"error": run["error"]}
    steps = run["step_s"][warmup:]
    tokens = run["tokens"][warmup:]
    out = {"steps_measured": len(steps), "median_step_s": median(steps),
           "min_step_s": min(steps) if steps else None, "max_step_s": max(steps) if steps else None,
           "median_tokens_per_step": median(tokens),
           "tokens_per_s": median([t / s for t, s in zip(tokens, steps)]),
           "peak_memory_gib": max((p for p in run["peak_memory_gib"][warmup:] if p is not None), default=None)}
    if "perf" in run:
        perf = run["perf"][warmup:]
        keys = sorted({k for p in perf for k in p})
        out["perf_median"] = {k.removeprefix("perf/"): median([p.get(k) for p in perf]) for k in keys}
    return out


def overhead(numerator: dict, denominator: dict, key: str = "median_step_s") -> float | None:
    a, b = numerator.get(key), denominator.get(key)
    return (a / b - 1.0) * 100.0 if a is not None and b else None


def ratio(numerator: dict, denominator: dict) -> float | None:
    a, b = numerator.get("median_step_s"), denominator.get("median_step_s")
    return a / b if a is not None and b else None


def compare(summaries: dict) -> dict:
    """The numbers the targets are about: hicra/TRL step-time ratios, HICRA over GRPO, diagnostics over HICRA."""
    grpo, hicra, diag, trl = (summaries.get(k, {}) for k in ("grpo", "hicra", "hicra+diag", "trl"))
    return {"grpo_over_trl": ratio(grpo, trl), "hicra_over_trl": ratio(hicra, trl),
            "hicra_diag_over_trl": ratio(diag, trl),
            "hicra_overhead_pct": overhead(hicra, grpo), "diagnostics_overhead_pct": overhead(diag, hicra),
            "planner_share_pct": _share(hicra, "planner_s"), "diagnostics_share_pct": _share(diag, "diagnostics_s")}


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
             f"({length}), {s['dtype']}, temperature {s['temperature']}, beta 0, one update per rollout batch, whole "
             f"batch per forward/backward; task {s['task']}; medians of {s['steps']} steps after {s['warmup']} "
             f"warm-up"),
             f"- hicra extra overrides: {' '.join(s['hicra_overrides']) or 'none'}"]
    return lines + [f"- note: {note}" for note in report["notes"]]


def _step_row(block: dict) -> str:
    r, c = block["summary"], block["compare"]
    get = lambda arm, key: r.get(arm, {}).get(key)
    cells = [block["model"], "on" if block["gradient_checkpointing"] else "off",
             *(_f(get(arm, "median_step_s")) for arm in ("grpo", "hicra", "hicra+diag", "trl")),
             _f(c["grpo_over_trl"], "{:.3f}x"), _f(c["hicra_diag_over_trl"], "{:.3f}x"),
             f"{_f(get('grpo', 'median_tokens_per_step'), '{:.0f}')} / {_f(get('trl', 'median_tokens_per_step'), '{:.0f}')}",
             _f(get("grpo", "tokens_per_s"), "{:.0f}"), _f(get("trl", "tokens_per_s"), "{:.0f}"),
             _f(get("grpo", "peak_memory_gib")), _f(get("trl", "peak_memory_gib")),
             _f(c["hicra_overhead_pct"], "{:+.1f}%"), _f(c["diagnostics_overhead_pct"], "{:+.1f}%")]
    return "| " + " | ".join(cells) + " |"


def _breakdown_rows(block: dict) -> list[str]:
    rows = []
    for arm in ("grpo", "hicra", "hicra+diag"):
        summary = block["summary"].get(arm, {})
        perf = summary.get("perf_median")
        if perf is None:
            continue
        cells = [block["model"], "on" if block["gradient_checkpointing"] else "off", arm,
                 *(_f(perf.get(k), "{:.3f}", "-") for k in BREAKDOWN), _f(perf.get("step_time_s"), "{:.3f}"),
                 _f(_share(summary, "planner_s"), "{:.2f}%"), _f(_share(summary, "diagnostics_s"), "{:.2f}%", "-")]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _load(run: dict, when: str) -> str:
    load = run.get("load_average", {}).get(when)
    return f"{load[0]:.1f}" if load else "?"


def markdown(report: dict) -> str:
    lines = _header(report)
    lines += ["", ("| model | grad ckpt | GRPO s | HICRA s | HICRA+diag s | TRL s | GRPO/TRL | HICRA+diag/TRL "
              "| resp tokens/step GRPO / TRL | tok/s GRPO | tok/s TRL | peak GiB GRPO | peak GiB TRL | HICRA vs GRPO "
              "| diag vs HICRA |"), "|" + "---|" * 15]
    lines += [_step_row(block) for block in report["results"]]
    lines += ["", ("Step times are wall seconds per training step (Lightning batch start to end; TRL step begin to "
              "end), medians after warm-up; tok/s = response tokens / step time."), "",
              ("hicra time breakdown, median seconds per step (the module's perf/* clocks; `step_time` is its own "
              "rollout-to-update clock, without diagnostics):"), "",
              "| model | grad ckpt | arm | " + " | ".join(k.removesuffix("_s") for k in BREAKDOWN) +
              " | step_time | planner share | diagnostics share |", "|" + "---|" * (len(BREAKDOWN) + 6)]
    for block in report["results"]:
        lines += _breakdown_rows(block)
    lines += ["", "Load average (1 min) before / after each arm: other jobs on the machine skew the timings above:", ""]
    for b in report["results"]:
        loads = [f"{arm} {_load(run, 'before')}/{_load(run, 'after')}" for arm, run in b["runs"].items()]
        lines.append(f"- {b['model']} gc={'on' if b['gradient_checkpointing'] else 'off'}: {', '.join(loads)}")
    errors = [f"- error in {b['model']} gc={'on' if b['gradient_checkpointing'] else 'off'} {arm}: {run['error']}"
              for b in report["results"] for arm, run in b["summary"].items() if "error" in run]
    return "\n".join(lines + ([""] + errors if errors else [])) + "\n"
