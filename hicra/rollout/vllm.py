"""Optional rollouts with vLLM (`rollout=vllm`): the same RolloutBatch as HFSampler, sampled by a vLLM engine.

vLLM is not a dependency of this project. It is imported when a VLLMSampler is built, and a missing package (or a
machine without CUDA) is a one-line ConfigError before any model loads; `rollout=hf` needs nothing extra.

How it works (one GPU, the engine lives in the training process, next to the policy):

- Engine: started on the first `generate()` from the policy's *config* and tokenizer, written to a temp folder,
  with `load_format="dummy"`: no weights go to disk, whatever the policy came from (bundled GGUF, random-init tiny,
  hub id). The weight sync below fills in the real weights before anything is sampled (verl starts its engines
  the same way).
- In-process: VLLM_ENABLE_V1_MULTIPROCESSING=0, so vLLM V1 runs its engine core in this process and the engine's
  model can be reached and written from here (GPU to GPU, no serialisation). V0 is always in-process.
- Weight sync before *every* `generate()`, training and validation alike: `policy.state_dict()` is copied into
  the engine's model with its own `load_weights` (which knows how to fuse q/k/v, gate/up and to cast dtypes),
  then the prefix cache is reset (its KV blocks came from the old weights). A copy of the weights costs
  milliseconds next to generation. Skipping it for consecutive validation calls would need to know whether an
  update happened in between, and tensor version counters cannot tell: fused AdamW updates parameters without
  bumping them (torch 2.13). A stale engine would silently sample from an old policy, so we always sync.
- Log-probs are never taken from vLLM. The LightningModule recomputes them with the policy (`sequence_logprobs`)
  for both the old and the new log-probs, so the importance ratio of the first update is 1 as with `rollout=hf`.
  What differs is the *sampler*: vLLM's kernels (and its bf16 weights) give a distribution slightly different
  from the policy's forward pass, so the samples are very slightly off-policy and the ratio cannot show it. The gap
  is small next to the clip range and is the usual trade of TRL's and verl's vLLM modes. vLLM's own log-prob of
  each sampled token (`logprobs_mode="processed_logprobs"`: after the temperature, as the trainer scores) comes back
  in `RolloutBatch.sampler_logprobs`: the gap is logged (mismatch/*) and `algorithm.sampler_correction` corrects
  the loss for it by truncated importance sampling (hicra/algorithms/sampler_correction.py).
- Not supported: LoRA policies (the engine would need the merged weights), several GPUs (DDP/FSDP), and keeping
  the engine's memory free during the update (vLLM's sleep mode). The engine keeps `gpu_memory_utilization` of
  the GPU for the whole run.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Sequence

import torch

from hicra.errors import ConfigError
from hicra.rollout.hf import HFSampler, RolloutBatch, eos_token_ids, response_mask_from_eos

MISSING_VLLM = "rollout=vllm needs the vllm package (pip install vllm, CUDA only); allowed without it: rollout=hf"
NO_CUDA = "rollout=vllm needs a CUDA GPU and none is visible; allowed here: rollout=hf"


# --- layout (pure, testable without vLLM) -----------------------------------------------------------------------

def batch_from_token_lists(
    prompt_ids_per_row: Sequence[Sequence[int]],
    response_ids_per_row: Sequence[Sequence[int]],
    pad_id: int,
    eos_ids: list[int],
    device: torch.device | str = "cpu",
    logprobs_per_row: Sequence[Sequence[float]] | None = None,
) -> RolloutBatch:
    """HFSampler's batch layout from unpadded token lists, one entry per row (B rows, already grouped by prompt).

    prompt_ids (B,Lp) are left-padded with `pad_id`, response_ids (B,T) right-padded with `pad_id`. The response
    mask is true up to and including the first EOS and never on padding, so it is right even when pad == EOS or a
    row stopped short without an EOS; `truncated` (B,) = the row has no EOS among its own tokens.
    `logprobs_per_row`: the sampler's log-prob of each response token, laid out as `sampler_logprobs` (B,T): 0 on
    padding, NaN where a row has fewer log-probs than tokens (an EOS the engine did not report).
    """
    if len(prompt_ids_per_row) != len(response_ids_per_row):
        raise ValueError(f"{len(prompt_ids_per_row)} prompt rows but {len(response_ids_per_row)} response rows")
    B = len(prompt_ids_per_row)
    Lp = max((len(p) for p in prompt_ids_per_row), default=0)
    T = max((len(r) for r in response_ids_per_row), default=0) or 1  # at least one column, as generate gives
    prompt_ids = torch.full((B, Lp), pad_id, dtype=torch.long)  # (B,Lp)
    prompt_mask = torch.zeros((B, Lp), dtype=torch.bool)  # (B,Lp)
    response_ids = torch.full((B, T), pad_id, dtype=torch.long)  # (B,T)
    lengths = torch.tensor([len(r) for r in response_ids_per_row], dtype=torch.long)  # (B,)
    for row, (prompt, response) in enumerate(zip(prompt_ids_per_row, response_ids_per_row)):
        if len(prompt):
            prompt_ids[row, Lp - len(prompt):] = torch.as_tensor(prompt, dtype=torch.long)
            prompt_mask[row, Lp - len(prompt):] = True
        if len(response):
            response_ids[row, :len(response)] = torch.as_tensor(response, dtype=torch.long)
    generated = torch.arange(T)[None, :] < lengths[:, None]  # (B,T) the row's own tokens, not padding
    up_to_eos, _ = response_mask_from_eos(response_ids, eos_ids)  # (B,T)
    truncated = ~(torch.isin(response_ids, torch.tensor(eos_ids, dtype=torch.long)) & generated).any(dim=1)  # (B,)
    mask = up_to_eos & generated  # (B,T)
    sampler = None if logprobs_per_row is None else _logprob_layout(logprobs_per_row, mask)
    return RolloutBatch(prompt_ids.to(device), prompt_mask.to(device), response_ids.to(device), mask.to(device),
                        truncated.to(device), None if sampler is None else sampler.to(device))


def _logprob_layout(logprobs_per_row: Sequence[Sequence[float]], mask: torch.Tensor) -> torch.Tensor:
    """(B,T) float: each row's log-probs from column 0, NaN for tokens without one, 0 off the response mask."""
    out = torch.full(mask.shape, float("nan"))  # (B,T)
    for row, values in enumerate(logprobs_per_row):
        n = min(len(values), mask.shape[1])
        out[row, :n] = torch.as_tensor(list(values[:n]), dtype=torch.float32)
    return out.masked_fill(~mask, 0.0)


