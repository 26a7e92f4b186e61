"""What hicra-train lets through of Lightning's console output, and its own one-line device report.

`quiet_lightning()` is called when a run starts, not on import: importing hicra's modules changes no global state.
"""

from __future__ import annotations

import logging
import re
import warnings

# rank_zero_info logs to the rank_zero logger of whichever Lightning package set it last (lightning_utilities' module
# global): the standalone packages here, the unified `lightning` package elsewhere.
RANK_ZERO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                     "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class LightningChatter(logging.Filter):
    """Lightning's info lines that give a user nothing to act on: advertisements ("💡 Tip: ... litlogger / litmodels"),
    device availability ("GPU available: False, used: False", "TPU available: ..."; `device_line` says it in one
    line), echoes of settings hicra-train chose ("`Trainer(val_check_interval=1)` was configured so ...") and the
    normal end of fit ("`Trainer.fit` stopped: `max_steps=2` reached."; the summary follows). Its other info lines
    (resuming from a checkpoint, mixed precision, ...) and all its warnings still show."""

    NOISE = re.compile(r"💡 Tip: |(GPU|TPU) available: |`Trainer\(\w+=1(\.0)?\)` was configured so |"
                       r"`Trainer\.fit` stopped: `max_steps=")

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.NOISE.match(record.getMessage())


def quiet_lightning() -> None:
    """Filter LightningChatter out of Lightning's rank-zero loggers (once per process) and ignore the warnings that
    say nothing to act on: prompts bypass device transfer (on purpose: they are strings), a pytree notice, and two
    about hicra's own checkpoints."""
    warnings.filterwarnings("ignore", message=".*transfer_batch_to_device.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # Under manual optimization Lightning warns, with 14 lines of sample code, that an every-n-steps checkpoint holds
    # the weights after that step's update. That is what resume needs here: it continues with the next batch.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization and every_n_train_steps",
                            category=UserWarning)
    # Resumed from a moved or copied run folder (`paths.*` may change), ModelCheckpoint warns that it will not reload
    # its best-k bookkeeping: hicra keeps no best-k checkpoints, only `last.ckpt`.
    warnings.filterwarnings("ignore", message="The dirpath has changed from", category=UserWarning)
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, LightningChatter) for f in logger.filters):
            logger.addFilter(LightningChatter())


def device_line(trainer) -> str:
    """Where the run computes, e.g. `training on cpu` or `training on 4 x NVIDIA H200` (Lightning's own two lines,
    "GPU available: ..., used: ..." and "TPU available: ...", are filtered out by LightningChatter)."""
    import torch

    device = trainer.strategy.root_device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    count = trainer.num_devices * trainer.num_nodes
    return f"training on {count} x {name}" if count > 1 else f"training on {name}"
