"""hicra's decoding loop against transformers' `generate` and against the model's own forward, on identical work.

    python benchmarks/bench_decode.py                 # cpu preset: SmolLM2-135M-Instruct, 4 prompts x 8 x 128 tokens
    python benchmarks/bench_decode.py --repeats 5
    python benchmarks/bench_decode.py --preset gpu --tokenizer DIR   # random-init SmolLM2 shape, 8 x 8 x 256, bf16

The floor is what the issue defines it as: the model's batched single-token forward (all rows, attention mask,
preallocated cache) at the mean cache length, times the number of decoding steps; no sampling, no cache growth.
Variants (each also a record of what a change bought; the "previous" pieces are put back by patching the loop):
  generate          model.generate(do_sample, min_new_tokens) with its dynamic cache (what TRL runs)
  loop-before       hicra's loop as it was: dynamic cache (torch.cat per step) and torch.multinomial
  loop-prealloc     the preallocated cache, torch.multinomial
  loop-cdf          dynamic cache, inverse-CDF draws
  loop              both: the loop as it was before packed linears
  loop-packed       the loop hicra runs now: `loop` with oneDNN-packed linear weights (hicra/rollout/packed_linear.py)
  generate-static   model.generate with a static cache, its decoding step compiled (gpu preset only)
Variants run round-robin, rotated each repeat, in one process; medians and their spread are reported. The floor is
also measured with packed linear weights (`floor_packed`): what the same forward costs with the loop's packing.
`--stop-check-every N` runs the loop variants with stop checks every N tokens (default: the device's, 1 on CPU and 8
on a GPU; hicra/rollout/decode.py): `--preset gpu --variants loop --stop-check-every 1` against the default measures
what the GPU path's fewer host reads buy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from bench_hicra import compose, prompt_batches
from bench_support import SMOLLM2_SHAPE, SUM_TASK, decode_floor, sync

from hicra.rollout import decode as decode_module
from hicra.rollout.packed_linear import packed_linears


@contextmanager
def _patched(cache: bool, cdf: bool):
    """Put back the previous pieces of the loop: the dynamic cache and/or torch.multinomial."""
    saved = decode_module.preallocate, decode_module.sample_from
    if not cache:
        decode_module.preallocate = lambda c, capacity: c
    if not cdf:
        decode_module.sample_from = lambda probs, uniforms=None: torch.multinomial(probs, 1).squeeze(1)
    try:
        yield
    finally:
        decode_module.preallocate, decode_module.sample_from = saved


def variants(model, tokenizer, ids, mask, G: int, T: int, eos: list[int], temperature: float,
             every: int | None = None) -> dict:
    pad = tokenizer.pad_token_id

    def loop(cache: bool, cdf: bool, packed: bool = False):
        def run():
            with _patched(cache, cdf), packed_linears(model, len(ids) * G, enabled=packed):
                return decode_module.decode(model, ids, mask, G, T, eos, pad, temperature=temperature,
                                            min_new_tokens=T, stop_check_every=every)
        return run

    def generate():
        out = model.generate(input_ids=ids.repeat_interleave(G, 0), attention_mask=mask.repeat_interleave(G, 0),
                             do_sample=True, temperature=temperature, top_p=1.0, top_k=0, max_new_tokens=T,
                             min_new_tokens=T, pad_token_id=pad, eos_token_id=eos)
        return out[:, ids.shape[1]:]

    def generate_static():
        out = model.generate(input_ids=ids.repeat_interleave(G, 0), attention_mask=mask.repeat_interleave(G, 0),
                             do_sample=True, temperature=temperature, top_p=1.0, top_k=0, max_new_tokens=T,
                             min_new_tokens=T, pad_token_id=pad, eos_token_id=eos, cache_implementation="static")
        return out[:, ids.shape[1]:]

    return {"generate": generate, "loop-before": loop(False, False), "loop-prealloc": loop(True, False),
            "loop-cdf": loop(False, True), "loop": loop(True, True), "loop-packed": loop(True, True, packed=True),
            "generate-static": generate_static}


# preset -> (prompts, group size, new tokens, dtype, Hydra overrides of the `model` group or None = the bundled model)
PRESETS = {"cpu": (4, 8, 128, "float32", None), "gpu": (8, 8, 256, "bfloat16", "smollm2-shape")}


def parse_args(argv: list[str] | None, need_device: bool = True) -> argparse.Namespace:
    """The options; `need_device=False` skips the CUDA check (gpu_check.py's dry run parses the gpu preset's arguments
    on any machine)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", default=None, help="comma-separated (default cpu: generate,loop-before,"
                   "loop-prealloc,loop-cdf,loop,loop-packed; gpu: generate,generate-static,loop)")
    p.add_argument("--stop-check-every", type=int, default=None,
                   help="tokens between the loop's stop checks (default: the device's, 1 on CPU, 8 on a GPU)")
    p.add_argument("--threads", type=int, default=2, help="torch threads on the cpu preset")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder for the gpu preset's random-init model")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/decode-<preset>.json)")
    args = p.parse_args(argv)
    if need_device and args.preset == "gpu" and not torch.cuda.is_available():
        p.error("--preset gpu needs a CUDA GPU and none is visible; allowed here: cpu")
    return args


