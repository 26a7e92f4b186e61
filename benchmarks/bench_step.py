"""hicra's training step against TRL's GRPOTrainer step on identical work, arms interleaved step by step.

    python benchmarks/bench_step.py --preset cpu        # real SmolLM2-135M-Instruct, 4 prompts x 8 x 128 tokens, fp32
    python benchmarks/bench_step.py --preset gpu        # random-init SmolLM2-135M and Qwen2.5-0.5B shapes, 8 x 8 x 256, bf16
    python benchmarks/bench_step.py --preset tiny       # seconds: hicra's 2-layer test model (the test runs this)
    make bench ARGS="--gradient-checkpointing off"      # installs the `bench` extra (TRL) first

Identical work on both sides: the same weights (the `model` config node built once per arm; seeded or a checkpoint),
the same prompt batches in the same order, group size, max new tokens (generation forced to exactly that length by
default, so no side gets shorter answers), dtype, temperature, beta = 0, one update per rollout batch over the whole
batch, the same gradient-checkpointing setting. For each model and checkpointing setting it runs hicra GRPO, HICRA,
HICRA + diagnostics and TRL interleaved step by step, the order rotated every round (bench_turns.py), `--warmup` +
`--steps` rounds, and reports: median wall time per step with a distribution-free 95% interval, the hicra/TRL ratios
and the overheads of HICRA over GRPO and of the diagnostics over HICRA paired round by round (geometric mean, 95%
t-interval), response tokens per second, peak CUDA memory, hicra's time breakdown (perf/* metrics) and its generation
against the decoding floor (bench_support.decode_floor). Targets are measured here, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import re
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from bench_hicra import VARIANTS, compose, prompt_batches, release_memory, run_hicra
from bench_report import PROJECT_ROOT, compare, load_average, machine_info, summarize, write
from bench_support import QWEN05B_SHAPE, SMOLLM2_SHAPE, SUM_TASK, decode_floor
from bench_trl import run_trl, trl_version
from bench_turns import ProcessTurns, Turns, rotations

from hicra.config.instantiate import build


@dataclass(frozen=True)
class Preset:
    models: dict[str, list[str]]  # name -> Hydra overrides of the `model` group
    prompts: int
    group_size: int
    max_new_tokens: int
    dtype: str
    trainer: str
    steps: int
    threads: int | None = None
    task: dict | None = None  # None = the task the overrides compose (cpu: reasoning-gym chain_sum)
    hicra_overrides: list[str] = field(default_factory=list)


PRESETS = {
    # chain_sum_default: the embedded default the committed CPU results measured (chain_sum, one system-message
    # example); today's default adds worked chat turns that TRL's arm would not see, so the work would differ.
    "cpu": Preset({"smollm2": ["experiment=chain_sum_default", "model=smollm2_135m"]}, 4, 8, 128, "float32", "cpu",
                  steps=6, threads=2),
    # Random init is fine for throughput. hicra samples with a static KV cache (compiled decoding) and bucketed
    # prompt lengths, its GPU configuration; TRL with its defaults.
    "gpu": Preset({"smollm2": SMOLLM2_SHAPE, "qwen0.5b": QWEN05B_SHAPE}, 8, 8, 256, "bfloat16", "gpu", steps=6,
                  task=SUM_TASK, hicra_overrides=["rollout.cache_implementation=static", "rollout.prompt_bucket=64"]),
    "tiny": Preset({"tiny": ["model=tiny"]}, 2, 2, 8, "float32", "cpu", steps=1, task=SUM_TASK),
}


def parse_args(argv: list[str] | None, need_device: bool = True) -> argparse.Namespace:
    """The options, checked against the preset; `need_device=False` skips the CUDA check (gpu_check.py's dry run
    parses the gpu preset's arguments on any machine)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--model", default="both", help="one of the preset's models (cpu: smollm2; gpu: smollm2, "
                   "qwen0.5b; tiny: tiny) or `both` (all of them)")
    p.add_argument("--gradient-checkpointing", choices=["on", "off", "both"], default="both")
    p.add_argument("--warmup", type=int, default=1, help="warm-up rounds (every arm steps once per round)")
    p.add_argument("--steps", type=int, default=None, help="measured rounds (preset default: cpu 6, gpu 6); from 6 "
                   "on, each median gets a distribution-free 95%% interval")
    p.add_argument("--fixed-length", action=argparse.BooleanOptionalAction, default=True,
                   help="force every response to exactly max new tokens on both sides (required on gpu)")
    p.add_argument("--isolation", choices=["thread", "process"], default="thread",
                   help="the arms as threads of this process, or each in a process of its own (its own heap, as "
                   "when each framework trains alone); interleaved either way")
    p.add_argument("--arms", default="grpo,hicra,hicra+diag,trl", help="comma-separated subset of the four arms")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder for the random-init models (default: the "
                   "bundled SmolLM2 tokenizer); the GPU host gets one from benchmarks/prepare_gpu.sh")
    p.add_argument("--hicra-override", action="append", default=None, metavar="KEY=VALUE",
                   help="extra Hydra override for the hicra arms (repeatable; replaces the preset's extras)")
    p.add_argument("--micro-batch", type=int, default=None, help="rows per forward/backward on both sides (hicra's "
                   "micro_batch_size, TRL's per-device batch with gradient accumulation); default: the whole batch")
    p.add_argument("--prompts", type=int, default=None)
    p.add_argument("--group-size", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="output path stem (.json and .md are written; default "
                   "benchmarks/results/<preset>-<host>-<date>)")
    args = p.parse_args(argv)
    preset = PRESETS[args.preset]
    if args.preset == "gpu" and not args.fixed_length:
        p.error("--no-fixed-length is not allowed with --preset gpu: random-init models would stop at different "
                "lengths on each side, so the work would differ")
    if args.model != "both" and args.model not in preset.models:
        p.error(f"--model {args.model} is not a model of --preset {args.preset}; allowed: "
                f"{', '.join(preset.models)}, both")
    arms = args.arms.split(",")
    if unknown := set(arms) - {*VARIANTS, "trl"}:
        p.error(f"--arms: unknown {', '.join(sorted(unknown))}; allowed: {', '.join([*VARIANTS, 'trl'])}")
    if need_device and preset.trainer == "gpu" and not torch.cuda.is_available():
        p.error(f"--preset {args.preset} needs a CUDA GPU and none is visible; allowed here: cpu, tiny")
    if args.warmup < 0 or (args.steps is not None and args.steps < 1):
        p.error("--warmup must be >= 0 and --steps >= 1")
    rows = (args.prompts or preset.prompts) * (args.group_size or preset.group_size)
    if args.micro_batch is not None and (args.micro_batch < 1 or rows % args.micro_batch):
        p.error(f"--micro-batch {args.micro_batch} must divide the {rows} rows of a rollout batch")
    return args


def settings(args: argparse.Namespace) -> dict:
    preset = PRESETS[args.preset]
    return {"preset": args.preset, "models": list(preset.models) if args.model == "both" else [args.model],
            "gradient_checkpointing": {"on": [True], "off": [False], "both": [True, False]}[args.gradient_checkpointing],
            "prompts": args.prompts or preset.prompts, "group_size": args.group_size or preset.group_size,
            "max_new_tokens": args.max_new_tokens or preset.max_new_tokens, "dtype": preset.dtype,
            "temperature": 1.0, "fixed_length": args.fixed_length, "warmup": args.warmup,
            "steps": args.steps or preset.steps, "threads": preset.threads, "isolation": args.isolation,
            "micro_batch": args.micro_batch,
            "arms": args.arms.split(","),
            "hicra_overrides": preset.hicra_overrides if args.hicra_override is None else args.hicra_override,
            "task": (preset.task or {}).get("_target_", "the composed task (reasoning-gym chain_sum)"),
            "tokenizer": args.tokenizer}


def overrides(s: dict, model: str, gc: bool, arm: str) -> list[str]:
    """The Hydra overrides of one arm: what `hicra-train <overrides>` would run, minus validation and logging."""
    P, G, T = s["prompts"], s["group_size"], s["max_new_tokens"]
    model_overrides = PRESETS[s["preset"]].models[model]
    tokenizer = [f"model.tokenizer_name_or_path={s['tokenizer']}"] if s["tokenizer"] and "model=tiny" in \
        model_overrides else []
    return [*VARIANTS.get(arm, VARIANTS["grpo"]), *model_overrides, *tokenizer, f"model.dtype={s['dtype']}",
            f"++model.gradient_checkpointing={str(gc).lower()}", f"trainer={PRESETS[s['preset']].trainer}",
            "logger=none", f"prompts_per_step={P}", f"algorithm.group_size={G}", f"micro_batch_size={s['micro_batch'] or P * G}",
            f"rollout.max_new_tokens={T}", f"rollout.min_new_tokens={T if s['fixed_length'] else 0}",
            f"rollout.temperature={s['temperature']}", f"trainer.max_steps={s['warmup'] + s['steps']}",
            "val_every_n_steps=1000000", "checkpoint_every_n_steps=0", "save_final_model=false",
            *(s["hicra_overrides"] if arm in VARIANTS else [])]


def run_arm(arm: str, cfg, num_steps: int, fixed_length: bool, gc: bool, threads: int | None, turns) -> dict:
    """One arm's whole loop, stepping when `turns` says so; an error result instead of an exception (one failed arm,
    e.g. out of memory, must not lose the others)."""
    quiet()  # again in a spawned arm process, which starts with the defaults
    if threads:
        torch.set_num_threads(threads)
    try:
        return run_trl(cfg, num_steps, fixed_length, gc, turns, arm) if arm == "trl" else \
            run_hicra(cfg, num_steps, turns, arm)
    except Exception as err:  # noqa: BLE001
        traceback.print_exc()
        release_memory()
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    finally:
        turns.end(arm)


def run_block(s: dict, model: str, gc: bool, trl: str | None) -> dict:
    """All arms on one model and checkpointing setting, interleaved step by step (bench_turns.py): every arm is built
    (one at a time) and parked at its first step, then each round runs every arm once, the order rotated. The arms are
    threads of this process, or (`--isolation process`) each a process of its own."""
    task_node = {"task": PRESETS[s["preset"]].task} if PRESETS[s["preset"]].task else None
    num_steps = s["warmup"] + s["steps"]
    arms = [arm for arm in s["arms"] if arm != "trl" or trl is not None]
    turns, used = (ProcessTurns() if s["isolation"] == "process" else Turns()), {}
    for arm in arms:  # one at a time: no arm's set-up runs beside another's step
        used[arm] = overrides(s, model, gc, arm)
        turns.start(arm, run_arm, arm, compose(used[arm], task_node), num_steps, s["fixed_length"], gc, s["threads"])
        turns.wait_ready(arm)
    loads = []
    for r, order in enumerate(rotations(arms, num_steps)):
        kind = "warm-up" if r < s["warmup"] else "measured"
        print(f"[bench] {model} gc={'on' if gc else 'off'} round {r + 1}/{num_steps} ({kind}): {' '.join(order)}",
              flush=True)
        loads.append(load_average())
        for arm in order:
            turns.give(arm)
    turns.join()
    runs = turns.results
    floor = decode_floor_of(s, model, gc, task_node)
    summary = {arm: summarize(run, s["warmup"]) for arm, run in runs.items()}
    return {"model": model, "gradient_checkpointing": gc, "overrides": used, "runs": runs, "summary": summary,
            "compare": compare(runs, summary, s["warmup"]), "load_per_round": loads, "decode_floor": floor}


def decode_floor_of(s: dict, model: str, gc: bool, task_node: dict | None) -> dict:
    """The decoding floor on this block's model and first prompt batch (bench_support.decode_floor)."""
    cfg = compose(overrides(s, model, gc, "grpo"), task_node)
    bundle = build(cfg.model)
    device = "cuda" if PRESETS[s["preset"]].trainer == "gpu" else "cpu"
    batch = prompt_batches(cfg, bundle.tokenizer, 1)[0][0]
    enc = bundle.tokenizer(batch["prompts"], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    floor = decode_floor(bundle.model.to(device), enc.input_ids, enc.attention_mask, s["group_size"],
                         s["max_new_tokens"])
    del bundle
    release_memory()
    return floor


def default_stem(preset: str) -> Path:
    import socket

    host = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname())[:24].strip("-") or "host"
    return PROJECT_ROOT / "benchmarks" / "results" / f"{preset}-{host}-{dt.datetime.now():%Y%m%d-%H%M}"


def quiet() -> None:
    """Keep the output to the benchmark's lines: no Lightning banners, no deprecation notices from TRL's calls."""
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars, once per arm


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    quiet()
    s = settings(args)
    if s["threads"]:
        torch.set_num_threads(s["threads"])
    trl = trl_version() if "trl" in s["arms"] else None
    notes = []
    if "trl" in s["arms"] and trl is None:
        notes.append("TRL side skipped: trl (and datasets) are not importable; `make bench` installs the `bench` "
                     "extra (pip install -e '.[bench]')")
    if not torch.cuda.is_available():
        notes.append("peak memory n/a on CPU (ru_maxrss is process-wide, so it cannot be split between arms)")
    report = {"settings": s, "machine": machine_info(), "load_start": load_average(), "notes": notes,
              "results": [], "command": " ".join(sys.argv)}
    stem = args.out or default_stem(args.preset)

    for model in s["models"]:  # the report is written after every block: a killed run keeps the blocks done
        for gc in s["gradient_checkpointing"]:
            report["results"].append(run_block(s, model, gc, trl))
            report["load_end"] = load_average()
            write(report, stem)
    json_path, md_path = write(report, stem)
    print(md_path.read_text(), flush=True)
    print(f"[bench] wrote {json_path} and {md_path}", flush=True)
    return report


if __name__ == "__main__":
    main()
