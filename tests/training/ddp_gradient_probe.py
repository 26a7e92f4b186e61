"""One gradient accumulation over a fixed rollout batch (2 prompts x 4 responses), run by Lightning as 1 process
or as 2 ranks (gloo, CPU) with DDP or FSDP2; rank 0 saves, to OUT_DIR/<strategy>.pt, the full gradient the optimizer
would see and the micro-batch (0, 1, ...) during whose backward each gradient exchange ran (DDP's bucket all-reduces,
FSDP2's reduce-scatters). Under FSDP2 rank 1 builds the model on the meta device and receives rank 0's weights, as
`hicra-train trainer=fsdp` starts (hicra.training.distributed.shard_from_rank0). Several strategies run one after the
other in the same processes (one launch, one process group; a fit after the first launches no new rank).

    python tests/training/ddp_gradient_probe.py OUT_DIR 1 2 auto       # 1 rank: 8 rows in 4 micro-batches of 2
    python tests/training/ddp_gradient_probe.py OUT_DIR 2 2 ddp,fsdp   # 2 ranks: 4 rows (one whole group) each,
                                                                       # 2 micro-batches; DDP, then FSDP2 (trainer=fsdp's)

`main` also runs in a test's process (the single rank): the probe leaves torch.distributed as it found it.
"""

from __future__ import annotations

import os
import sys
from functools import partial

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from hicra.algorithms import Algorithm, group_advantages, identity_token_advantages
from hicra.models.loaders import build_tiny_model
from hicra.planning import NullDetector
from hicra.rollout.hf import HFSampler
from hicra.training.distributed import fully_sharded_strategy
from hicra.training.module import PolicyGradientModule

PROMPTS = ["What is 1 + 1?", "Name three primes."]
LENGTHS = torch.tensor([24, 5, 17, 1, 24, 9, 12, 3])  # EOS at different places: padding and uneven token counts
REWARDS = torch.tensor([1.0, 0, 0, 1, 0, 1, 1, 1])


class GradientProbe(PolicyGradientModule):
    def __init__(self, out: str, **kwargs):
        super().__init__(**kwargs)
        self.out = out
        self.micro_batch = -1  # the micro-batch whose backward runs now
        self.exchanges: list[int] = []  # the micro-batch of each gradient exchange

    def _micro_batch_backward(self, *args):
        self.micro_batch += 1
        return super()._micro_batch_backward(*args)

    def count_exchanges(self) -> None:
        """Record each exchange: a comm hook around DDP's own all-reduce; FSDP2's reduce-scatter, wrapped."""
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        wrapped = self.trainer.strategy.model
        if hasattr(wrapped, "register_comm_hook"):  # DDP
            wrapped.register_comm_hook(None, lambda state, bucket: self.exchanges.append(self.micro_batch)
                                       or allreduce_hook(state, bucket))
        self.reduce_scatter = dist.reduce_scatter_single
        dist.reduce_scatter_single = lambda *a, **k: (self.exchanges.append(self.micro_batch)
                                                      or self.reduce_scatter(*a, **k))

    def training_step(self, batch, batch_idx):
        self.count_exchanges()
        try:
            self._probe_step()
        finally:  # the next strategy's fit (or the test process) must not count through this probe's wrapper
            dist.reduce_scatter_single = self.reduce_scatter

    def _probe_step(self) -> None:
        torch.manual_seed(0)  # every rank samples the same 8 responses, then keeps its own share
        rollout = self.sampler.generate(self.policy, self.tokenizer, PROMPTS, 4)
        rollout.response_mask = torch.arange(rollout.response_ids.shape[1]) < LENGTHS[:, None]
        token_advantages = self.algorithm.token_advantages(self.algorithm.advantages(REWARDS),
                                                           torch.zeros_like(rollout.response_mask))
        share = 8 // self.trainer.world_size
        rows = slice(self.global_rank * share, (self.global_rank + 1) * share)
        self.optimizers().zero_grad(set_to_none=True)
        self._accumulate_gradients(rollout.rows(rows), {"token_advantages": token_advantages[rows]})
        # FSDP2 gradients are shards (DTensors): gathering them is a collective, so every rank takes part.
        grads = {name: p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad.clone()
                 for name, p in self.policy.named_parameters()}
        if self.trainer.is_global_zero:
            torch.save({"gradients": grads, "exchanges": self.exchanges, "micro_batches": self.micro_batch + 1},
                       self.out)
        self.optimizers().step()  # lr 0: nothing moves, but the step counts (Lightning stops at max_steps)


STRATEGIES = {"auto": lambda ranks: "auto", "ddp": lambda ranks: "ddp",
              "fsdp": lambda ranks: fully_sharded_strategy()}


def main(out_dir: str, ranks: int, micro_batch_size: int, strategies: str) -> None:
    for strategy in strategies.split(","):
        fit(f"{out_dir}/{strategy}.pt", ranks, micro_batch_size, strategy)


def fit(out: str, ranks: int, micro_batch_size: int, strategy: str) -> None:
    # Lightning's launcher gives the ranks it starts their LOCAL_RANK (hicra-train's start-up reads the same)
    bundle = build_tiny_model(seed=0, meta_device=strategy == "fsdp" and os.environ.get("LOCAL_RANK", "0") != "0")
    module = GradientProbe(out, policy=bundle.model, tokenizer=bundle.tokenizer,
                           algorithm=Algorithm(partial(group_advantages, group_size=4), identity_token_advantages,
                                               group_size=4), detector=NullDetector(),
                           task=None, sampler=HFSampler(max_new_tokens=24), micro_batch_size=micro_batch_size,
                           optimizer_factory=lambda params: torch.optim.SGD(params, lr=0.0))
    trainer = pl.Trainer(accelerator="cpu", devices=ranks, strategy=STRATEGIES[strategy](ranks),
                         max_steps=1, max_epochs=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(module, train_dataloaders=DataLoader([0], batch_size=1))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
