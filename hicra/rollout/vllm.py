"""Optional rollouts with vLLM (`rollout=vllm`): the same RolloutBatch as HFSampler, sampled by vLLM engines that live
in the training processes, next to the policy (TRL's colocate mode).

vLLM is not a dependency of this project (docs/vllm.md: its own environment). It is imported when a VLLMSampler is
built, and a missing package (or a machine without CUDA) is a one-line ConfigError before any model loads.

How it works:

- Engines: one per `rollout.tensor_parallel_size` ranks (hicra/rollout/vllm_groups.py). With one process it is a
  plain in-process engine; under DDP/FSDP every rank runs an engine worker through vLLM's external launcher on its own
  GPU, consecutive ranks forming an engine's tensor-parallel group, world / tp engines in data parallel. The ranks of
  an engine gather their prompts, the engine samples them all, and each rank keeps its own rows.
- Started on the first `generate()` from the policy's *config* and tokenizer, written to a temp folder, with
  `load_format="dummy"`: no weights go to disk, whatever the policy came from; the weight sync below fills in the
  real ones before anything is sampled (verl starts its engines the same way). In-process
  (VLLM_ENABLE_V1_MULTIPROCESSING=0, which the external launcher requires anyway), so the engine's model can be
  written from here, GPU to GPU. Started and run outside Lightning's autocast and inference mode, with the process
  RNGs put back afterwards (hicra/rollout/vllm_isolation.py).
- Sleep mode (`rollout.enable_sleep_mode`, default on): between rollouts the engine holds no GPU memory. It sleeps at
  level 2 (weights and KV cache released, nothing copied to host RAM: the next sync rewrites every weight anyway),
  right after it starts and after every generation; it wakes its weights for the sync, then its KV cache for the
  generation, as TRL does. Off: it keeps `gpu_memory_utilization` of the GPU for the whole run.
- Weight sync before *every* `generate()`, training and validation alike (hicra/rollout/vllm_sync.py): parameter by
  parameter, whole tensors gathered from FSDP2 shards one at a time, LoRA adapters merged, into the engine's own
  `load_weights` (which fuses q/k/v, gate/up and casts dtypes); then the prefix cache is reset (its KV blocks came
  from the old weights). Skipping it for consecutive validation calls would need to know whether an update happened
  in between, and tensor version counters cannot tell: fused AdamW updates parameters without bumping them (torch
  2.13). A stale engine would silently sample from an old policy; and at sleep level 2 it has no weights at all.
- Seeds: request i of an engine gets first + i*G and vLLM seeds its child j with + j, so the B child seeds are
  distinct; each data-parallel engine draws `first` inside its own slice of the seed space, so no two engines share
  a seed in a step. The draw comes from the rank's sampling stream (saved in checkpoints).
- Log-probs are never taken from vLLM. The LightningModule recomputes them with the policy (`sequence_logprobs`)
  for both the old and the new log-probs, so the importance ratio of the first update is 1 as with `rollout=hf`.
  What differs is the *sampler*: vLLM's kernels (and its bf16 weights) give a distribution slightly different
  from the policy's forward pass, so the samples are very slightly off-policy and the ratio cannot show it. The gap
  is small next to the clip range and is the usual trade of TRL's and verl's vLLM modes. vLLM's own log-prob of
  each sampled token (`logprobs_mode="processed_logprobs"`: after the temperature, as the trainer scores) comes back
  in `RolloutBatch.sampler_logprobs`: the gap is logged (mismatch/*) and `algorithm.sampler_correction` corrects
  the loss for it by truncated importance sampling (hicra/algorithms/sampler_correction.py).
- Not supported: pipeline parallelism, an engine on GPUs other than the training ranks' own (TRL's server mode),
  and syncing only the LoRA adapters (vLLM's LoRA serving): the merged weights are synced whole, every time.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Sequence

import torch

from hicra.errors import ConfigError
from hicra.models.lora import is_lora
from hicra.rollout.hf import HFSampler, RolloutBatch, eos_token_ids, response_mask_from_eos
from hicra.rollout.vllm_groups import EngineGroup, engine_group, gather_in_group, request_seeds, set_launcher_env
from hicra.rollout.vllm_isolation import engine_mode, preserved_rng
from hicra.rollout.vllm_sync import sync_weights, weight_loader

MISSING_VLLM = ("rollout=vllm needs the vllm package (CUDA only, in its own environment: docs/vllm.md); allowed "
                "without it: rollout=hf")
NO_CUDA = "rollout=vllm needs a CUDA GPU and none is visible; allowed here: rollout=hf"
SLEEP_LEVEL = 2  # weights and KV cache dropped, nothing kept in host RAM: every wake is followed by a full sync
WEIGHTS, KV_CACHE = ["weights"], ["kv_cache"]  # vLLM's memory tags, woken one after the other (TRL's order)


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


# --- the sampler --------------------------------------------------------------------------------------------------

class VLLMSampler(HFSampler):
    """Samples with a vLLM engine in this process; HFSampler's settings, checks and batch layout, plus vLLM's own.

    Settings come from `conf/rollout/vllm.yaml`; see there for why each default.
    """

    supports_lora = True  # read by hicra-train's preflight: the adapters are merged into every weight sync
    runs_policy_forward = False  # the engine generates: no whole-model FSDP gather around generate (per-parameter sync)

    def __init__(
        self,
        gpu_memory_utilization: float = 0.3,
        enforce_eager: bool = False,
        dtype: str = "bfloat16",
        max_model_len: int | None = None,
        seed: int = 0,
        tensor_parallel_size: int = 1,
        enable_sleep_mode: bool = True,
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
        if isinstance(tensor_parallel_size, bool) or not isinstance(tensor_parallel_size, int) or \
                tensor_parallel_size < 1:
            raise ConfigError(f"rollout.tensor_parallel_size={tensor_parallel_size} is not allowed; use an integer "
                              f">= 1 that divides the number of training ranks")
        needed = self.max_prompt_tokens + max(self.max_new_tokens, self.val_max_new_tokens)
        if max_model_len is not None and max_model_len < needed:
            raise ConfigError(f"rollout.max_model_len={max_model_len} is below max_prompt_tokens + max_new_tokens "
                              f"= {needed}; use null (= {needed}) or a larger value")
        self.gpu_memory_utilization, self.enforce_eager, self.dtype = gpu_memory_utilization, enforce_eager, dtype
        self.max_model_len, self.seed = max_model_len or needed, seed
        self.tensor_parallel_size, self.enable_sleep_mode = tensor_parallel_size, bool(enable_sleep_mode)
        self._vllm = vllm
        self._llm = None
        self._group: EngineGroup | None = None
        self._load_weights = None
        self._folder: tempfile.TemporaryDirectory | None = None
        self.weight_syncs = 0  # how many times the policy's weights were copied into the engine

    def generate(self, model, tokenizer, prompts: list[str], group_size: int, greedy: bool = False) -> RolloutBatch:
        """Each prompt `group_size` times (rows grouped), sampled (or greedy for evaluation) from the current policy."""
        # Same tokenization as HFSampler (its padding only adds pad ids on the left, which the layout adds back).
        prompt_ids = [list(ids) for ids in tokenizer(prompts, truncation=True, max_length=self.max_prompt_tokens,
                                                     add_special_tokens=False).input_ids]
        eos_ids = eos_token_ids(tokenizer, model)
        device = next(model.parameters()).device
        # The rank's sampling stream moves by this one draw, whatever the engine draws (it runs under preserved_rng).
        draw = None if greedy else int(torch.randint(0, 2**62, ()))
        with engine_mode(), preserved_rng():
            llm = self._engine(model, tokenizer, device)
            self._refresh(llm, model)
            shares = gather_in_group((prompt_ids, draw), self._group)  # the engine's requests, member by member
            requests = [ids for share, _ in shares for ids in share]
            params = self._sampling_params(len(requests), group_size, greedy, eos_ids, shares[0][1])
            outputs = llm.generate([{"prompt_token_ids": ids} for ids in requests], params, use_tqdm=False)
            self._sleep(llm)
        start = sum(len(share) for share, _ in shares[:self._group.member])
        outputs = outputs[start:start + len(prompt_ids)]  # this rank's own requests
        completions = [c for out in outputs for c in sorted(out.outputs, key=lambda c: c.index)]
        responses = [_completion_ids(c, eos_ids) for c in completions]
        logprobs = None if greedy else [_completion_logprobs(c) for c in completions]
        if greedy:  # one greedy completion per prompt, repeated: identical rows, as HFSampler gives
            responses = [r for r in responses for _ in range(group_size)]
        rows = [ids for ids in prompt_ids for _ in range(group_size)]
        return batch_from_token_lists(rows, responses, tokenizer.pad_token_id, eos_ids, device, logprobs)

    def _sampling_params(self, num_requests: int, group_size: int, greedy: bool, eos_ids: list[int],
                         draw: int | None) -> list:
        SamplingParams = self._vllm.SamplingParams
        # Stop on the same EOS ids as HFSampler (the generation config's list, not only the tokenizer's EOS);
        # detokenize=False: texts are decoded by the LightningModule from the ids.
        common = {"stop_token_ids": eos_ids, "detokenize": False}
        if greedy:
            return [SamplingParams(n=1, temperature=0.0, max_tokens=self.val_max_new_tokens, **common)
                    for _ in range(num_requests)]
        # Every request its own seeded stream, reproducible as far as vLLM's kernels are deterministic; no two
        # children of a step share a seed, across prompts or engines (vllm_groups.request_seeds).
        # logprobs=0: the sampled token's own log-prob only (the mismatch correction's input).
        return [SamplingParams(n=group_size, temperature=self.temperature, top_p=self.top_p,
                               top_k=self.top_k if self.top_k > 0 else -1, max_tokens=self.max_new_tokens,
                               min_tokens=self.min_new_tokens, seed=seed, logprobs=0, **common)
                for seed in request_seeds(draw, self._group, num_requests, group_size)]

    def _engine(self, policy, tokenizer, device: torch.device):
        """The vLLM engine, started on first use from the policy's config and tokenizer (weights come by sync)."""
        if self._llm is not None:
            return self._llm
        self._group = engine_group(self.tensor_parallel_size)  # refuses a size that does not divide the ranks
        base = policy.get_base_model() if is_lora(policy) else policy
        self._folder = tempfile.TemporaryDirectory(prefix="hicra-vllm-")
        config = copy.deepcopy(base.config)
        config.architectures = [_architecture(base)]  # how vLLM picks its model class; unset on from_config models
        config.save_pretrained(self._folder.name)
        if getattr(base, "generation_config", None) is not None:
            base.generation_config.save_pretrained(self._folder.name)
        tokenizer.save_pretrained(self._folder.name)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # engine in this process: its weights are writable here
        launcher = {}
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            set_launcher_env(self._group, device)
            launcher = {"distributed_executor_backend": "external_launcher"}  # a worker in this rank, on its GPU
        self._llm = self._vllm.LLM(
            model=self._folder.name, tokenizer=self._folder.name, load_format="dummy", dtype=self.dtype,
            gpu_memory_utilization=self.gpu_memory_utilization, enforce_eager=self.enforce_eager,
            max_model_len=self.max_model_len,
            seed=self.seed + self._group.engine_index,  # the same on an engine's ranks, as its schedule must be
            tensor_parallel_size=self.tensor_parallel_size, enable_sleep_mode=self.enable_sleep_mode,
            logprobs_mode="processed_logprobs",  # after the temperature, as the trainer scores (not raw logits)
            **launcher)
        self._load_weights = weight_loader(self._llm)
        self._sleep(self._llm)  # its dummy weights and KV cache are of no use until the first sync
        return self._llm

    def _refresh(self, llm, policy) -> None:
        """The policy's current weights into the woken engine; its prefix cache holds KV of the old ones."""
        if self.enable_sleep_mode:
            torch.cuda.empty_cache()  # what training left cached goes back to the driver, for vLLM's allocator
            llm.wake_up(tags=WEIGHTS)
        sync_weights(self._load_weights, policy)
        if hasattr(llm, "reset_prefix_cache"):
            llm.reset_prefix_cache()
        self.weight_syncs += 1
        if self.enable_sleep_mode:
            torch.cuda.empty_cache()  # the sync's gathered tensors
            llm.wake_up(tags=KV_CACHE)

    def _sleep(self, llm) -> None:
        if self.enable_sleep_mode:
            llm.sleep(level=SLEEP_LEVEL)
            torch.cuda.empty_cache()


def _architecture(model) -> str:
    """The model's transformers class name, by which vLLM picks its own; FSDP2 turns a sharded model's class into
    an `FSDP<name>` subclass of it."""
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule)).__name__


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
