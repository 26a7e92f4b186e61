"""hicra's decoding loop against transformers' `generate` and against the model's own forward, on identical work.

    python benchmarks/bench_decode.py                 # cpu preset: SmolLM2-135M-Instruct, 4 prompts x 8 x 128 tokens
    python benchmarks/bench_decode.py --repeats 5

The floor is what the issue defines it as: the model's batched single-token forward (all rows, attention mask,
preallocated cache) at the mean cache length, times the number of decoding steps; no sampling, no cache growth.
Variants (each also a record of what a change bought; the "previous" pieces are put back by patching the loop):
  generate          model.generate(do_sample, min_new_tokens) with its dynamic cache (what TRL runs)
  loop-before       hicra's loop as it was: dynamic cache (torch.cat per step) and torch.multinomial
  loop-prealloc     the preallocated cache, torch.multinomial
  loop-cdf          dynamic cache, inverse-CDF draws
  loop              both: the loop hicra runs now
Variants run round-robin, rotated each repeat, in one process; medians and their spread are reported.
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

from hicra.models import prefix_sharing
from hicra.rollout import decode as decode_module
from hicra.rollout.kv_cache import preallocate


@torch.no_grad()
def decode_floor(model, prompt_ids, prompt_mask, group_size: int, max_new_tokens: int, calls: int = 15) -> dict:
    """Median seconds of one batched single-token forward at the mean cache length, and that times the steps.

    prompt_ids, prompt_mask (U, Lp) left-padded, as the decoding loop gets them."""
    model.eval()
    U, Lp = prompt_ids.shape
    B, extra = U * group_size, max_new_tokens // 2  # cache = prompt + half a reply: the mean over the reply
    cache = prefix_sharing.prefilled_cache(model, prompt_ids, prompt_mask, group_size)
    preallocate(cache, Lp + extra + 1)
    filler = torch.full((B, extra), int(prompt_ids[0, -1]), dtype=torch.long, device=prompt_ids.device)
    mask = torch.cat([prompt_mask.long().repeat_interleave(group_size, 0), torch.ones_like(filler)], dim=1)
    positions = prefix_sharing.positions(mask)  # (B, Lp + extra)
    model(input_ids=torch.cat([prompt_ids[:, -1:].repeat_interleave(group_size, 0), filler[:, :-1]], dim=1),
          attention_mask=mask[:, :-1], position_ids=positions[:, Lp - 1:-1], cache=cache, use_cache=True)
    times = []
    for _ in range(calls):
        _sync()
        start = time.perf_counter()
        model(input_ids=filler[:, -1:], attention_mask=mask, position_ids=positions[:, -1:], cache=cache,
              use_cache=True)
        _sync()
        times.append(time.perf_counter() - start)
        cache.crop(-1)
    step = statistics.median(times)
    return {"forward_s": step, "floor_s": step * max_new_tokens, "cache_length": Lp + extra, "rows": B}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@contextmanager
def _patched(cache: bool, cdf: bool):
    """Put back the previous pieces of the loop: the dynamic cache and/or torch.multinomial."""
    saved = decode_module.preallocate, decode_module.sample_from
    if not cache:
        decode_module.preallocate = lambda c, capacity: c
    if not cdf:
        decode_module.sample_from = lambda probs: torch.multinomial(probs, 1).squeeze(1)
    try:
        yield
    finally:
        decode_module.preallocate, decode_module.sample_from = saved


def variants(model, tokenizer, ids, mask, G: int, T: int, eos: list[int], temperature: float) -> dict:
    pad = tokenizer.pad_token_id

    def loop(cache: bool, cdf: bool):
        def run():
            with _patched(cache, cdf):
                return decode_module.decode(model, ids, mask, G, T, eos, pad, temperature=temperature,
                                            min_new_tokens=T)
        return run

    def generate():
        out = model.generate(input_ids=ids.repeat_interleave(G, 0), attention_mask=mask.repeat_interleave(G, 0),
                             do_sample=True, temperature=temperature, top_p=1.0, top_k=0, max_new_tokens=T,
                             min_new_tokens=T, pad_token_id=pad, eos_token_id=eos)
        return out[:, ids.shape[1]:]

    return {"generate": generate, "loop-before": loop(False, False), "loop-prealloc": loop(True, False),
            "loop-cdf": loop(False, True), "loop": loop(True, True)}


def main(argv: list[str] | None = None) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_hicra import compose, prompt_batches
    from bench_report import PROJECT_ROOT, machine_info

    from hicra.config.instantiate import build
    from hicra.rollout.hf import eos_token_ids

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", default="generate,loop-before,loop-prealloc,loop-cdf,loop")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "benchmarks" / "results" / "decode-cpu.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    G, T, temperature = 8, 128, 1.0
    cfg = compose(["model=smollm2_135m", "logger=none", "prompts_per_step=4"])
    bundle = build(cfg.model, gradient_checkpointing=False)
    model, tokenizer = bundle.model.eval(), bundle.tokenizer
    prompts = prompt_batches(cfg, tokenizer, 1)[0][0]["prompts"]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    eos = eos_token_ids(tokenizer, model)
    runs = variants(model, tokenizer, enc.input_ids, enc.attention_mask, G, T, eos, temperature)
    names = args.variants.split(",")
    times: dict[str, list[float]] = {n: [] for n in names}
    floors = []
    for r in range(args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            torch.manual_seed(r)
            start = time.perf_counter()
            out = runs[name]()
            times[name].append(time.perf_counter() - start)
            assert out.shape == (len(prompts) * G, T), (name, out.shape)
            print(f"[decode] repeat {r + 1} {name}: {times[name][-1]:.2f} s", flush=True)
        floors.append(decode_floor(model, enc.input_ids, enc.attention_mask, G, T))
        print(f"[decode] repeat {r + 1} floor: {floors[-1]['floor_s']:.2f} s", flush=True)
    floor = statistics.median(f["floor_s"] for f in floors)
    result = {"machine": machine_info(), "work": {"prompts": len(prompts), "group_size": G, "new_tokens": T,
              "prompt_tokens": enc.input_ids.shape[1], "dtype": "float32", "temperature": temperature},
              "floor": floors, "times": times,
              "summary": {n: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
                              "over_floor": statistics.median(t) / floor} for n, t in times.items()},
              "floor_median_s": floor, "command": " ".join(sys.argv)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, s in result["summary"].items():
        print(f"{name:14s} median {s['median_s']:7.2f} s  [{s['min_s']:.2f}, {s['max_s']:.2f}]  "
              f"{s['over_floor']:.2f}x floor", flush=True)
    print(f"floor          {floor:7.2f} s  (forward {floors[0]['forward_s'] * 1e3:.0f} ms x {T} steps)")
    return result


if __name__ == "__main__":
    main()
