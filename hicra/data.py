"""Prompts only: the datamodule yields questions rendered through the chat template; rollouts happen in the module."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from hicra.tasks import Example, build_chat_prompt


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


class PromptDataModule(pl.LightningDataModule):
    def __init__(self, task, tokenizer, prompts_per_step: int, num_batches: int, seed: int = 0,
                 val_batch_size: int = 32, system_prompt: str | None = None):
        super().__init__()
        self.task, self.tokenizer = task, tokenizer
        self.prompts_per_step, self.num_batches, self.seed = prompts_per_step, num_batches, seed
        self.val_batch_size, self.system_prompt = val_batch_size, system_prompt

    def _collate(self, examples: list[Example]) -> dict:
        prompts = [build_chat_prompt(self.tokenizer, ex.question, self.task.instruction, self.system_prompt)
                   for ex in examples]
        return {"examples": examples, "prompts": prompts}

    def train_dataloader(self) -> DataLoader:
        stream = PromptStream(self.task.train_examples(), self.num_batches * self.prompts_per_step, self.seed)
        return DataLoader(stream, batch_size=self.prompts_per_step, shuffle=False, collate_fn=self._collate)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.task.val_examples(), batch_size=self.val_batch_size, shuffle=False,
                          collate_fn=self._collate)
