"""The cpu preset's update alone, in a process of its own: how close one forward + backward is to its matmul FLOPs,
and what compiling the elementwise parts buys.

    python benchmarks/bench_update.py                      # eager, 1 warm-up + 3 steps
    python benchmarks/bench_update.py --compile parts      # torch.compile(dynamic=True) of every MLP and RMSNorm

Work: 32 rows (4 prompts x 8) x (101 prompt + 128 response) tokens, prompt sharing on, the whole batch in one pass,
fp32, a token-mean policy-gradient loss on random advantages (the loss's shape does not change the matmuls). Random
token ids on the real SmolLM2-135M-Instruct weights. Run one process per variant, alternating, on an idle machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from hicra.models.loaders import build_tiny_model, load_pretrained
from hicra.rollout.hf import RolloutBatch, sequence_logprobs

PROMPTS, GROUP, PROMPT_TOKENS, RESPONSE_TOKENS = 4, 8, 101, 128


def compile_parts(model) -> None:
    """The memory-bound elementwise chains (RMSNorm, SiLU-gated MLP) fused; attention stays eager."""
    for module in model.modules():
        if type(module).__name__.endswith(("MLP", "RMSNorm")):
            module.compile(dynamic=True)


def batch(vocab: int) -> RolloutBatch:
    rows = PROMPTS * GROUP
    prompts = torch.randint(100, vocab, (PROMPTS, PROMPT_TOKENS)).repeat_interleave(GROUP, 0)  # (B, Lp), grouped
    return RolloutBatch(prompts, torch.ones(rows, PROMPT_TOKENS, dtype=torch.bool),
                        torch.randint(100, vocab, (rows, RESPONSE_TOKENS)),
                        torch.ones(rows, RESPONSE_TOKENS, dtype=torch.bool), torch.zeros(rows, dtype=torch.bool))


def step(model, rollout: RolloutBatch, advantages: torch.Tensor) -> tuple[float, float]:
    """Seconds of the forward (log-probs) and of the backward."""
    t0 = time.perf_counter()
    logprobs, _ = sequence_logprobs(model, rollout, False, 1.0)  # (B, T)
    loss = -(logprobs * advantages).sum() / advantages.numel()
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    model.zero_grad(set_to_none=True)
    return t1 - t0, t2 - t1


def main(argv: list[str] | None = None) -> list[tuple[float, float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compile", choices=["none", "parts"], default="none")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="bundled://smollm2-135m-instruct", help="a model for load_pretrained, or "
                   "`tiny` (hicra's 2-layer test model)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = (build_tiny_model() if args.model == "tiny" else load_pretrained(args.model)).model.train()
    if args.compile == "parts":
        compile_parts(model)
    rollout = batch(model.config.vocab_size)
    advantages = torch.randn(rollout.response_ids.shape)
    t0 = time.perf_counter()
    step(model, rollout, advantages)
    print(f"compile={args.compile}: warm-up {time.perf_counter() - t0:.1f} s", flush=True)
    times = []
    for _ in range(args.steps):
        times.append(step(model, rollout, advantages))
        forward, backward = times[-1]
        print(f"compile={args.compile}: forward {forward:.2f} s, backward {backward:.2f} s, "
              f"update {forward + backward:.2f} s", flush=True)
    return times


if __name__ == "__main__":
    main()
