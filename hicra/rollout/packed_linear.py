"""Linear layers whose weights are pre-packed for oneDNN while the sampler decodes on CPU.

Why: a decoding step multiplies a few dozen rows by every weight matrix, so it is bound by reading the weights, and
`F.linear` (MKL sgemm) streams them in their plain row-major layout on every call. oneDNN's packed layout, made once
per generation, reads them faster. Measured on the cpu benchmark preset's shapes (32 rows, fp32, 2-core AMD EPYC,
benchmarks/bench_linear.py): the 576 x 49,152 LM head 22.7 -> 7.5 ms, one decoder layer's seven projections
1.6 -> 0.7 ms; a whole 32 x 128-token decoding 20.8 -> 12.1 s (benchmarks/RESULTS.md). The policy's weights change
at every optimizer step, so they are packed again at the start of every generation (~0.2 s for SmolLM2-135M) and the
modules get their own forward back at the end. Results are fp32 matmuls with another summation order (differences
~1e-6 relative, as between two BLAS libraries).

No autograd: the sampler runs under no_grad. Only exact `torch.nn.Linear` modules on CPU with fp32/bf16 plain
(not sharded) weights are packed; anything else keeps its forward.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import torch
from torch import Tensor


def available() -> bool:
    """This torch build has oneDNN and the packed-linear ops (x86 and aarch64 CPU wheels do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def _packable(module: torch.nn.Module) -> bool:
    return (type(module) is torch.nn.Linear and type(module.weight.data) is torch.Tensor
            and module.weight.device.type == "cpu" and module.weight.dtype in (torch.float32, torch.bfloat16))


def _packed_forward(packed: Tensor, weight: Tensor, bias: Tensor | None, x: Tensor) -> Tensor:
    """x (..., in) -> (..., out), as nn.Linear.forward. An input of another dtype, or autocast (bf16-mixed precision),
    takes `F.linear` on the plain weight: its casting rules stay autocast's."""
    if x.dtype != weight.dtype or torch.is_autocast_enabled(x.device.type):
        return torch.nn.functional.linear(x, weight, bias)
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


@contextmanager
def packed_linears(model: torch.nn.Module, rows: int, enabled: bool = True):
    """Within the block, every packable linear layer of `model` runs on a oneDNN-packed copy of its weight.

    rows: the batch rows the decoding steps will have (a packing hint; other row counts still work).
    A no-op when `enabled` is false, oneDNN is missing, or no layer qualifies (e.g. the model is on a GPU).
    """
    patched = []
    if enabled and available():
        with torch.no_grad():
            for module in model.modules():
                if _packable(module):
                    weight = module.weight.detach()
                    packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
                    bias = None if module.bias is None else module.bias.detach()
                    # an instance attribute shadows the class's forward; deleting it brings that back
                    module.forward = partial(_packed_forward, packed, weight, bias)
                    patched.append(module)
    try:
        yield len(patched)
    finally:
        for module in patched:
            del module.forward