def main(argv: list[str] | None = None) -> dict:
    from bench_report import PROJECT_ROOT, machine_info

    from hicra.config.instantiate import build
    from hicra.rollout.hf import eos_token_ids

    args = parse_args(argv)
    P, G, T, dtype, shape = PRESETS[args.preset]
    temperature = 1.0
    device = "cuda" if args.preset == "gpu" else "cpu"
    if device == "cpu":
        torch.set_num_threads(args.threads)
    names = (args.variants or ("generate,generate-static,loop" if device == "cuda" else
                               "generate,loop-before,loop-prealloc,loop-cdf,loop,loop-packed")).split(",")
    out_path = args.out or PROJECT_ROOT / "benchmarks" / "results" / f"decode-{args.preset}.json"
    task_node = None  # chain_sum_default's task and prompt (the committed results); the GPU host has no verifiers
    if shape:
        task_node = {"task": SUM_TASK}
        model_overrides = [*SMOLLM2_SHAPE, *([f"model.tokenizer_name_or_path={args.tokenizer}"] if args.tokenizer
                                             else [])]
    else:
        model_overrides = ["experiment=chain_sum_default", "model=smollm2_135m"]
    cfg = compose([*model_overrides, f"model.dtype={dtype}", "logger=none", f"prompts_per_step={P}"], task_node)
    bundle = build(cfg.model, gradient_checkpointing=False)
    model, tokenizer = bundle.model.to(device).eval(), bundle.tokenizer
    prompts = prompt_batches(cfg, tokenizer, 1)[0][0]["prompts"]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    eos = eos_token_ids(tokenizer, model)
    runs = variants(model, tokenizer, enc.input_ids, enc.attention_mask, G, T, eos, temperature,
                    args.stop_check_every)
    times: dict[str, list[float]] = {n: [] for n in names}
    floors = []
    for r in range(args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            torch.manual_seed(r)
            sync()
            start = time.perf_counter()
            out = runs[name]()
            sync()
            times[name].append(time.perf_counter() - start)
            assert out.shape == (len(prompts) * G, T), (name, out.shape)
            print(f"[decode] repeat {r + 1} {name}: {times[name][-1]:.2f} s", flush=True)
        floors.append(decode_floor(model, enc.input_ids, enc.attention_mask, G, T))
        with packed_linears(model, len(prompts) * G):
            floors[-1]["floor_packed_s"] = decode_floor(model, enc.input_ids, enc.attention_mask, G, T)["floor_s"]
        print(f"[decode] repeat {r + 1} floor: {floors[-1]['floor_s']:.2f} s, packed linears "
              f"{floors[-1]['floor_packed_s']:.2f} s", flush=True)
    floor = statistics.median(f["floor_s"] for f in floors)
    result = {"machine": machine_info(), "preset": args.preset,
              "work": {"prompts": len(prompts), "group_size": G, "new_tokens": T,
                       "stop_check_every": args.stop_check_every,
                       "prompt_tokens": enc.input_ids.shape[1], "dtype": dtype, "temperature": temperature},
              "floor": floors, "times": times,
              "summary": {n: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
                              "over_floor": statistics.median(t) / floor} for n, t in times.items()},
              "floor_median_s": floor, "floor_packed_median_s": statistics.median(f["floor_packed_s"] for f in floors),
              "command": " ".join(sys.argv)}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    for name, s in result["summary"].items():
        print(f"{name:14s} median {s['median_s']:7.2f} s  [{s['min_s']:.2f}, {s['max_s']:.2f}]  "
              f"{s['over_floor']:.2f}x floor", flush=True)
    print(f"floor          {floor:7.2f} s  (forward {floors[0]['forward_s'] * 1e3:.0f} ms x {T} steps); with packed "
          f"linears {result['floor_packed_median_s']:.2f} s")
    return result


if __name__ == "__main__":
    main()
