"""A tiny policy trained by Lightning under trainer=fsdp's strategy (FSDP2 over gloo, CPU) for `steps` AdamW steps,
saving `last.ckpt` the way a hicra run does (ModelCheckpoint, AtomicCheckpointIO, the run record under RUN_KEY), or
resuming from one. Rank 0 writes the whole weights and optimizer state it holds at the start and at the end of fit
(gathered from the shards), so that a test compares them across world sizes.

    python tests/training/sharded_checkpoint_probe.py OUT_DIR RANKS STEPS [CKPT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from support import TINY_RUN, composer
from torch.utils.data import DataLoader

from hicra.models.loaders import build_tiny_model
from hicra.training.checkpointing import AtomicCheckpointIO, RunRecord, checkpoint_callback
from hicra.training.distributed import shard_model
from hicra.training.resume import config_snapshot
from hicra.training.sharded_checkpoint import fully_sharded_strategy

INPUT_IDS = torch.tensor([[1, 5, 9, 2, 7, 3], [4, 4, 8, 1, 6, 2]])


class TinyPolicy(pl.LightningModule):
    """Holds the policy as `self.policy`, as PolicyGradientModule does: the checkpoint's names are `policy.*`."""

    def __init__(self, out: Path):
        super().__init__()
        self.policy, self.out = build_tiny_model(seed=0).model, out

    def configure_model(self) -> None:
        shard_model(self.policy, self.device_mesh["data_parallel"])

    def configure_optimizers(self):
        return torch.optim.AdamW(self.policy.parameters(), lr=1e-2)

    def training_step(self, batch, batch_idx):
        return self.policy(input_ids=INPUT_IDS).logits.float().logsumexp(-1).mean()

    def on_train_start(self) -> None:
        self._dump("start.pt")

    def on_train_end(self) -> None:
        self._dump("end.pt")

    def _dump(self, name: str) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        full = StateDictOptions(full_state_dict=True, cpu_offload=True)  # a collective: every rank takes part
        weights, optimizer = get_state_dict(self.policy, self.trainer.optimizers[0], options=full)
        if self.trainer.is_global_zero:
            torch.save({"weights": weights, "optimizer": optimizer["state"], "step": self.trainer.global_step},
                       self.out / name)


def main(out: Path, ranks: int, steps: int, ckpt: str | None) -> None:
    record = {"mlflow_run_id": None, "run_dir": str(out), "config": config_snapshot(composer("train")(*TINY_RUN))}
    trainer = pl.Trainer(accelerator="cpu", devices=ranks, strategy=fully_sharded_strategy(), max_steps=steps,
                         logger=False, enable_progress_bar=False, enable_model_summary=False,
                         plugins=[AtomicCheckpointIO()],
                         callbacks=[RunRecord(record), checkpoint_callback(out / "checkpoints", every_n_steps=1)])
    trainer.fit(TinyPolicy(out), train_dataloaders=DataLoader([0] * steps, batch_size=1), ckpt_path=ckpt,
                weights_only=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
