"""What the vLLM engine must neither inherit from the trainer nor leave behind in it.

- Inherited: Lightning calls the sampler inside its autocast (bf16-mixed) and, when validating on NCCL, inside
  `torch.inference_mode()`. An engine started there would compile and capture its CUDA graphs under autocast, and
  its parameters would be inference tensors that no later weight sync could write (and FSDP2's all-gathers fail under
  inference mode). `engine_mode` runs the engine as a script would: no autocast, no inference mode, no graph.
- Left behind: vLLM seeds Python's, NumPy's and torch's (CPU and CUDA) generators when its engine starts. The engine
  starts lazily, on the first rollout, which after a resume is a different step than in the uninterrupted run: the
  reseeded generators would then differ and the resumed run would no longer be bit-exact. `preserved_rng` puts every
  one of them back.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch


@contextlib.contextmanager
def engine_mode():
    # inference_mode(False) turns grad mode on: no_grad after it
    with torch.inference_mode(False), torch.no_grad(), torch.autocast("cuda", enabled=False), \
            torch.autocast("cpu", enabled=False):
        yield


@contextlib.contextmanager
def preserved_rng():
    """Python's, NumPy's, torch's CPU and every CUDA device's generator state, restored on the way out."""
    python, numpy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None  # none to keep before CUDA starts
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
