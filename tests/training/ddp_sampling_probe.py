"""What each rank samples, run by Lightning as 2 CPU ranks (gloo) with DDP: every rank samples the same prompts with the
same weights each step, so only its sampling stream can tell its responses apart. Each rank saves its responses and a
draw from the shared (seed_everything) stream per step; a checkpoint is written after every step.

Each rank also hands the corpus recorder its replies as correct (rank 1 none at step 0: it must still take part), and
its recorder is given a folder of its own, as torchrun ranks started in different seconds would compute:
only rank 0's folder may receive a corpus, holding both ranks' replies.

    python tests/training/ddp_sampling_probe.py OUT_DIR SEED STEPS

writes OUT_DIR/run (STEPS steps), then, in the same two processes, OUT_DIR/resumed: a second fit resumed from
run/step=<STEPS-1>.ckpt (its last step only). A second launch would cost two more interpreters; what a fresh process
would bring to the resume is replaced by reseeding every global generator with another seed first (see `main`).
"""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from hicra.algorithms import Algorithm, group_advantages, identity_token_advantages
from hicra.models.loaders import build_tiny_model
from hicra.planning import NullDetector
from hicra.rollout.hf import HFSampler
from hicra.training.callbacks import CorrectCompletionsRecorder
from hicra.training.module import PolicyGradientModule
from hicra.training.step_output import KEY, StepOutput

PROMPTS = ["What is 1 + 1?", "Name three primes."]


class SamplingProbe(PolicyGradientModule):
    def __init__(self, out: Path, **kwargs):
        super().__init__(**kwargs)
        self.out, self.record = out, []

    def training_step(self, batch, batch_idx):
        rollout = self._generate(PROMPTS, 4)  # the module's own rollout path, with this rank's stream
        self.record.append({"step": self.global_step, "responses": rollout.response_ids, "shared": torch.rand(2)})
        self.optimizers().zero_grad(set_to_none=True)
        self.optimizers().step()  # lr 0 and no gradient: nothing moves, but the step counts
        if self.global_rank == 1 and self.global_step == 1:
            return None  # nothing to record on this rank at step 0
        texts = [f"rank {self.global_rank} step {self.global_step - 1} row {i}" for i in range(len(rollout.truncated))]
        ones = torch.ones(len(texts))
        return {KEY: StepOutput(self.global_step - 1, rollout, texts, ones, ones, rollout.response_mask, ones,
                                rollout.response_mask.float(), PROMPTS)}

    def on_train_end(self) -> None:
        torch.save(self.record, self.out / f"rank{self.global_rank}.pt")


def fit(out: Path, steps: int, ckpt: Path | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    bundle = build_tiny_model(seed=0)
    rank = os.environ.get("LOCAL_RANK", "0")  # Lightning starts rank 1 with it set; rank 0 is this process
    module = SamplingProbe(out, policy=bundle.model, tokenizer=bundle.tokenizer,
                           algorithm=Algorithm(partial(group_advantages, group_size=4), identity_token_advantages,
                                               group_size=4), detector=NullDetector(), task=None,
                           sampler=HFSampler(max_new_tokens=8),
                           optimizer_factory=lambda params: torch.optim.SGD(params, lr=0.0))
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=steps, max_epochs=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                         callbacks=[CorrectCompletionsRecorder(out / f"folder_of_rank{rank}"),
                                    ModelCheckpoint(dirpath=out, filename="{step}", every_n_train_steps=1,
                                                    save_top_k=-1)])
    trainer.fit(module, train_dataloaders=DataLoader(list(range(steps)), batch_size=1), ckpt_path=ckpt)


def main(out: Path, seed: int, steps: int) -> None:
    pl.seed_everything(seed, verbose=False)  # as hicra-train does, on every rank
    fit(out / "run", steps)
    # The resume reuses these processes (their process group too: Lightning launches no new rank, LOCAL_RANK is set
    # now). Every global generator, and with them the module's own sampling seed (torch.initial_seed()), is reseeded
    # with another seed: a rank that continued anything but the checkpoint's streams would draw differently.
    pl.seed_everything(seed + 1, verbose=False)
    fit(out / "resumed", steps, ckpt=out / "run" / f"step={steps - 1}.ckpt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
