"""Prompts only: the datamodule yields questions rendered through the chat template; rollouts happen in the module."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from hicra.errors import ConfigError
from hicra.tasks import Example, build_chat_prompt
from hicra.tasks.prompts import Demonstrations, check_prompt_room
from hicra.training.distributed import world_size


class PromptStream(Dataset):
    """`num_batches * batch_size` prompts drawn epoch by epoch from seeded permutations of `examples`.

    One Lightning epoch is the whole run, so the progress bar counts steps to the end and the order depends on
    the seed only (a resumed run can find its place by index).
    """

    def __init__(self, examples: list[Example], length: int, seed: int):
        self.examples, self.length = examples, length
        generator = torch.Generator().manual_seed(seed)
        epochs = -(-length // len(examples))
        self.order = torch.cat([torch.randperm(len(examples), generator=generator) for _ in range(epochs)])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Example:
        return self.examples[int(self.order[index])]


def check_ranks_divide(prompts_per_step: int, num_ranks: int) -> None:
    """Every rank samples whole groups (exact advantages), so the prompts of a step must split evenly over ranks."""
    if prompts_per_step % num_ranks:
        raise ConfigError(f"prompts_per_step={prompts_per_step} must be divisible by the number of ranks "
                          f"({num_ranks}: trainer.devices x trainer.num_nodes) so every rank samples whole groups")


class SkipFirstBatches(Sampler):
    """Batches of consecutive indices into a PromptStream, the first `skip` left out on resume.

    `len` stays the full count: Lightning restores its batch counter to `skip`, so the epoch ends after exactly
    the batches the interrupted run had left. With several ranks, global batch b is cut into `num_ranks` equal
    slices and rank r takes slice r: together the ranks see exactly the prompts one process would.
    """

    def __init__(self, num_batches: int, batch_size: int, skip: int = 0, rank: int = 0, num_ranks: int = 1):
        check_ranks_divide(batch_size, num_ranks)
        self.num_batches, self.batch_size, self.skip = num_batches, batch_size, skip
        self.rank, self.local = rank, batch_size // num_ranks

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        for b in range(self.skip, self.num_batches):
            first = b * self.batch_size + self.rank * self.local
            yield list(range(first, first + self.local))


class PromptRefill:
    """Prompts beyond a step's own batch, for dynamic sampling (algorithm.dynamic_sampling_rounds > 0).

    A stream of its own, seeded apart from the step batches' (a run's batches stay those of a run without dynamic
    sampling, whatever it drew between them), read `per_round` prompts at a time by every rank together: rank r takes
    slice r of the round, as SkipFirstBatches does with a batch. `position` (global prompts drawn) travels in the
    checkpoint with the data position, so a resumed run draws the same prompts as an uninterrupted one.
    """

    def __init__(self, examples: Callable[[], list[Example]], collate: Callable[[list[Example]], dict],
                 per_round: int, seed: int):
        self._source, self._examples, self.collate = examples, None, collate
        self.per_round, self.seed = per_round, seed
        self.position, self.rank, self.num_ranks = 0, 0, 1
        self._epoch_order: tuple[int, Tensor] | None = None

    def _example(self, index: int) -> Example:
        if self._examples is None:
            self._examples = self._source()
        epoch, at = divmod(index, len(self._examples))
        if self._epoch_order is None or self._epoch_order[0] != epoch:  # each epoch a fresh permutation, by index
            generator = torch.Generator().manual_seed((self.seed + 1) * REFILL_SEED_STRIDE + epoch)
            self._epoch_order = (epoch, torch.randperm(len(self._examples), generator=generator))
        return self._examples[int(self._epoch_order[1][at])]

    def draw(self) -> dict:
        """This rank's share of the next `per_round` prompts: {"examples", "prompts"} as a training batch."""
        local = self.per_round // self.num_ranks
        first = self.position + self.rank * local
        self.position += self.per_round
        return self.collate([self._example(i) for i in range(first, first + local)])


REFILL_SEED_STRIDE = 1_000_003  # refill permutations never share a generator seed with the batches' (seed)


