"""A KV cache that grows without copying: each layer's keys and values live in a buffer sized for the whole reply.

transformers' dynamic cache appends a position with `torch.cat`, which copies every layer's whole cache at every
decoding step: O(L) bytes per step, O(L^2) per reply. On the cpu benchmark preset (32 rows, 101-token prompts, 128
new tokens, 30 layers) that copy was ~30% of a decoding step. Here appending writes one column into the buffer and
the layer hands attention a view of the filled part; the values attended to are the same tensors, so decoding is
unchanged (tests/rollout/test_decode.py: greedy tokens equal `generate`'s).

The buffers hold the compute dtype: under bf16 autocast (trainer.precision=bf16-mixed, fp32 weights) RoPE multiplies
the bf16 keys by fp32 cos/sin tables, so keys arrive in fp32 and a cache allocated like them would take twice the
memory (and autocast would cast the whole K cache back to bf16 for attention at every step, per layer). Attention
casts keys to bf16 under autocast anyway, so storing them in bf16 changes no token.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers.cache_utils import DynamicLayer, StaticCache, StaticLayer


class PreallocatedLayer(DynamicLayer):
    """A DynamicLayer whose `keys`/`values` are views of (B, kv_heads, capacity, head_dim) buffers."""

    def __init__(self, keys: Tensor, values: Tensor, capacity: int, dtype: torch.dtype | None = None):
        super().__init__()
        batch, heads, length, head_dim = keys.shape  # (B, kv, L, d)
        if capacity < length:
            raise ValueError(f"capacity={capacity} is smaller than the {length} cached positions")
        self._keys = keys.new_empty(batch, heads, capacity, head_dim, dtype=dtype or keys.dtype)
        self._values = values.new_empty(batch, heads, capacity, values.shape[-1], dtype=dtype or values.dtype)
        self._keys[:, :, :length] = keys
        self._values[:, :, :length] = values
        self.length, self.device, self.is_initialized = length, keys.device, True
        self._expose()

    def _expose(self) -> None:
        self.keys = self._keys[:, :, :self.length]  # (B, kv, L, d) view, no copy
        self.values = self._values[:, :, :self.length]

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        """Append (B, kv, n, d) new positions; the whole filled cache back, as DynamicLayer.update returns it."""
        end = self.length + key_states.shape[-2]
        if end > self._keys.shape[2]:
            raise RuntimeError(f"KV cache full: {end} positions asked, room for {self._keys.shape[2]}")
        self._keys[:, :, self.length:end] = key_states
        self._values[:, :, self.length:end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep rows `indices` (finished rows leave the batch)."""
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._expose()

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._keys = self._keys.repeat_interleave(repeats, dim=0)
        self._values = self._values.repeat_interleave(repeats, dim=0)
        self._expose()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop({tokens_to_remove}): pass a negative number of positions to remove")
        self.length = max(0, self.length + tokens_to_remove)
        self._expose()


def compute_dtype(tensor: Tensor) -> torch.dtype | None:
    """The autocast dtype when autocast is on for `tensor`'s device and `tensor` is a wider float; None otherwise."""
    device = tensor.device.type
    if not torch.is_autocast_enabled(device):
        return None
    dtype = torch.get_autocast_dtype(device)
    return dtype if tensor.is_floating_point() and tensor.element_size() > dtype.itemsize else None


def preallocate(cache, capacity: int):
    """Swap every plain DynamicLayer of `cache` (a transformers Cache) for a PreallocatedLayer with room for `capacity`
    positions, in the compute dtype (`compute_dtype`); other layer kinds (sliding windows, static layers) are kept as
    they are. Returns the cache."""
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer and layer.is_initialized:
            cache.layers[i] = PreallocatedLayer(layer.keys, layer.values, capacity, compute_dtype(layer.keys))
    return cache


class ComputeDtypeStaticLayer(StaticLayer):
    """transformers' StaticLayer (the cache `generate` compiles its decoding step for) holding the compute dtype:
    keys and values are cast as they are stored, as PreallocatedLayer's buffers do."""

    def __init__(self, max_cache_len: int, dtype: torch.dtype):
        super().__init__(max_cache_len=max_cache_len)
        self.compute_dtype = dtype

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        super().lazy_initialization(key_states.to(self.compute_dtype), value_states.to(self.compute_dtype))

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        return super().update(key_states.to(self.compute_dtype), value_states.to(self.compute_dtype), *args, **kwargs)


def static_cache(model, max_cache_len: int):
    """A StaticCache for `generate` in the compute dtype when autocast would otherwise have it allocate fp32 keys
    (`compute_dtype` of the model's weights); None where generate's own (`cache_implementation="static"`) is right."""
    dtype = compute_dtype(next(model.parameters()))
    if dtype is None:
        return None
    cache = StaticCache(config=model.config, max_cache_len=max_cache_len)
    cache.layers = [ComputeDtypeStaticLayer(max_cache_len, dtype) if type(layer) is StaticLayer else layer
                    for layer in cache.layers]
    return cache