# --- plumbing: vLLM ---------------------------------------------------------------------------------------------

def _model_of(runner):
    return runner.get_model() if hasattr(runner, "get_model") else getattr(runner, "model", None)


def _load_on_worker(worker, weights) -> None:
    """Run on each vLLM worker by `collective_rpc` (vLLM V1): copy (name, tensor) pairs into its model."""
    _model_of(worker.model_runner).load_weights(weights)


def weight_loader(llm):
    """A function that copies a list of (name, tensor) pairs into the engine's model, for the installed vLLM.

    V0, and V1 with its engine in-process: `llm.llm_engine.model_executor.driver_worker.model_runner` is reachable
    here and its model's `load_weights` is called directly (TRL's colocate mode). Otherwise V1's
    `llm.collective_rpc` runs `_load_on_worker` on the workers.
    """
    runner = llm
    for name in ("llm_engine", "model_executor", "driver_worker", "model_runner"):
        runner = getattr(runner, name, None)
    model = _model_of(runner) if runner is not None else None
    if model is not None and hasattr(model, "load_weights"):
        return model.load_weights
    if hasattr(llm, "collective_rpc"):
        return lambda weights: llm.collective_rpc(_load_on_worker, args=(weights,))
    raise ConfigError("rollout=vllm cannot copy the policy's weights into this vllm version (no "
                      "llm_engine.model_executor.driver_worker.model_runner.model.load_weights and no "
                      "LLM.collective_rpc); allowed: rollout=hf, or a vllm version that has either")


