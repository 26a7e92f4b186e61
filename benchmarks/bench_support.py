"""What the benchmarks share, and what they need that hicra's config groups do not offer.

- a Qwen2-shaped random policy and an in-memory task with a trivial numeric reward (random-init models write noise,
  and the GPU host has no verifier libraries): Hydra `_target_`s (``bench_support.<name>``), importable because the
  benchmarks run from this folder;
- the model and task presets of the GPU runs (bench_step.py's and bench_decode.py's `--preset gpu`);
- the decoding floor both report (`decode_floor`) and the CUDA sync that brackets every timed call.
Kept here so that no benchmark script imports another one.
"""

from __future__ import annotations

import random
import statistics
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from hicra.models import prefix_sharing
from hicra.models.cache_compat import cache_kwargs
from hicra.models.loaders import PolicyBundle, finish_model, load_tokenizer
from hicra.rollout.kv_cache import preallocate
from hicra.tasks import Example, Task

# Random-init model shapes (Hydra overrides of the `model` group) and the task for them.
SMOLLM2_SHAPE = ["model=tiny", "model.hidden_size=576", "model.num_hidden_layers=30", "model.num_attention_heads=9",
                 "model.num_key_value_heads=3", "model.intermediate_size=1536"]
QWEN05B_SHAPE = ["model=tiny", "model._target_=bench_support.build_qwen2_shaped", "model.hidden_size=896",
                 "model.num_hidden_layers=24", "model.num_attention_heads=14", "model.num_key_value_heads=2",
                 "model.intermediate_size=4864"]
SUM_TASK = {"_target_": "bench_support.SumTask", "train_size": 256, "val_size": 8, "seed": 0}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@torch.no_grad()
def decode_floor(model, prompt_ids, prompt_mask, group_size: int, max_new_tokens: int, calls: int = 15) -> dict:
    """Median seconds of one batched single-token forward at the mean cache length, and that times the steps.

    prompt_ids, prompt_mask (U, Lp) left-padded, as the decoding loop gets them."""
    model.eval()
    U, Lp = prompt_ids.shape
    B, extra = U * group_size, max_new_tokens // 2  # cache = prompt + half a reply: the mean over the reply
    cache = prefix_sharing.prefilled_cache(model, prompt_ids, prompt_mask, group_size)
    preallocate(cache, Lp + extra + 1)
    filler = torch.full((B, extra), int(prompt_ids[0, -1]), dtype=torch.long, device=prompt_ids.device)
    mask = torch.cat([prompt_mask.long().repeat_interleave(group_size, 0), torch.ones_like(filler)], dim=1)
    positions = prefix_sharing.positions(mask)  # (B, Lp + extra)
    model(input_ids=torch.cat([prompt_ids[:, -1:].repeat_interleave(group_size, 0), filler[:, :-1]], dim=1),
          attention_mask=mask[:, :-1], position_ids=positions[:, Lp - 1:-1], use_cache=True,
          **cache_kwargs(cache))
    times = []
    for _ in range(calls):
        sync()
        start = time.perf_counter()
        model(input_ids=filler[:, -1:], attention_mask=mask, position_ids=positions[:, -1:], use_cache=True,
              **cache_kwargs(cache))
        sync()
        times.append(time.perf_counter() - start)
        cache.crop(-1)
    step = statistics.median(times)
    return {"forward_s": step, "floor_s": step * max_new_tokens, "cache_length": Lp + extra, "rows": B}


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
        model = Qwen2ForCausalLM(config).to(getattr(torch, dtype))  # one of hicra.options.MODEL_DTYPES
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
