"""hicra-eval's sampling loop with an over-long question: the prompt is cut under hicra-eval's own setting (and the
warning says so), and the per-sample records stay small (question and reference capped, not stored whole per sample).
A scripted sampler stands in for the model: what is tested is the loop around it."""

from __future__ import annotations

import json
import warnings

import torch

from hicra.evaluation.generation import MAX_TEXT_CHARS, sample_answers
from hicra.rollout.hf import RolloutBatch
from hicra.tasks import EvalFileTask
from hicra.tasks.prompts import count_tokens


class ScriptedSampler:
    """Answers every prompt `num_samples` times with the same reply; keeps the prompts it was given."""

    max_prompt_tokens = 256

    def __init__(self, tokenizer, reply: str):
        self.reply_ids = tokenizer(reply, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        self.prompts: list[str] = []

    def generate(self, model, tokenizer, prompts, num_samples, greedy):
        self.prompts += prompts
        rows, width = len(prompts) * num_samples, len(self.reply_ids)
        return RolloutBatch(torch.zeros(rows, 1, dtype=torch.long), torch.ones(rows, 1, dtype=torch.bool),
                            torch.tensor([self.reply_ids] * rows), torch.ones(rows, width, dtype=torch.bool),
                            torch.zeros(rows, dtype=torch.bool))


def test_an_over_long_question_is_cut_under_eval_s_own_setting_and_stored_capped(smollm2_tokenizer, tmp_path):
    question = "Some context. " * 400_000 + "What is 1 + 1?"  # 5.6 MB
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps({"problem": question, "answer": "2"}) + "\n")
    task = EvalFileTask(str(data))
    sampler = ScriptedSampler(smollm2_tokenizer, "\\boxed{2}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = sample_answers(torch.nn.Linear(1, 1), smollm2_tokenizer, task, task.val_examples(), sampler,
                                 num_samples=4, greedy=False, batch_size=1, system_prompt=None)
    (message,) = {str(w.message) for w in caught if "was cut" in str(w.message)}
    assert message.startswith("a question longer than max_prompt_tokens allows")  # not training's rollout.*
    assert count_tokens(smollm2_tokenizer, sampler.prompts[0]) <= sampler.max_prompt_tokens

    assert len(records) == 4 and all(r["correct"] for r in records)
    for record in records:
        assert len(record["question"]) < MAX_TEXT_CHARS + 30 and record["question"].endswith("What is 1 + 1?")
        assert f"[... {len(question) - MAX_TEXT_CHARS} chars cut]" in record["question"]
    assert len(json.dumps(records)) < 4 * (MAX_TEXT_CHARS + 1000)  # was 4 x 5.6 MB
