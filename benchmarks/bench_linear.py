"""One decoding step's linear layers alone: `nn.Linear` against the same layer inside `packed_linears`, the
oneDNN-packed weights the sampler uses on CPU (hicra/rollout/packed_linear.py).

    python benchmarks/bench_linear.py              # SmolLM2-135M's shapes, 32 rows, fp32, 2 threads

Each shape: 3 warm-up calls, then the mean of `--calls` calls, plain then packed; also the largest difference of each
from a float64 reference. Random weights (the layout, not the values, sets the speed).
"""

from __future__ import annotations

import argparse
import time

import torch

from hicra.rollout.packed_linear import available, packed_linears

# SmolLM2-135M: hidden 576, MLP 1,536, 3 key/value heads of 64, vocabulary 49,152
SHAPES = {"LM head": (576, 49152), "MLP gate / up": (576, 1536), "MLP down": (1536, 576),
          "attention q / o": (576, 576), "attention k / v": (576, 192)}


def timed(layer: torch.nn.Linear, x: torch.Tensor, calls: int) -> tuple[float, torch.Tensor]:
    """Mean milliseconds per call after 3 warm-up calls, and the output."""
    for _ in range(3):
        out = layer(x)
    start = time.perf_counter()
    for _ in range(calls):
        layer(x)
    return (time.perf_counter() - start) / calls * 1e3, out


@torch.no_grad()
def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=32)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if not available():
        p.error("this torch build has no oneDNN packed linear ops")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = {}
    print("| layer (in -> out) | F.linear ms | packed ms | max error F.linear / packed |\n|---|---|---|---|")
    for name, (n_in, n_out) in SHAPES.items():
        layer, x = torch.nn.Linear(n_in, n_out, bias=False), torch.randn(args.rows, n_in)
        torch.nn.init.normal_(layer.weight)  # unit-scale weights: outputs of magnitude ~25, as in RESULTS.md
        plain_ms, plain = timed(layer, x, args.calls)
        with packed_linears(layer, args.rows):
            packed_ms, packed = timed(layer, x, args.calls)
        exact = x.double() @ layer.weight.double().T
        errors = [float((y.double() - exact).abs().max()) for y in (plain, packed)]
        out[name] = (plain_ms, packed_ms)
        print(f"| {name} {n_in} -> {n_out} | {plain_ms:.2f} | {packed_ms:.2f} | {errors[0]:.0e} / {errors[1]:.0e} |",
              flush=True)
    return out


if __name__ == "__main__":
    main()
