"""A training step's rollout: one round of sampling and scoring, or, with DAPO's dynamic sampling, as many rounds as
it takes to fill the step with groups that carry a learning signal.

    round 1: the step's prompts --sample G each, score--> rewards (B,) --> groups whose rewards differ are kept
    round 2..N (algorithm.dynamic_sampling_rounds = N): prompts_per_step more prompts (PromptRefill), the same
    until every rank holds its share of prompts_per_step informative groups, or N rounds are spent.

Ranks decide together (the smallest rank's count), so they run the same rounds and train the same number of groups:
an uneven batch would leave one rank waiting in a gradient all-reduce the others never join.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from hicra.rollout.hf import RolloutBatch
from hicra.tasks.scoring import shaped_rewards
from hicra.training.distributed import gather_objects
from hicra.training.step_scoring import score_rollout


@dataclass(frozen=True)
class ScoredRollout:
    """Sampled replies and what they earned. B = prompts x G rows, grouped prompt by prompt."""

    rollout: RolloutBatch
    texts: list[str]  # (B,)
    correctness: Tensor  # (B,) the task's score; what accuracy counts
    in_form: Tensor  # (B,) bool: the answer in the asked form
    overlong: Tensor  # (B,) DAPO's soft overlong penalty, <= 0
    rewards: Tensor  # (B,) what the advantages use: correctness + format term + overlong penalty
    examples: list  # (B/G,)
    prompts: list[str]  # (B/G,)

    def groups(self, keep: Tensor, group_size: int) -> ScoredRollout:
        """The groups at indices `keep` (K,) long, in that order."""
        rows = (keep[:, None] * group_size + torch.arange(group_size, device=keep.device)).reshape(-1)  # (K*G,)
        picked = self.rollout.rows(rows.to(self.rollout.response_ids.device))
        on_cpu = rows.tolist()
        return ScoredRollout(picked, [self.texts[i] for i in on_cpu], self.correctness[rows], self.in_form[rows],
                             self.overlong[rows], self.rewards[rows], [self.examples[i] for i in keep.tolist()],
                             [self.prompts[i] for i in keep.tolist()])


def _pad(tensors: list[Tensor], value, left: bool = False) -> Tensor:
    """Rows of (b_i, L_i) tensors stacked into (sum b_i, max L_i), padded with `value` on the right (or the left)."""
    width = max(t.shape[1] for t in tensors)
    padded = []
    for t in tensors:
        fill = t.new_full((t.shape[0], width - t.shape[1]), value)
        padded.append(torch.cat([fill, t] if left else [t, fill], dim=1))
    return torch.cat(padded)


def concat_rollouts(parts: list[ScoredRollout], pad_id: int) -> ScoredRollout:
    """One batch of several rounds' groups: prompts stay left-padded (every response starts at the same column),
    responses right-padded; the padding is masked out, so it changes no log-prob."""
    if len(parts) == 1:
        return parts[0]
    rollouts = [p.rollout for p in parts]
    sampler = [r.sampler_logprobs for r in rollouts]
    rollout = RolloutBatch(
        _pad([r.prompt_ids for r in rollouts], pad_id, left=True),  # (B, Lp)
        _pad([r.prompt_mask for r in rollouts], False, left=True),
        _pad([r.response_ids for r in rollouts], pad_id),  # (B, T)
        _pad([r.response_mask for r in rollouts], False),
        torch.cat([r.truncated for r in rollouts]),
        None if any(s is None for s in sampler) else _pad(sampler, 0.0))
    return ScoredRollout(rollout, [t for p in parts for t in p.texts],
                         *(torch.cat([getattr(p, k) for p in parts]) for k in ("correctness", "in_form", "overlong",
                                                                               "rewards")),
                         [e for p in parts for e in p.examples], [q for p in parts for q in p.prompts])


def sample_and_score(module, prompts: list[str], examples: list) -> ScoredRollout:
    """One round: G replies per prompt, their scores and rewards (the module's generation and scoring phases)."""
    group_size, watch = module.algorithm.group_size, module.stopwatch
    with watch.phase("generation"):
        rollout = module._generate(prompts, group_size)
    with watch.phase("scoring"):
        texts, scored = score_rollout(module, rollout, examples, group_size)
        correctness = torch.tensor(scored.scores, device=module.device)  # (B,)
        in_form = torch.tensor(scored.in_form, device=module.device)  # (B,) bool
        overlong = module.algorithm.overlong_penalties(rollout.response_mask, module.sampler.max_new_tokens)  # (B,)
        rewards = shaped_rewards(correctness, in_form, module.format_reward) + overlong  # (B,)
    return ScoredRollout(rollout, texts, correctness, in_form, overlong, rewards, list(examples), list(prompts))


@dataclass
class Tally:
    """What the rounds of one step drew, per rank."""

    rounds: int = 0
    groups: int = 0  # groups sampled, every round
    informative: int = 0  # of which had rewards that differ
    correct: float = 0.0  # replies scored correct, every round
    replies: int = 0
    trained: int = 0  # informative groups trained on: the smallest rank's count


def fill_with_informative_groups(first: ScoredRollout, draw: Callable[[], ScoredRollout], informative, max_rounds: int,
                                 group_size: int, smallest: Callable[[int], int], pad_id: int):
    """Dynamic sampling: keep the informative groups of `first` and of up to `max_rounds - 1` more rounds (`draw`)
    until every rank holds as many as `first` has groups. `informative`: rewards (B,) -> (B/G,) bool; `smallest`:
    the minimum of an int over ranks (every rank calls it at the same points).

    Returns (the batch to train on, its Tally). Every rank trains on the smallest rank's count of informative groups;
    when no rank found any, on `first` as it is (all advantages 0: the update GRPO would make without filtering).
    """
    target, tally, kept, held = len(first.prompts), Tally(), [], 0  # held: this rank's informative groups so far
    batch = first
    while True:
        tally.rounds += 1
        found = informative(batch.rewards).nonzero().squeeze(1)  # (K,) indices of the informative groups
        keep = found[:target - held]  # those there is room for
        tally.groups, tally.informative = tally.groups + len(batch.prompts), tally.informative + len(found)
        tally.correct += float((batch.correctness >= 1.0).sum())
        tally.replies += len(batch.texts)
        if len(keep):
            kept.append(batch.groups(keep, group_size))
            held += len(keep)
        have = smallest(held)
        if have >= target or tally.rounds >= max_rounds:
            break
        batch = draw()
    tally.trained = have
    if have == 0:
        return first, tally
    trained = concat_rollouts(kept, pad_id)
    if len(trained.prompts) > have:  # a rank with more than the smallest trims to it: every rank in step
        trained = trained.groups(torch.arange(have, device=trained.rewards.device), group_size)
    return trained, tally


def sampling_metrics(tally: Tally, target: int, prompts_per_step: int, prompts_consumed_total: int) -> dict[str, float]:
    """sampling/*: how hard the step had to look for a learning signal (the metric glossary in README.md)."""
    return {"sampling/rounds": float(tally.rounds),
            "sampling/informative_frac": tally.informative / max(tally.groups, 1),
            "sampling/kept_frac": tally.trained / target,  # 1 = a full batch of informative groups
            "sampling/accuracy_all": tally.correct / max(tally.replies, 1),  # every reply sampled, not only kept
            "sampling/prompts_consumed": float(tally.rounds * prompts_per_step),  # all ranks
            "sampling/prompts_consumed_total": float(prompts_consumed_total)}


def sample_step(module, batch: dict) -> tuple[ScoredRollout, dict[str, float]]:
    """The step's scored rollout and, with dynamic sampling on, its sampling/* metrics ({} when off)."""
    first = sample_and_score(module, batch["prompts"], batch["examples"])
    max_rounds = module.algorithm.dynamic_sampling_rounds
    if max_rounds == 0:
        return first, {}

    def draw() -> ScoredRollout:
        more = module.refill.draw()
        return sample_and_score(module, more["prompts"], more["examples"])

    def smallest(count: int) -> int:
        return min(gather_objects(count, module._trainer))

    trained, tally = fill_with_informative_groups(
        first, draw, module.algorithm.informative_groups, max_rounds, module.algorithm.group_size, smallest,
        module.tokenizer.pad_token_id)
    prompts_per_step = module.refill.per_round
    step = module.global_step // module.algorithm.num_iterations  # rollout batches done before this one
    total = (step + 1) * prompts_per_step + module.refill.position
    return trained, sampling_metrics(tally, len(first.prompts), prompts_per_step, total)
