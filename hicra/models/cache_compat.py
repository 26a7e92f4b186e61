"""The one place that knows what transformers calls a model's KV cache: `cache` or `past_key_values`.

transformers renamed the forward argument and the output field from `past_key_values` to `cache` in the 5.2x line;
5.17 through 5.20 (what vLLM's wheels pin) know only `past_key_values`, and the newer releases still accept the old
name but warn on every call. The name is read once, from the fields of transformers' own causal-LM output class, so
it follows the installed release rather than a version string, and a model wrapped by PEFT or FSDP (whose forward
hides its signature behind **kwargs) is called the same way.
"""

from __future__ import annotations

import dataclasses

from transformers.modeling_outputs import CausalLMOutputWithPast


def cache_name_of(output_class: type) -> str:
    """The cache field of a transformers output dataclass: "cache" where the release has it, else "past_key_values"."""
    fields = {field.name for field in dataclasses.fields(output_class)}
    return "cache" if "cache" in fields else "past_key_values"


CACHE_NAME = cache_name_of(CausalLMOutputWithPast)


def cache_kwargs(cache) -> dict:
    """Keyword arguments handing `cache` to a model's forward under the installed release's name."""
    return {CACHE_NAME: cache}


def output_cache(output):
    """The KV cache a forward call returned (with use_cache=True)."""
    return getattr(output, CACHE_NAME)
