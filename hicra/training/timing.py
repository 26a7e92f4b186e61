"""Wall-clock phases of one training step, for the perf/* metrics (hicra/training/step_metrics.py)."""

from __future__ import annotations

import contextlib
import time

import torch


class Stopwatch:
    """Seconds per named phase; a phase entered twice (several updates, micro-batches) adds up.

        watch = Stopwatch(device)
        with watch.phase("generation"):
            ...
        watch.seconds["generation"]
    """

    def __init__(self, device: torch.device | None = None):
        self.device = device
        self.seconds: dict[str, float] = {}

    def now(self) -> float:
        """Wall time after the GPU's queued work: CUDA calls return before the kernels run."""
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str):
        start = self.now()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + self.now() - start


def start_step(device: torch.device) -> Stopwatch:
    """A fresh stopwatch for one training step; the GPU's peak-memory counter restarts with it."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    return Stopwatch(device)