class VLLMSampler(HFSampler):
    """Samples with a vLLM engine in this process; HFSampler's settings, checks and batch layout, plus vLLM's own.

    Settings come from `conf/rollout/vllm.yaml`; see there for why each default.
    """

    supports_lora = False  # read by hicra-train's preflight: refused before any model loads
    # One engine in this process, fed the whole policy: no DDP/FSDP ranks (hicra/config/placement.py refuses them on
    # the command line, by this class's `_target_`).
    one_process_only = True

    def __init__(
        self,
        gpu_memory_utilization: float = 0.3,
        enforce_eager: bool = False,
        dtype: str = "bfloat16",
        max_model_len: int | None = None,
        seed: int = 0,
        **sampling,  # HFSampler's settings: temperature, top_p, top_k, max_new_tokens, max_prompt_tokens, ...
    ):
        try:
            import vllm
        except ImportError:
            raise ConfigError(MISSING_VLLM) from None
        if not torch.cuda.is_available():
            raise ConfigError(NO_CUDA)
        super().__init__(**sampling)
        if not 0.0 < gpu_memory_utilization <= 1.0:
            raise ConfigError(f"rollout.gpu_memory_utilization={gpu_memory_utilization} is not allowed; use a "
                              f"fraction in (0, 1] of the GPU's memory")
        needed = self.max_prompt_tokens + max(self.max_new_tokens, self.val_max_new_tokens)
        if max_model_len is not None and max_model_len < needed:
            raise ConfigError(f"rollout.max_model_len={max_model_len} is below max_prompt_tokens + max_new_tokens "
                              f"= {needed}; use null (= {needed}) or a larger value")
        self.gpu_memory_utilization, self.enforce_eager, self.dtype = gpu_memory_utilization, enforce_eager, dtype
        self.max_model_len, self.seed = max_model_len or needed, seed
        self._vllm = vllm
        self._llm = None
        self._load_weights = None
        self._folder: tempfile.TemporaryDirectory | None = None
        self.weight_syncs = 0  # how many times the policy's weights were copied into the engine

    @torch.no_grad()
    def generate(self, model, tokenizer, prompts: list[str], group_size: int, greedy: bool = False) -> RolloutBatch:
        """Each prompt `group_size` times (rows grouped), sampled (or greedy for evaluation) from the current policy."""
        # Same tokenization as HFSampler (its padding only adds pad ids on the left, which the layout adds back).
        prompt_ids = tokenizer(prompts, truncation=True, max_length=self.max_prompt_tokens,
                               add_special_tokens=False).input_ids
        eos_ids = eos_token_ids(tokenizer, model)
        llm = self._engine(model, tokenizer)
        self._sync(model)
        params = self._sampling_params(len(prompts), group_size, greedy, eos_ids)
        outputs = llm.generate([{"prompt_token_ids": list(ids)} for ids in prompt_ids], params, use_tqdm=False)
        completions = [c for out in outputs for c in sorted(out.outputs, key=lambda c: c.index)]
        responses = [_completion_ids(c, eos_ids) for c in completions]
        logprobs = None if greedy else [_completion_logprobs(c) for c in completions]
        if greedy:  # one greedy completion per prompt, repeated: identical rows, as HFSampler gives
            responses = [r for r in responses for _ in range(group_size)]
        rows = [ids for ids in prompt_ids for _ in range(group_size)]
        return batch_from_token_lists(rows, responses, tokenizer.pad_token_id, eos_ids,
                                      next(model.parameters()).device, logprobs)

    def _sampling_params(self, num_prompts: int, group_size: int, greedy: bool, eos_ids: list[int]) -> list:
        SamplingParams = self._vllm.SamplingParams
        # Stop on the same EOS ids as HFSampler (the generation config's list, not only the tokenizer's EOS);
        # detokenize=False: texts are decoded by the LightningModule from the ids.
        common = {"stop_token_ids": eos_ids, "detokenize": False}
        if greedy:
            return [SamplingParams(n=1, temperature=0.0, max_tokens=self.val_max_new_tokens, **common)
                    for _ in range(num_prompts)]
        # Per-request seeds drawn from torch's RNG (the rank's sampling stream, hicra/rollout/sampling_stream.py,
        # saved in checkpoints): every request its own stream, reproducible for a seed as far as vLLM's kernels are
        # deterministic. vLLM seeds a request's child j with seed + j, so request i starts G seeds after request
        # i - 1: with first + i, prompt i's child j would share prompt i+1's child j-1's seed (correlated groups).
        # logprobs=0: the sampled token's own log-prob only (the mismatch correction's input).
        first = int(torch.randint(0, 2**31 - 1 - num_prompts * group_size, ()))
        return [SamplingParams(n=group_size, temperature=self.temperature, top_p=self.top_p,
                               top_k=self.top_k if self.top_k > 0 else -1, max_tokens=self.max_new_tokens,
                               min_tokens=self.min_new_tokens, seed=first + i * group_size, logprobs=0, **common)
                for i in range(num_prompts)]

    def _engine(self, policy, tokenizer):
        """The vLLM engine, started on first use from the policy's config and tokenizer (weights come by sync)."""
        if self._llm is not None:
            return self._llm
        if hasattr(policy, "peft_config"):
            raise ConfigError("rollout=vllm does not support LoRA policies (the engine would need the merged "
                              "weights every step); allowed: rollout=hf with lora=default, or lora=none")
        self._folder = tempfile.TemporaryDirectory(prefix="hicra-vllm-")
        config = copy.deepcopy(policy.config)
        config.architectures = [type(policy).__name__]  # how vLLM picks its model class; unset on from_config models
        config.save_pretrained(self._folder.name)
        if getattr(policy, "generation_config", None) is not None:
            policy.generation_config.save_pretrained(self._folder.name)
        tokenizer.save_pretrained(self._folder.name)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # engine in this process: its weights are writable here
        # Lightning validates under inference mode; parameters created there could not be written by a later sync
        # made outside it, so the engine is built in normal mode, as a script would build it.
        with torch.inference_mode(False):
            self._llm = self._vllm.LLM(
                model=self._folder.name, tokenizer=self._folder.name, load_format="dummy", dtype=self.dtype,
                gpu_memory_utilization=self.gpu_memory_utilization, enforce_eager=self.enforce_eager,
                max_model_len=self.max_model_len, seed=self.seed,
                logprobs_mode="processed_logprobs")  # after the temperature, as the trainer scores (not raw logits)
        self._load_weights = weight_loader(self._llm)
        return self._llm

    def _sync(self, policy) -> None:
        """Copy the policy's current weights into the engine; its prefix cache holds KV of the old ones."""
        self._load_weights(list(policy.state_dict().items()))
        if hasattr(self._llm, "reset_prefix_cache"):
            self._llm.reset_prefix_cache()
        self.weight_syncs += 1


def _completion_ids(completion, eos_ids: list[int]) -> list[int]:
    """A completion's token ids, ending in its EOS when it stopped on one (as `generate` leaves it)."""
    ids = list(completion.token_ids)
    if completion.finish_reason == "stop" and (not ids or ids[-1] not in eos_ids):
        stop = getattr(completion, "stop_reason", None)
        ids.append(stop if stop in eos_ids else eos_ids[0])
    return ids


def _completion_logprobs(completion) -> list[float]:
    """vLLM's log-prob of each token it sampled (one {token id: Logprob} dict per position, with logprobs=0);
    [] when the engine reported none."""
    steps = getattr(completion, "logprobs", None) or []
    return [step[token].logprob for step, token in zip(steps, completion.token_ids)]
