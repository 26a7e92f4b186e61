"""What the benchmark needs that hicra's config groups do not offer: a Qwen2-shaped random policy and an in-memory
task with a trivial numeric reward (random-init models write noise, and the GPU host has no verifier libraries).

Both are Hydra `_target_`s (``bench_support.<name>``), importable because `bench_step.py` runs from this folder.
"""

from __future__ import annotations

import random

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from hicra.models.loaders import PolicyBundle, finish_model, load_tokenizer
from hicra.tasks import Example, Task

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_qwen2_shaped(
    tokenizer_name_or_path: str,
    hidden_size: int = 896,
    num_hidden_layers: int = 24,
    num_attention_heads: int = 14,
    num_key_value_heads: int = 2,
    intermediate_size: int = 4864,
    dtype: str = "bfloat16",
    seed: int = 0,
    gradient_checkpointing: bool = False,
    lora: dict | None = None,
    share_prompt_prefix: bool = True,
) -> PolicyBundle:
    """A random-init Qwen2 (q/k/v biases, tied embeddings) with the given tokenizer; `hicra.models.loaders.build_tiny_model`
    for the Qwen2 architecture. The Qwen2.5-0.5B shape with SmolLM2's 49,152-token vocabulary has ~402M parameters."""
    tokenizer = load_tokenizer(tokenizer_name_or_path)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads, num_key_value_heads=num_key_value_heads,
        intermediate_size=intermediate_size, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng():  # the weights depend on `seed` only: both sides of the benchmark get the same ones
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).to(_DTYPES[dtype])
    return finish_model(model, tokenizer, gradient_checkpointing, lora, share_prompt_prefix)


class SumTask(Task):
    """"What is a + b?" questions; reward 1 when the boxed (else last) number is the sum. In memory, no verifier
    library, scored in-process: what a throughput benchmark with a random-init model needs."""

    name = "sum"
    last_number_fallback = True

    def __init__(self, train_size: int = 256, val_size: int = 8, seed: int = 0):
        rng = random.Random(seed)
        pairs = [(rng.randint(0, 99), rng.randint(0, 99)) for _ in range(train_size + val_size)]
        examples = [Example(f"What is {a} + {b}?", str(a + b)) for a, b in pairs]
        self._train, self._val = examples[:train_size], examples[train_size:]

    def train_examples(self) -> list[Example]:
        return self._train

    def val_examples(self) -> list[Example]:
        return self._val

    def score_answer(self, prediction: str, example: Example) -> float:
        return float(prediction.strip() == example.answer)
