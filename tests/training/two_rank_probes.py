"""The two-rank probes of tests/training/test_ddp.py in one launch: Lightning re-executes this script for rank 1, and
a launch per probe would cost two fresh interpreters and a process group each. In the same two gloo processes, one
fit after another: ddp_gradient_probe.py under DDP then FSDP2, then ddp_sampling_probe.py's run and its resume.

    python tests/training/two_rank_probes.py OUT_DIR   # OUT_DIR/gradient/{ddp,fsdp}.pt, OUT_DIR/sampling/{run,resumed}
"""

from __future__ import annotations

import sys
from pathlib import Path

import ddp_gradient_probe  # this script's folder is on sys.path
import ddp_sampling_probe

if __name__ == "__main__":
    out = Path(sys.argv[1])
    (out / "gradient").mkdir(parents=True, exist_ok=True)
    ddp_gradient_probe.main(str(out / "gradient"), ranks=2, micro_batch_size=2, strategies="ddp,fsdp")
    ddp_sampling_probe.main(out / "sampling", seed=5, steps=2)
