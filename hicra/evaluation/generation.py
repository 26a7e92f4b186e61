"""Batched sampling for evaluation: `batch_size` prompts per `generate` call, `num_samples` answers each.

One record per sample, in problem order then sample order (rows of a rollout are grouped prompt by prompt). A record
holds the question and reference capped at `MAX_TEXT_CHARS` (as training's completion samples cap theirs): every sample
repeats them, and a 5 MB question would otherwise be stored once per sample.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from hicra.rollout.hf import HFSampler
from hicra.tasks import Example, Task, build_chat_prompt
from hicra.tasks.prompts import Demonstrations
from hicra.tracking.artifacts import cap_text

MAX_TEXT_CHARS = 8_000  # hicra.training.callbacks.MAX_PROMPT_CHARS: a reader sees the start and the end


@torch.no_grad()
def sample_answers(model, tokenizer, task: Task, examples: list[Example], sampler: HFSampler, *,
                   num_samples: int, greedy: bool, batch_size: int, system_prompt: str | None,
                   desc: str = "eval", demonstrations: Demonstrations = None) -> list[dict]:
    """Generate and score `num_samples` answers per example; a progress bar counts batches."""
    model.eval()
    records: list[dict] = []
    batches = range(0, len(examples), batch_size)
    progress = tqdm(batches, desc=desc, unit="batch", dynamic_ncols=True)
    for start in progress:
        batch = examples[start:start + batch_size]
        prompts = [build_chat_prompt(tokenizer, ex.question, task.instruction, system_prompt, sampler.max_prompt_tokens,
                                     budget_key="max_prompt_tokens", demonstrations=demonstrations)  # hicra-eval's own setting names the cut
                   for ex in batch]  # an over-long question is cut from the left, the template kept whole
        rollout = sampler.generate(model, tokenizer, prompts, num_samples, greedy=greedy)  # B = len(batch) x n
        ids = rollout.response_ids.masked_fill(~rollout.response_mask, tokenizer.pad_token_id)  # (B, T)
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        lengths = rollout.response_mask.sum(dim=1).tolist()  # (B,) tokens up to and including EOS
        truncated = rollout.truncated.tolist()  # (B,)
        shown = [(cap_text(ex.question, MAX_TEXT_CHARS), cap_text(ex.answer, MAX_TEXT_CHARS)) for ex in batch]
        for row, text in enumerate(texts):
            problem, sample = divmod(row, num_samples)
            example = batch[problem]
            # As in training (hicra.tasks.scoring.score_completions): a reply cut at the budget never finished, so it
            # scores 0 and has no answer in form, whatever it boxed on the way.
            score = 0.0 if truncated[row] else float(task.score(text, example))
            in_form = not truncated[row] and task.answer_in_form(text)
            records.append({"problem": start + problem, "sample": sample, "question": shown[problem][0],
                            "reference": shown[problem][1], "completion": text, "score": score,
                            "correct": score >= 1.0, "num_tokens": int(lengths[row]),
                            "truncated": bool(truncated[row]), "boxed": in_form})
        progress.set_postfix(correct=f"{sum(r['correct'] for r in records)}/{len(records)}")
    return records
