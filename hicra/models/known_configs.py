"""The architecture numbers of the models the recipes name, so that the memory plan (hicra/training/memory_check.py)
works offline, before any download: copied from each model's config.json on the Hugging Face hub. Only the keys that
change a parameter count or a cache size; a local folder or a cached hub config is read instead when there is one."""

from __future__ import annotations


def _shape(model_type: str, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int,
           context: int, tied: bool, **extra) -> dict:
    return {"model_type": model_type, "hidden_size": hidden, "intermediate_size": intermediate,
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "vocab_size": vocab, "max_position_embeddings": context, "tie_word_embeddings": tied, **extra}


KNOWN_CONFIGS: dict[str, dict] = {
    "Qwen/Qwen2.5-7B": _shape("qwen2", 3584, 18944, 28, 28, 4, 152064, 131072, tied=False),
    "meta-llama/Llama-3.1-8B-Instruct": _shape("llama", 4096, 14336, 32, 32, 8, 128256, 131072, tied=False),
    "Qwen/Qwen3-4B-Base": _shape("qwen3", 2560, 9728, 36, 32, 8, 151936, 32768, tied=True, head_dim=128),
    "Qwen/Qwen3-4B-Instruct-2507": _shape("qwen3", 2560, 9728, 36, 32, 8, 151936, 262144, tied=True, head_dim=128),
    # the embedded default (model=smollm2_135m), converted from a GGUF on first use
    "bundled://smollm2-135m-instruct": _shape("llama", 576, 1536, 30, 9, 3, 49152, 8192, tied=True),
}
