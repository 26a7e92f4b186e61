"""The LightningModule: one training step = one rollout batch and `num_iterations` policy updates on it.

    prompts --sample G each--> responses --task.score--> rewards (B,)
        --algorithm.advantages--> advantages (B,)   --detector.mask--> planning_mask (B,T)
        --algorithm.token_advantages--> token_advantages (B,T)
        --algorithm.loss over micro-batches, normalised by the whole batch--> one optimizer step per iteration

The module never looks at which algorithm or detector it runs: configs choose, the objects compute.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from hicra.algorithms import Algorithm, aggregate_denominator, frac_zero_std_groups, masked_mean
from hicra.errors import TrainingError
from hicra.models.lora import adapter_free_reference, is_lora
from hicra.rollout.hf import HFSampler, RolloutBatch, sequence_logprobs, trim_padding
from hicra.tasks import extract_boxed
from hicra.tasks.scoring import score_completions
from hicra.training.checkpointing import restore_rng_state, rng_state
from hicra.training.distributed import (
    clip_gradients,
    full_weights_for_generation,
    gather_objects,
    global_sum,
    gradient_sync,
    reduce_metrics,
    shard_model,
    world_size,
)

log = logging.getLogger(__name__)


class PolicyGradientModule(pl.LightningModule):
    def __init__(
        self,
        policy,
        tokenizer,
        algorithm: Algorithm,
        detector,
        task,
        sampler: HFSampler,
        optimizer_factory,
        micro_batch_size: int = 8,
        max_grad_norm: float | None = 1.0,
        diagnostics=None,
        max_skipped_updates_in_a_row: int = 5,
    ):
        super().__init__()
        self.automatic_optimization = False  # several updates per rollout batch, micro-batching, our own clipping
        self.policy = policy
        self.tokenizer, self.algorithm, self.detector, self.task, self.sampler = (
            tokenizer, algorithm, detector, task, sampler)
        self.optimizer_factory = optimizer_factory
        self.micro_batch_size, self.max_grad_norm = micro_batch_size, max_grad_norm
        self.diagnostics = diagnostics  # hicra.training.hierarchy_diagnostics.HierarchyDiagnostics or None
        self.max_skipped_updates_in_a_row = max_skipped_updates_in_a_row
        # Run-long fault counters (logged as faults/*; saved in checkpoints so a resumed run keeps counting).
        self.faults = {"skipped_updates": 0, "reward_errors": 0, "reward_timeouts": 0, "skips_in_a_row": 0}
        # No reference model is built when beta = 0: it would cost a model's memory and a forward pass per step.
        # With LoRA the reference is the policy with its adapters switched off (exact: LoRA's B starts at 0).
        self.reference = (adapter_free_reference(policy) if is_lora(policy) else _frozen_copy(policy)) \
            if algorithm.needs_reference else None
        self.last_rollout: dict[str, Any] | None = None  # read by the completion-sample callback
        self.train_history: list[dict[str, float]] = []
        self.val_history: list[dict[str, float]] = []
        self._val_scores: list[float] = []
        self._val_lengths: list[float] = []

    def configure_model(self) -> None:
        """trainer=fsdp (Lightning's ModelParallelStrategy) hands over a device mesh: shard the policy (and a
        frozen reference) with FSDP2. Other strategies set no mesh, and the models stay whole."""
        mesh = getattr(self, "_device_mesh", None)
        if mesh is None:
            return
        for model in (self.policy, self.reference):
            if isinstance(model, torch.nn.Module):
                shard_model(model, mesh["data_parallel"])

    def configure_optimizers(self):
        return self.optimizer_factory(params=[p for p in self.policy.parameters() if p.requires_grad])

    # --- rollout ---------------------------------------------------------------------------------------------

    def _rollout(self, batch: dict) -> tuple[RolloutBatch, list[str], Tensor, float]:
        """Sample and score; also returns the seconds spent sampling."""
        G = self.algorithm.group_size
        t0 = self._clock()
        rollout = self._generate(batch["prompts"], G)
        t_gen = self._clock() - t0
        texts = self._decode(rollout)
        examples = [ex for ex in batch["examples"] for _ in range(G)]  # rows are grouped prompt by prompt
        rewards = torch.tensor(self._score(texts, examples), device=self.device)  # (B,)
        return rollout, texts, rewards, t_gen

    def _clock(self) -> float:
        """Wall time after the GPU's queued work: CUDA calls return before the kernels run."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _generate(self, prompts: list[str], group_size: int, greedy: bool = False) -> RolloutBatch:
        try:
            with full_weights_for_generation(self.policy):
                return self.sampler.generate(self.policy, self.tokenizer, prompts, group_size, greedy=greedy)
        except torch.OutOfMemoryError as err:
            setting = "val_batch_size" if greedy else "prompts_per_step, algorithm.group_size"
            raise TrainingError(
                f"out of GPU memory generating {len(prompts)} prompts x {group_size} responses x "
                f"{self.sampler.max_new_tokens} tokens; lower {setting} or rollout.max_new_tokens") from err

    def _score(self, texts: list[str], examples: list) -> list[float]:
        """Rewards; a scorer failure scores that sample 0, is counted, and its first example is reported."""
        scored = score_completions(self.task, texts, examples)
        if scored.errors and not self.faults["reward_errors"]:
            log.warning("reward function failed on a completion (scored 0, counted in faults/reward_errors): %s",
                        scored.errors[0])
            self._log_text(scored.errors[0], "faults/first_reward_error.txt")
        self.faults["reward_errors"] += len(scored.errors)
        verifier = getattr(self.task, "verifier_faults", None)  # hicra Tasks: timeouts/errors inside their verifier
        if verifier is not None:
            for key, count in verifier.read().items():
                self.faults[key] = self.faults.get(key, 0) + count
        return scored.scores

    def _log_text(self, text: str, artifact_file: str) -> None:
        for logger in self.loggers:
            if hasattr(logger.experiment, "log_text") and getattr(logger, "run_id", None):  # MLflow
                logger.experiment.log_text(logger.run_id, text, artifact_file)

    def _decode(self, rollout: RolloutBatch) -> list[str]:
        ids = rollout.response_ids.masked_fill(~rollout.response_mask, self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    def _micro_batches(self, rollout: RolloutBatch, per_token: dict[str, Tensor]):
        """Yield row slices, each trimmed to its own non-padding columns (fewer FLOPs on short micro-batches)."""
        B = rollout.response_ids.shape[0]
        for start in range(0, B, self.micro_batch_size):
            rows = slice(start, start + self.micro_batch_size)
            micro, end = trim_padding(rollout.rows(rows))
            yield rows, end, micro, {k: v[rows, :end] for k, v in per_token.items()}

    @torch.no_grad()
    def _scoring_pass(self, model, rollout: RolloutBatch, with_entropy: bool) -> tuple[Tensor, Tensor | None]:
        """Log-probs (B,T) (and entropies) of the sampled responses under `model`, with no graph."""
        logprobs = torch.zeros(rollout.response_ids.shape, device=self.device)
        entropy = torch.zeros_like(logprobs) if with_entropy else None
        for rows, end, micro, _ in self._micro_batches(rollout, {}):
            lp, ent = sequence_logprobs(model, micro, with_entropy, self.sampler.temperature)
            logprobs[rows, :end] = lp
            if with_entropy:
                entropy[rows, :end] = ent
        return logprobs, entropy

    # --- update ----------------------------------------------------------------------------------------------

    def _accumulate_gradients(self, rollout: RolloutBatch, per_token: dict[str, Tensor],
                              record: dict[str, Tensor] | None = None) -> dict[str, float]:
        """Backward over the whole rollout batch, micro-batch by micro-batch; gradients add up in `.grad`.

        `record` ((B,T) tensors "logprobs", "entropy") receives the detached values of this pass, so the
        diagnostics need no forward pass of their own.
        """
        # The tokens that carry loss (every response token unless the algorithm drops truncated responses) set the
        # whole-batch normaliser; micro-batches are still cut by the response mask, so `record` stays complete.
        loss_mask = self.algorithm.loss_mask(rollout.response_mask, rollout.truncated)  # (B,T)
        # Over all ranks: each rank's loss is its share of the global-batch loss (hicra/training/distributed.py).
        total = global_sum(aggregate_denominator(loss_mask, self.algorithm.aggregation), self._trainer)
        ranks = world_size(self._trainer)  # DDP averages gradients over ranks; this factor turns it into the sum
        per_token = {**per_token, "loss_mask": loss_mask}
        sums: dict[str, float] = {"perf/forward_s": 0.0, "perf/backward_s": 0.0}
        loss_tokens = max(float(loss_mask.sum()), 1.0)
        last = math.ceil(rollout.response_ids.shape[0] / self.micro_batch_size) - 1
        for i, (rows, end, micro, tok) in enumerate(self._micro_batches(rollout, per_token)):
            with gradient_sync(self._trainer, last=i == last):
                sums = self._micro_batch_backward(micro, rows, end, tok, total, ranks, record, sums, loss_tokens)
        return sums

    def _micro_batch_backward(self, micro, rows, end, tok, total, ranks, record, sums, loss_tokens):
        """Forward, loss and backward of one micro-batch; adds its metrics to `sums`."""
        t0 = self._clock()
        logprobs, entropy = sequence_logprobs(self.policy, micro, True, self.sampler.temperature)
        if not self.algorithm.needs_entropy_grad:
            entropy = entropy.detach()
        if record is not None:
            record["logprobs"][rows, :end] = logprobs.detach()
            record["entropy"][rows, :end] = entropy.detach()
        old = tok["old_logprobs"] if "old_logprobs" in tok else logprobs.detach()  # on-policy: ratio is 1
        loss, metrics = self.algorithm.loss(
            logprobs, old, tok["token_advantages"], tok["loss_mask"],
            ref_logprobs=tok.get("ref_logprobs"), entropy=entropy, total=total)
        t1 = self._clock()
        self.manual_backward(loss * ranks) if self._trainer is not None else loss.backward()
        sums["perf/forward_s"] += t1 - t0
        sums["perf/backward_s"] += self._clock() - t1
        weight = float(tok["loss_mask"].sum()) / loss_tokens
        metrics["policy/entropy"] = masked_mean(entropy.detach(), micro.response_mask)
        for k, v in metrics.items():  # losses already sum to the batch value; ratios are token-weighted
            sums[k] = sums.get(k, 0.0) + float(v) * (1.0 if k.startswith("loss/") else weight)
        return sums

    def _update(self, rollout: RolloutBatch, per_token: dict[str, Tensor],
                record: dict[str, Tensor] | None = None) -> dict[str, float]:
        """One optimizer step over the whole rollout batch; skipped (and counted) when it is not finite."""
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        try:
            metrics = self._accumulate_gradients(rollout, per_token, record)
        except torch.OutOfMemoryError as err:
            raise TrainingError(f"out of GPU memory in the update; lower micro_batch_size (now "
                                f"{self.micro_batch_size}) or set model.gradient_checkpointing=true") from err
        t_opt = self._clock()
        # max_norm=inf measures the norm without clipping: the finiteness check needs it either way.
        grad_norm = clip_gradients(self.policy.parameters(), self.max_grad_norm or math.inf)
        metrics["optim/grad_norm"] = grad_norm
        losses = [v for k, v in metrics.items() if k.startswith("loss/")]
        local_fault = not (math.isfinite(grad_norm) and all(math.isfinite(v) for v in losses))
        if global_sum(torch.tensor(float(local_fault), device=self.device), self._trainer) > 0:  # all ranks agree
            self._skip_update(opt)
        else:
            self.faults["skips_in_a_row"] = 0
        opt.step()  # after a skip no parameter has a gradient: AdamW leaves them and their moments untouched
        metrics["perf/optimizer_s"] = self._clock() - t_opt
        return metrics

    def _skip_update(self, opt) -> None:
        opt.zero_grad(set_to_none=True)
        self.faults["skipped_updates"] += 1
        self.faults["skips_in_a_row"] += 1
        log.warning("non-finite loss or gradient at step %d: update skipped (faults/skipped_updates=%d)",
                    self.global_step, self.faults["skipped_updates"])
        if self.faults["skips_in_a_row"] >= self.max_skipped_updates_in_a_row:
            raise TrainingError(
                f"{self.faults['skips_in_a_row']} updates in a row had a non-finite loss or gradient (last at step "
                f"{self.global_step}); lower optim.lr (now {opt.param_groups[0]['lr']:g}) or check the reward, or "
                f"raise faults.max_skipped_updates_in_a_row (now {self.max_skipped_updates_in_a_row})")

    # --- lightning hooks -------------------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        # from_pretrained returns eval mode; train mode only matters for gradient checkpointing (dropout is off).
        self.policy.train()
        if self.reference is not None:
            self.reference.eval()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Everything besides weights/optimizer/loops that a resumed run needs to continue exactly."""
        checkpoint["hicra"] = {"rng": rng_state(), "faults": dict(self.faults),
                               "train_history": self.train_history, "val_history": self.val_history,
                               "detector": self.detector.state_dict() if hasattr(self.detector, "state_dict") else None}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("hicra")
        if state is None:  # a plain Lightning checkpoint: weights and optimizer only
            return
        restore_rng_state(state["rng"])
        self.faults.update(state["faults"])
        self.train_history, self.val_history = list(state["train_history"]), list(state["val_history"])
        if state["detector"] is not None:
            self.detector.load_state_dict(state["detector"])

    def transfer_batch_to_device(self, batch: dict, device, dataloader_idx: int) -> dict:
        return batch  # prompts are strings; the sampler tokenizes them onto the policy's device

    def training_step(self, batch: dict, batch_idx: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = self._clock()
        rollout, texts, rewards, t_gen = self._rollout(batch)
        t_score = self._clock() - t0 - t_gen

        # Old log-probs need their own pass only when the policy moves before the last update uses them,
        # or when the detector needs entropies before any update.
        t_old = self._clock()
        need_old = self.algorithm.num_iterations > 1 or self.detector.needs_entropy
        old_logprobs, entropies = (self._scoring_pass(self.policy, rollout, self.detector.needs_entropy)
                                   if need_old else (None, None))
        t_plan = self._clock()
        planning_mask = self.detector.mask(rollout.response_ids, rollout.response_mask, entropies)  # (B,T)
        advantages = self.algorithm.advantages(rewards)  # (B,)
        token_advantages = self.algorithm.token_advantages(advantages, planning_mask)  # (B,T)
        t_planned = self._clock()

        per_token = {"token_advantages": token_advantages}
        if old_logprobs is not None:
            per_token["old_logprobs"] = old_logprobs
        if self.reference is not None:
            per_token["ref_logprobs"] = self._scoring_pass(self.reference, rollout, False)[0]
        t_upd = self._clock()
        # The first update's forward pass sees the sampling policy: its log-probs/entropies feed the diagnostics.
        record = {k: torch.zeros(rollout.response_ids.shape, device=self.device) for k in ("logprobs", "entropy")}
        updates = [self._update(rollout, per_token, record if i == 0 else None)
                   for i in range(self.algorithm.num_iterations)]
        t_end = self._clock()

        metrics = {k: sum(u[k] for u in updates) / len(updates) for k in updates[0]}
        for k in ("perf/forward_s", "perf/backward_s", "perf/optimizer_s"):  # times add up over the updates
            metrics[k] = sum(u[k] for u in updates)
        metrics |= self._rollout_metrics(rollout, rewards, planning_mask, token_advantages)
        metrics["train/boxed_frac"] = sum(extract_boxed(t) is not None for t in texts) / len(texts)
        metrics |= {f"faults/{k}": float(v) for k, v in self.faults.items() if k != "skips_in_a_row"}
        if self.diagnostics is not None:
            t_diag = self._clock()
            metrics |= self.diagnostics(rollout.response_ids, rollout.response_mask, rewards,
                                        self.algorithm.group_size, record["logprobs"], record["entropy"])
            metrics["perf/diagnostics_s"] = self._clock() - t_diag
        # step_time_s covers rollout + update (what every algorithm pays); diagnostics_s is reported beside it.
        metrics |= {"perf/step_time_s": t_end - t0, "perf/generation_s": t_gen, "perf/scoring_s": t_score,
                    "perf/old_logprobs_s": t_plan - t_old, "perf/planner_s": t_planned - t_plan,
                    "perf/update_s": t_end - t_upd, "perf/tokens_per_s": rollout.num_tokens / (t_end - t0),
                    "optim/lr": self.optimizers().param_groups[0]["lr"]}
        if torch.cuda.is_available():
            metrics["perf/peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        metrics = reduce_metrics(metrics, self._trainer)  # the global batch, whatever the number of ranks
        step = self.global_step - self.algorithm.num_iterations  # updates the sampling policy had (MLflow's step)
        # Written now, not at Lightning's end-of-batch flush: a checkpoint saved at the end of this batch must
        # never be ahead of the metrics MLflow holds, or a kill right after it would leave a gap on resume.
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)
        self.log_dict({"reward": metrics["train/reward_mean"], "acc": metrics["train/accuracy"]},
                      prog_bar=True, logger=False, on_step=True, batch_size=len(texts))
        self.train_history.append({"step": step, **metrics})
        self.last_rollout = {"step": step, "rollout": rollout, "texts": texts, "rewards": rewards.cpu(),
                             "planning_mask": planning_mask.cpu(), "advantages": advantages.cpu(),
                             "token_advantages": token_advantages.cpu(),
                             "prompts": batch["prompts"]}

    def _rollout_metrics(self, rollout, rewards, planning_mask, token_advantages) -> dict[str, float]:
        mask = rollout.response_mask
        planning = planning_mask & mask
        execution = ~planning_mask & mask
        return {
            "train/reward_mean": float(rewards.mean()),
            "train/reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
            "train/accuracy": float((rewards >= 1.0).float().mean()),
            "train/response_length": float(mask.sum(dim=1).float().mean()),
            "train/truncated_frac": float(rollout.truncated.float().mean()),
            "train/empty_frac": float(((mask.sum(dim=1) <= 1) & ~rollout.truncated).float().mean()),  # EOS only
            "train/frac_zero_std_groups": float(frac_zero_std_groups(rewards, self.algorithm.group_size)),
            "hicra/planning_token_frac": float(planning.sum() / mask.sum().clamp(min=1)),
            "hicra/adv_planning_mean": float(masked_mean(token_advantages, planning)),
            "hicra/adv_execution_mean": float(masked_mean(token_advantages, execution)),
        }

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        rollout = self._generate(batch["prompts"], 1, greedy=True)
        texts = self._decode(rollout)
        self._val_scores += self._score(texts, batch["examples"])
        self._val_lengths += rollout.response_mask.sum(dim=1).float().tolist()

    def on_validation_epoch_end(self) -> None:
        # Each rank scored its share of the held-out prompts: pool them (in rank order) before the accuracy.
        shares = gather_objects((self._val_scores, self._val_lengths), self._trainer)
        self._val_scores = [x for scores, _ in shares for x in scores]
        self._val_lengths = [x for _, lengths in shares for x in lengths]
        if not self._val_scores:
            return
        scores = torch.tensor(self._val_scores)
        metrics = {"val/accuracy": float((scores >= 1.0).float().mean()), "val/reward_mean": float(scores.mean()),
                   "val/response_length": sum(self._val_lengths) / len(self._val_lengths)}
        # Logged at the exact number of updates the evaluated policy has had (inside fit, Lightning's own step for
        # validation metrics lags by one), so val/* and train/* share one step axis.
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)
        self.val_history.append({"step": self.global_step, "num_prompts": len(scores), **metrics})
        self._val_scores, self._val_lengths = [], []


def _frozen_copy(model):
    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    return reference
