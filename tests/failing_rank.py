"""A sampler that runs out of memory on one rank: the rank chosen by HICRA_TEST_FAILING_RANK (Lightning's
LOCAL_RANK), at that rank's HICRA_TEST_FAILING_CALL-th training generation (1 = the first step's). The time of the
failure (time.time()) goes to the file HICRA_TEST_FAILED_AT names. The failing process then lingers
HICRA_TEST_LINGER_S seconds before it exits, its connections open, as a rank whose exit hangs (NCCL waiting for its
peers) does: gloo would otherwise tell the other rank at once that its peer closed the connection."""

from __future__ import annotations

import atexit
import os
import time
from pathlib import Path

import torch

from hicra.rollout.hf import HFSampler


class OutOfMemoryOnOneRank(HFSampler):
    _training_calls = 0

    def generate(self, model, tokenizer, prompts, group_size, greedy=False, **kwargs):
        if not greedy and os.environ.get("LOCAL_RANK", "0") == os.environ.get("HICRA_TEST_FAILING_RANK"):
            OutOfMemoryOnOneRank._training_calls += 1
            if OutOfMemoryOnOneRank._training_calls == int(os.environ.get("HICRA_TEST_FAILING_CALL", "1")):
                Path(os.environ["HICRA_TEST_FAILED_AT"]).write_text(str(time.time()))
                atexit.register(time.sleep, float(os.environ.get("HICRA_TEST_LINGER_S", "0")))
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        return super().generate(model, tokenizer, prompts, group_size, greedy=greedy, **kwargs)
