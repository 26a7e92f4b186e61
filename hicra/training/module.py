"""The LightningModule: one training step = one rollout batch and `num_iterations` policy updates on it.

    prompts --sample G each--> responses --task.score (+ format term)--> rewards (B,)
        --algorithm.advantages--> advantages (B,)   --detector.mask--> planning_mask (B,T)
        --algorithm.token_advantages--> token_advantages (B,T)
        --algorithm.loss over micro-batches, normalised by the whole batch--> one optimizer step per iteration

The module never looks at which algorithm or detector it runs: configs choose, the objects compute. Beside it:
the frozen reference model (hicra/models/reference.py), the step's clock (timing.py), the numbers it logs
(step_metrics.py) and what it hands the callbacks (step_output.py).
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from torch import Tensor

from hicra.algorithms import Algorithm, aggregate_denominator, masked_mean
from hicra.errors import TrainingError
from hicra.planning.base import PlanningDetector
from hicra.rollout.hf import HFSampler, RolloutBatch, sequence_logprobs
from hicra.rollout.sampling_stream import SamplingStream
from hicra.tasks.base import Task
from hicra.training.distributed import (
    clip_gradients,
    global_sum,
    gradient_sync,
    reduce_metrics,
    shard_from_rank0,
    world_size,
)
from hicra.training.faults import FaultCounter, all_finite
from hicra.training.generation import generate
from hicra.training.micro_batches import micro_batches, scoring_pass
from hicra.training.module_state import restore_module_state, save_module_state
from hicra.training.optimizers import optimizers_for
from hicra.training.sampling_rounds import sample_step
from hicra.training.step_metrics import (
    add_micro_batch,
    loss_inputs,
    overlong_metrics,
    perf_metrics,
    rollout_metrics,
    update_metrics,
)
from hicra.training.step_output import KEY, StepOutput
from hicra.training.step_scoring import score_rollout
from hicra.training.timing import Stopwatch, start_step
from hicra.training.validation import ValidationTally


class PolicyGradientModule(pl.LightningModule):
    def __init__(self, policy, tokenizer, algorithm: Algorithm, detector: PlanningDetector, task: Task,
                 sampler: HFSampler, optimizer_factory,
                 micro_batch_size: int = 8, max_grad_norm: float | None = 1.0, diagnostics=None,
                 max_skipped_updates_in_a_row: int = 5, reference=None, format_reward: float = 0.0,
                 score_truncated: bool = False, sampling_seed: int | None = None, lr_schedule=None, refill=None,
                 reference_offload: bool = False, reduce_every_micro_batch: bool = False):
        super().__init__()
        self.automatic_optimization = False  # several updates per rollout batch, micro-batching, our own clipping
        if algorithm.needs_reference and reference is None:
            raise ValueError(f"algorithm.kl_coef={algorithm.kl_coef} > 0 needs a frozen reference model: pass "
                             f"reference=hicra.models.reference.build_reference(policy, needed=True)")
        if sampler is not None:
            algorithm.check_token_budget(sampler.max_new_tokens)
        self.policy, self.reference = policy, reference  # reference: None unless the loss has a KL term
        # trainer=fsdp only (the run's `reference_offload` and `reduce_gradients_every_micro_batch`, read by
        # hicra/training/run.py): the reference's shards in host memory; a reduce-scatter after every micro-batch
        self.reference_offload, self.reduce_every_micro_batch = reference_offload, reduce_every_micro_batch
        self.tokenizer, self.algorithm, self.detector, self.task, self.sampler = (
            tokenizer, algorithm, detector, task, sampler)
        self.optimizer_factory = optimizer_factory
        self.lr_schedule = lr_schedule  # step -> lr multiplier (hicra.algorithms.schedules.lr_multiplier) or None
        self.micro_batch_size, self.max_grad_norm = micro_batch_size, max_grad_norm
        self.refill = refill  # more prompts for dynamic sampling (hicra.training.data.PromptRefill) or None
        self.format_reward = format_reward  # added to the reward of a reply whose answer is in the asked form
        self.score_truncated = score_truncated  # False: a reply cut at the token budget scores 0 (strict)
        self.diagnostics = diagnostics  # hicra.training.hierarchy_diagnostics.HierarchyDiagnostics or None
        self.faults = FaultCounter(max_skipped_updates_in_a_row)
        self.stopwatch = Stopwatch()  # a fresh one (on the module's device) for every training step
        self.train_history: list[dict[str, float]] = []
        self.val_history: list[dict[str, float]] = []
        self._validation = ValidationTally()
        # Each rank samples from its own stream, seeded from this seed and its rank (None: the seed the process was
        # seeded with, seed_everything's); made on first use, once the rank is known (`sampling_stream`).
        self.sampling_seed = torch.initial_seed() if sampling_seed is None else sampling_seed
        self._sampling: SamplingStream | None = None

    def configure_model(self) -> None:
        """trainer=fsdp (Lightning's ModelParallelStrategy) hands over a device mesh: shard the policy (and a
        frozen reference) with FSDP2, their shards filled from global rank 0's weights, the only rank that read them
        (hicra.training.distributed.shard_from_rank0). Other strategies set no mesh, and the models stay whole."""
        mesh = getattr(self, "_device_mesh", None)
        if mesh is None:
            return
        reference = self.reference if isinstance(self.reference, torch.nn.Module) else None  # LoRA: no copy
        shard_from_rank0(self.policy, reference, mesh["data_parallel"], precision=self.trainer.precision,
                         reference_offload=self.reference_offload)

    def configure_optimizers(self):
        return optimizers_for(self.policy, self.optimizer_factory, self.lr_schedule)

    # --- the algorithm: one training step ------------------------------------------------------------------------

    def training_step(self, batch: dict, batch_idx: int) -> dict[str, StepOutput]:
        """rollout -> score -> planning mask -> advantages -> token advantages -> update(s) -> log."""
        watch = self.stopwatch = start_step(self.device)
        with watch.phase("step_time"):  # rollout + update: what every algorithm pays (diagnostics come after)
            # generation and scoring, for one round or until dynamic sampling has its informative groups
            sample, sampling = sample_step(self, batch)  # hicra/training/sampling_rounds.py
            rollout, correctness, in_form, rewards = sample.rollout, sample.correctness, sample.in_form, sample.rewards
            with watch.phase("old_logprobs"):
                old_logprobs, entropies = self._old_logprobs(rollout)
                ref_logprobs = self._ref_logprobs(rollout)  # (B,T) or None without a reference model
                # (B,) the task's reward, KL-penalised when the algorithm puts the KL in the reward
                rewards = self.algorithm.rewards_with_kl(rewards, old_logprobs, ref_logprobs, rollout.response_mask)
            with watch.phase("planner"):
                planning_mask = self.detector.mask(  # (B,T)
                    rollout.response_ids, rollout.response_mask, entropies, correctness=correctness)
                advantages = self.algorithm.advantages(rewards)  # (B,)
                token_advantages = self.algorithm.token_advantages(advantages, planning_mask)  # (B,T)
            per_token = loss_inputs(token_advantages, old_logprobs, ref_logprobs, rollout.sampler_logprobs)
            with watch.phase("update"):
                updates, record = self._updates(rollout, per_token)
        step = self.global_step - self.algorithm.num_iterations  # updates the sampling policy had (MLflow's step)
        metrics = update_metrics(updates) | rollout_metrics(
            rollout, rewards, correctness, in_form, planning_mask, token_advantages, self.algorithm.group_size)
        metrics |= overlong_metrics(sample.overlong, rollout.truncated, self.algorithm.exclude_truncated) | sampling
        self._log_step(metrics | self._run_metrics(rollout, correctness, record), step, batch_size=len(sample.texts))
        # Lightning passes a returned Mapping on to the callbacks' on_train_batch_end (hicra/training/step_output.py).
        return {KEY: StepOutput(step, rollout, sample.texts, rewards.cpu(), correctness.cpu(), planning_mask.cpu(),
                                advantages.cpu(), token_advantages.cpu(), sample.prompts)}

    def _old_logprobs(self, rollout: RolloutBatch) -> tuple[Tensor | None, Tensor | None]:
        """The sampling policy's log-probs and entropies (B,T), or (None, None) when nothing needs them yet."""
        # A pass of their own only when the policy moves before the last update, or entropies are needed first.
        if self.algorithm.num_iterations > 1 or self.detector.needs_entropy or self.algorithm.needs_kl_in_reward:
            return self._scoring_pass(self.policy, rollout, self.detector.needs_entropy)
        return None, None

    def _ref_logprobs(self, rollout: RolloutBatch) -> Tensor | None:
        """The frozen reference model's log-probs (B,T) of the sampled responses, when there is a reference."""
        return self._scoring_pass(self.reference, rollout, False)[0] if self.reference is not None else None

    def _updates(self, rollout: RolloutBatch, per_token: dict[str, Tensor]):
        """`num_iterations` optimizer steps on the batch: their metrics, and the log-probs / entropies (B,T) of the
        first update's forward pass (the sampling policy's), which the diagnostics read instead of a pass of their own."""
        record = {k: torch.zeros(rollout.response_ids.shape, device=self.device) for k in ("logprobs", "entropy")}
        updates = [self._update(rollout, per_token, record if i == 0 else None)
                   for i in range(self.algorithm.num_iterations)]
        return updates, record

    # --- rollout ---------------------------------------------------------------------------------------------

    @property
    def sampling_stream(self) -> SamplingStream:
        """This rank's own random stream for sampling (hicra/rollout/sampling_stream.py): ranks draw differently."""
        if self._sampling is None:
            self._sampling = SamplingStream(self.sampling_seed, self.global_rank)
        return self._sampling

    def _generate(self, prompts: list[str], group_size: int, greedy: bool = False) -> RolloutBatch:
        return generate(self.policy, self.sampler, self.tokenizer, self.sampling_stream, self.device, prompts,
                        group_size, greedy)

    def _scoring_pass(self, model, rollout: RolloutBatch, with_entropy: bool) -> tuple[Tensor, Tensor | None]:
        """Log-probs (B,T) (and entropies) of the sampled responses under `model`, with no graph."""
        return scoring_pass(model, rollout, self.micro_batch_size, self.sampler.temperature, with_entropy, self.device)

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
        loss_tokens = max(float(loss_mask.sum()), 1.0)
        last = math.ceil(rollout.response_ids.shape[0] / self.micro_batch_size) - 1
        sums: dict[str, float] = {}
        batches = micro_batches(rollout, self.micro_batch_size, {**per_token, "loss_mask": loss_mask})
        for i, (rows, end, micro, tok) in enumerate(batches):
            with gradient_sync(self._trainer, last=i == last, model=self.policy,
                               every_micro_batch=self.reduce_every_micro_batch):
                metrics, logprobs, entropy = self._micro_batch_backward(micro, tok, total)
            if record is not None:
                record["logprobs"][rows, :end], record["entropy"][rows, :end] = logprobs, entropy
            add_micro_batch(sums, metrics, float(tok["loss_mask"].sum()) / loss_tokens)
        return sums

    def _micro_batch_backward(self, micro: RolloutBatch, tok: dict[str, Tensor], total: Tensor):
        """Forward, loss and backward of one micro-batch: its metrics, and its detached log-probs and entropies."""
        with self.stopwatch.phase("forward"):
            logprobs, entropy = sequence_logprobs(self.policy, micro, True, self.sampler.temperature,
                                                  entropy_grad=self.algorithm.needs_entropy_grad)  # (b,T) each
            old = tok["old_logprobs"] if "old_logprobs" in tok else logprobs.detach()  # on-policy: ratio is 1
            loss, metrics = self.algorithm.loss(logprobs, old, tok["token_advantages"], tok["loss_mask"],
                                                ref_logprobs=tok.get("ref_logprobs"), entropy=entropy, total=total,
                                                sampler_logprobs=tok.get("sampler_logprobs"))
        with self.stopwatch.phase("backward"):
            ranks = world_size(self._trainer)  # DDP averages gradients over ranks; this factor turns it into the sum
            self.manual_backward(loss * ranks) if self._trainer is not None else loss.backward()
        metrics["policy/entropy"] = masked_mean(entropy.detach(), micro.response_mask)
        return metrics, logprobs.detach(), entropy.detach()

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
        with self.stopwatch.phase("optimizer"):
            # max_norm=inf measures the norm without clipping: the finiteness check needs it either way.
            grad_norm = clip_gradients(self.policy.parameters(), self.max_grad_norm or math.inf)
            metrics["optim/grad_norm"] = grad_norm
            losses = [v for k, v in metrics.items() if k.startswith("loss/")]
            local_fault = not (math.isfinite(grad_norm) and all(math.isfinite(v) for v in losses))
            skip = global_sum(torch.tensor(float(local_fault), device=self.device), self._trainer) > 0  # all ranks agree
            if skip:
                opt.zero_grad(set_to_none=True)
            self.faults.count_update(skip, self.global_step, opt.param_groups[0]["lr"])  # raises after too many
            opt.step()  # after a skip no parameter has a gradient: AdamW leaves them and their moments untouched
            metrics["optim/lr"] = opt.param_groups[0]["lr"]  # the rate this update used (averaged over the updates)
            if self.lr_schedule is not None:  # counts every optimizer step, as global_step does (skipped ones too)
                self.lr_schedulers().step()
            if not skip:  # finite gradients can still make non-finite weights (optim.lr=inf, an overflow)
                local = not all_finite(p.detach() for p in self.policy.parameters() if p.requires_grad)
                broken = global_sum(torch.tensor(float(local), device=self.device), self._trainer) > 0  # all ranks
                self.faults.check_weights(not bool(broken), self.global_step, opt.param_groups[0]["lr"])
        return metrics

    # --- logging -------------------------------------------------------------------------------------------------

    def _run_metrics(self, rollout: RolloutBatch, correctness: Tensor, record: dict[str, Tensor]) -> dict[str, float]:
        """Beside the algorithm's numbers: hierarchy diagnostics, fault counters and perf/*."""
        metrics: dict[str, float] = {}
        if self.diagnostics is not None:
            with self.stopwatch.phase("diagnostics"):
                metrics |= self.diagnostics(rollout.response_ids, rollout.response_mask, correctness,
                                            self.algorithm.group_size, record["logprobs"], record["entropy"])
        metrics |= self.faults.metrics() | perf_metrics(self.stopwatch, rollout.num_tokens)
        return metrics  # the learning rate is the updates' own optim/lr (_update)

    def _log_step(self, metrics: dict[str, float], step: int, batch_size: int) -> None:
        metrics = reduce_metrics(metrics, self._trainer)  # the global batch, whatever the number of ranks
        # Written now, not at Lightning's end-of-batch flush: a checkpoint saved at the end of this batch must
        # never be ahead of the metrics MLflow holds, or a kill right after it would leave a gap on resume.
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)
        self.log_dict({"reward": metrics["train/reward_mean"], "acc": metrics["train/accuracy"]},
                      prog_bar=True, logger=False, on_step=True, batch_size=batch_size)
        self.train_history.append({"step": step, **metrics})

    # --- lightning hooks -------------------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        # from_pretrained returns eval mode; train mode only matters for gradient checkpointing (dropout is off).
        self.policy.train()
        if self.reference is not None:
            self.reference.eval()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        save_module_state(self, checkpoint)  # hicra/training/module_state.py

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        restore_module_state(self, checkpoint)

    def transfer_batch_to_device(self, batch: dict, device, dataloader_idx: int) -> dict:
        return batch  # prompts are strings; the sampler tokenizes them onto the policy's device

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        rollout = self._generate(batch["prompts"], 1, greedy=True)
        self._validation.add(score_rollout(self, rollout, batch["examples"], 1)[1], rollout, batch.get("counted"))

    def on_validation_epoch_end(self) -> None:
        pooled = self._validation.pooled_metrics(self._trainer)  # each rank scored its share of the prompts
        if pooled is None:
            return
        metrics, num_prompts = pooled
        # Logged at the exact number of updates the evaluated policy has had (inside fit, Lightning's own step for
        # validation metrics lags by one), so val/* and train/* share one step axis.
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)
        self.val_history.append({"step": self.global_step, "num_prompts": num_prompts, **metrics})

