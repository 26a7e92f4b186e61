"""The cpu preset's update alone, in a process of its own: how close one forward + backward is to its matmul FLOPs,
and what compiling the elementwise parts buys.

    python benchmarks/bench_update.py                      # eager, 1 warm-up + 3 steps
    python benchmarks/bench_update.py --compile parts      # torch.compile(dynamic=True) of every MLP and RMSNorm
    python benchmarks/bench_update.py --gradient-checkpointing on --entropy --logprobs autograd  # before git 07a4525

Work: 32 rows (4 prompts x 8) x (101 prompt + 128 response) tokens, prompt sharing on, the whole batch in one pass,
fp32, a token-mean policy-gradient loss on random advantages (the loss's shape does not change the matmuls). Random
token ids on the real SmolLM2-135M-Instruct weights. Run one process per variant, alternating, on an idle machine.
`--entropy` also computes the policy entropy without a gradient, as the training step does for its metrics.
`--logprobs autograd` puts back the log-prob head hicra had before git 07a4525: 1,024-row chunks of log-softmax and
gather through autograd, and a second pass for the entropy; `fused` is the one-pass head it has now
(`hicra.algorithms.logprobs_and_entropy`).
"""

from __future__ import annotations

import argparse
import resource
import time
from contextlib import contextmanager

import torch

from hicra.models.loaders import build_tiny_model, load_pretrained
from hicra.rollout import hf
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


def _autograd_head(logits, targets, temperature=1.0, with_entropy=True, entropy_grad=True, chunk=1024):
    """The log-prob head before git 07a4525, for comparison: autograd through chunked log-softmax and gather, and
    the entropy in a pass of its own. logits (B,T,V), targets (B,T) -> (B,T), (B,T) or None."""
    rows = logits.reshape(-1, logits.shape[-1]).split(chunk)  # each (<=chunk, V)

    def scaled(r):  # no copy at temperature 1, as before
        return r.float() / temperature if temperature != 1.0 else r.float()

    picked = []
    for r, t in zip(rows, targets.reshape(-1).split(chunk)):
        z = scaled(r)
        picked.append(z.gather(-1, t[:, None]).squeeze(-1) - torch.logsumexp(z, -1))
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = []
            for r in rows:
                z = scaled(r).clamp(min=torch.finfo(torch.float32).min)
                lse = torch.logsumexp(z, dim=-1)
                entropy.append(lse - (torch.exp(z - lse.unsqueeze(-1)) * z).sum(-1))
            entropy = torch.cat(entropy).view(targets.shape)
    return torch.cat(picked).view(targets.shape), entropy


@contextmanager
def logprob_head(name: str):
    """`fused` (hicra's head now) or `autograd` (the one before) inside sequence_logprobs."""
    saved = hf.logprobs_and_entropy
    if name == "autograd":
        hf.logprobs_and_entropy = _autograd_head
    try:
        yield
    finally:
        hf.logprobs_and_entropy = saved


def _page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def step(model, rollout: RolloutBatch, advantages: torch.Tensor, entropy: bool = False) -> tuple[float, float, int]:
    """Seconds of the forward (log-probs, and entropies with `entropy`) and of the backward; page faults of both."""
    faults = _page_faults()
    t0 = time.perf_counter()
    logprobs, _ = sequence_logprobs(model, rollout, entropy, 1.0, entropy_grad=False)  # (B, T)
    loss = -(logprobs * advantages).sum() / advantages.numel()
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    model.zero_grad(set_to_none=True)
    return t1 - t0, t2 - t1, _page_faults() - faults


def main(argv: list[str] | None = None) -> list[tuple[float, float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compile", choices=["none", "parts"], default="none")
    p.add_argument("--gradient-checkpointing", choices=["on", "off"], default="off")
    p.add_argument("--entropy", action="store_true", help="also the entropy, without a gradient (as training does)")
    p.add_argument("--logprobs", choices=["fused", "autograd"], default="fused", help="the log-prob head")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="bundled://smollm2-135m-instruct", help="a model for load_pretrained, or "
                   "`tiny` (hicra's 2-layer test model)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = (build_tiny_model() if args.model == "tiny" else load_pretrained(args.model)).model.train()
    if args.gradient_checkpointing == "on":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if args.compile == "parts":
        compile_parts(model)
    rollout = batch(model.config.vocab_size)
    advantages = torch.randn(rollout.response_ids.shape)
    label = (f"compile={args.compile} gc={args.gradient_checkpointing} logprobs={args.logprobs}"
             f"{' +entropy' if args.entropy else ''}")
    with logprob_head(args.logprobs):
        t0 = time.perf_counter()
        step(model, rollout, advantages, args.entropy)
        print(f"{label}: warm-up {time.perf_counter() - t0:.1f} s", flush=True)
        times = []
        for _ in range(args.steps):
            times.append(step(model, rollout, advantages, args.entropy))
            forward, backward, faults = times[-1]
            print(f"{label}: forward {forward:.2f} s, backward {backward:.2f} s, update {forward + backward:.2f} s, "
                  f"{faults / 1e6:.2f}M page faults", flush=True)
    return times


if __name__ == "__main__":
    main()
