"""Each training process's own random stream for sampling.

Every rank calls `seed_everything(seed)` with the same seed: the model's random init, LoRA's and the data order must
agree across ranks. Sampling must not: drawn from that shared generator, row b of every rank would get the same
uniforms, and DDP/FSDP samples would be correlated across ranks. A SamplingStream keeps one rank's generator states,
seeded from (seed, rank), and swaps them in for the process-wide generators around a rollout, so that whatever the
sampler draws with (decode's `torch.rand`, `generate`'s multinomial, vLLM's request seeds) comes from the rank's own
stream, and the shared stream is left exactly where it was.

The states are plain tensors: the LightningModule saves every rank's in a checkpoint, and a resumed rank continues its
own stream (hicra/training/module.py).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch


def stream_seed(seed: int, rank: int, restart: int = 0) -> int:
    """The generator seed of `rank`'s stream: numpy's SeedSequence mixes the numbers, so neighbouring seeds and ranks
    give unrelated streams (seed + rank would give rank 1 of seed 0 the stream of rank 0 of seed 1). `restart`: a
    stream begun again mid-run, where no saved state fits (the step it begins at), so it does not replay step 0's."""
    return int(np.random.SeedSequence([seed, rank, restart]).generate_state(1, dtype=np.uint64)[0])


def _generators(device: torch.device) -> dict[str, torch.Generator]:
    """The process-wide generators a sampler on `device` draws from: the CPU one always (vLLM's request seeds, CPU
    decoding), the device's own on CUDA. Other accelerators keep drawing from their shared generator."""
    generators = {"cpu": torch.default_generator}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        generators["cuda"] = torch.cuda.default_generators[index]
    return generators


class SamplingStream:
    def __init__(self, seed: int, rank: int = 0, restart: int = 0):
        self.seed, self.rank, self.restart = seed, rank, restart
        self._states: dict[str, torch.Tensor] = {}  # generator kind ("cpu", "cuda") -> its state after the last use

    @contextlib.contextmanager
    def active(self, device: torch.device | str):
        """Draws inside come from this stream; the process-wide generators are restored afterwards."""
        generators = _generators(torch.device(device))
        shared = {kind: g.get_state() for kind, g in generators.items()}
        for kind, generator in generators.items():
            if kind in self._states:
                generator.set_state(self._states[kind])
            else:
                generator.manual_seed(stream_seed(self.seed, self.rank, self.restart))
        try:
            yield
        finally:
            for kind, generator in generators.items():
                self._states[kind] = generator.get_state()
                generator.set_state(shared[kind])

    def state_dict(self) -> dict:
        return {"seed": self.seed, "rank": self.rank, "restart": self.restart, "states": dict(self._states)}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.rank, self.restart = state["seed"], state["rank"], state["restart"]
        self._states = dict(state["states"])