class ResumableDataLoader(DataLoader):
    """Marks the loader resumable for Lightning (its `_Stateful` protocol); the position lives in the datamodule."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class PromptDataModule(pl.LightningDataModule):
    """Training and validation prompts of `task`. With `max_prompt_tokens` (the sampler's budget) an over-long
    question is cut from the left so that the template and the instruction survive (`build_chat_prompt`)."""

    def __init__(self, task, tokenizer, prompts_per_step: int, num_batches: int, seed: int = 0,
                 val_batch_size: int = 32, system_prompt: str | None = None, updates_per_batch: int = 1,
                 max_prompt_tokens: int | None = None, demonstrations: Demonstrations = None):
        super().__init__()
        if max_prompt_tokens is not None:  # a budget the template alone overflows fails now, not at the first batch
            check_prompt_room(tokenizer, task.instruction, system_prompt, max_prompt_tokens,
                              demonstrations=demonstrations)
        self.max_prompt_tokens = max_prompt_tokens
        self.task, self.tokenizer = task, tokenizer
        self.prompts_per_step, self.num_batches, self.seed = prompts_per_step, num_batches, seed
        self.val_batch_size, self.system_prompt, self.demonstrations = val_batch_size, system_prompt, demonstrations
        self.updates_per_batch = updates_per_batch
        self.consumed_batches = 0  # set from a checkpoint on resume
        self.refill = PromptRefill(task.train_examples, self._collate, prompts_per_step, seed)

    def state_dict(self) -> dict:
        """Data position, saved in checkpoints: rollout batches whose updates are done."""
        return {"consumed_batches": self.trainer.global_step // self.updates_per_batch if self.trainer else 0,
                "refill_position": self.refill.position}

    def load_state_dict(self, state: dict) -> None:
        self.consumed_batches = int(state["consumed_batches"])
        self.refill.position = int(state.get("refill_position", 0))  # absent before dynamic sampling: none drawn

    def _collate(self, examples: list[Example]) -> dict:
        prompts = [build_chat_prompt(self.tokenizer, ex.question, self.task.instruction, self.system_prompt,
                                     self.max_prompt_tokens, demonstrations=self.demonstrations) for ex in examples]
        return {"examples": examples, "prompts": prompts}

    def train_dataloader(self) -> DataLoader:
        stream = PromptStream(self.task.train_examples(), self.num_batches * self.prompts_per_step, self.seed)
        rank, num_ranks = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        batches = SkipFirstBatches(self.num_batches, self.prompts_per_step, skip=self.consumed_batches,
                                   rank=rank, num_ranks=num_ranks)
        self.refill.rank, self.refill.num_ranks = rank, num_ranks
        # Own generator: creating the iterator must not draw from the global RNG that sampling uses, or a resumed
        # run would sample differently from an uninterrupted one.
        return ResumableDataLoader(stream, batch_sampler=batches, collate_fn=self._collate,
                                   generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        rank, num_ranks = (self.trainer.global_rank, world_size(self.trainer)) if self.trainer else (0, 1)
        return DataLoader(even_shard(self.task.val_examples(), rank, num_ranks), batch_size=self.val_batch_size,
                          shuffle=False, collate_fn=self._collate_validation,
                          generator=torch.Generator().manual_seed(self.seed))

    def _collate_validation(self, items: list[tuple[Example, bool]]) -> dict:
        examples, counted = zip(*items)
        return self._collate(list(examples)) | {"counted": list(counted)}


def even_shard(items: list, rank: int, num_ranks: int) -> list[tuple[object, bool]]:
    """Rank `rank`'s share (items rank, rank + num_ranks, ...) as (item, counted) pairs, padded to the largest share's
    length with its first item, not counted.

    Every rank then runs the same number of validation batches: a sharded policy's `generate` (FSDP's gather) and a
    vLLM tensor-parallel group are collectives, and a rank with one batch more would wait for the others until the
    NCCL timeout. The padded reply is generated and dropped (`ValidationTally.add`), so no question counts twice.
    """
    share = items[rank::num_ranks]
    longest = -(-len(items) // num_ranks)  # ceil: rank 0's share
    filler = share[0] if share else (items[0] if items else None)
    return [(item, True) for item in share] + [(filler, False)] * (longest - len(share) if filler is not None else 0)
