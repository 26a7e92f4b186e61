"""The completion samples a step logs (HTML + JSON) stay small whatever the data or the model wrote: every prompt and
reply is capped per field, with a visible marker saying how much was cut."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from hicra.rollout.hf import RolloutBatch
from hicra.tracking.artifacts import cap_text, cut_marker
from hicra.training.callbacks import MAX_PROMPT_CHARS, MAX_RESPONSE_CHARS, CompletionSampleLogger, capped_response
from hicra.training.step_output import KEY, StepOutput


def test_cap_text_keeps_both_ends_around_a_marker():
    assert cap_text("short", 10) == "short"
    text = "a" * 50 + "b" * 900 + "c" * 50
    assert cap_text(text, 100) == "a" * 50 + cut_marker(900) + "c" * 50 == "a" * 50 + "[... 900 chars cut]" + "c" * 50


def test_capped_response_keeps_pieces_and_advantages_aligned():
    pieces = [(f"t{i:03d}", i % 2 == 0) for i in range(100)]  # 4 characters each
    advantages = [float(i) for i in range(100)]
    assert capped_response(pieces, advantages, 400) == (pieces, advantages)
    kept, kept_advantages = capped_response(pieces, advantages, 40)
    assert kept == pieces[:5] + [("[... 360 chars cut]", False)] + pieces[95:]
    assert kept_advantages == advantages[:5] + [None] + advantages[95:]


class FourCharTokens:
    pad_token_id = 0

    def decode(self, ids):
        return "word"


def test_a_10_mb_prompt_and_a_long_reply_log_a_bounded_sample(tmp_path):
    rows, prompts, T = 4, 2, 50_000  # 50,000 tokens of 4 characters: 200,000 characters per reply
    rollout = RolloutBatch(torch.ones(rows, 3, dtype=torch.long), torch.ones(rows, 3, dtype=torch.bool),
                           torch.ones(rows, T, dtype=torch.long), torch.ones(rows, T, dtype=torch.bool),
                           torch.zeros(rows, dtype=torch.bool))
    out = StepOutput(step=3, rollout=rollout, texts=["word" * T] * rows, rewards=torch.zeros(rows),
                     correctness=torch.zeros(rows), planning_mask=torch.zeros(rows, T, dtype=torch.bool),
                     advantages=torch.zeros(rows), token_advantages=torch.zeros(rows, T),
                     prompts=["Q" * 10_000_000 + " What is 1 + 1?"] * prompts)
    module = SimpleNamespace(tokenizer=FourCharTokens(), algorithm=SimpleNamespace(group_size=rows // prompts))
    CompletionSampleLogger(1, rows, tmp_path).on_train_batch_end(SimpleNamespace(loggers=[]), module, {KEY: out},
                                                                 None, 0)
    page, data = tmp_path / "completions_step000003.html", tmp_path / "completions_step000003.json"
    # per row: the prompt and reply caps, plus markup / JSON syntax around each kept token (~30 bytes)
    bound = rows * (MAX_PROMPT_CHARS + MAX_RESPONSE_CHARS + 30 * MAX_RESPONSE_CHARS // 4)
    assert page.stat().st_size < bound and data.stat().st_size < bound
    assert f"[... {10_000_015 - MAX_PROMPT_CHARS} chars cut]" in page.read_text()
    row = json.loads(data.read_text())["rows"][0]
    assert row["prompt"].endswith("What is 1 + 1?") and len(row["prompt"]) < MAX_PROMPT_CHARS + 30
    assert len(row["pieces"]) == len(row["token_advantages"]) == MAX_RESPONSE_CHARS // 4 + 1
    assert ["[... 168000 chars cut]", False] in row["pieces"]


class SumTask:
    """Reads answers like hicra's tasks: a boxed one, else nothing (Task.read_answer's contract)."""

    def read_answer(self, completion, example):
        from hicra.tasks.answers import extract_boxed

        answer = extract_boxed(completion)
        return (answer, "boxed") if answer is not None else (None, "no answer")


def test_page_says_why_each_reply_got_its_reward(tmp_path):
    """Gold answer and the group's rewards once per prompt; per reply the answer read, how, and truncation; the run
    and step named; the final step saved whatever the cadence."""
    from hicra.tasks.base import Example

    rows, T = 4, 3
    rollout = RolloutBatch(torch.ones(rows, 3, dtype=torch.long), torch.ones(rows, 3, dtype=torch.bool),
                           torch.ones(rows, T, dtype=torch.long), torch.ones(rows, T, dtype=torch.bool),
                           torch.tensor([False, True, False, False]))
    texts = ["so \\boxed{2}", "5 + 5 = 10 and then", "\\boxed{3}", "no idea"]
    out = StepOutput(step=9, rollout=rollout, texts=texts, rewards=torch.tensor([1.0, 0.0, 0.0, 0.0]),
                     correctness=torch.tensor([1.0, 0.0, 0.0, 0.0]), planning_mask=torch.zeros(rows, T, dtype=torch.bool),
                     advantages=torch.tensor([1.5, -0.5, 0.0, 0.0]), token_advantages=torch.zeros(rows, T),
                     prompts=["What is 1 + 1?", "What is 1 + 2?"])
    module = SimpleNamespace(tokenizer=FourCharTokens(), algorithm=SimpleNamespace(group_size=2), task=SumTask())
    batch = {"examples": [Example("What is 1 + 1?", "2"), Example("What is 1 + 2?", "3")]}
    trainer = SimpleNamespace(loggers=[], global_step=10, max_steps=10)
    CompletionSampleLogger(5, rows, tmp_path, "s1 hicra grams (algorithm hicra, run 1d42f3a3)").on_train_batch_end(
        trainer, module, {KEY: out}, batch, 9)  # batch 9 is off the 5-step cadence, but it is the last step
    page = (tmp_path / "completions_step000009.html").read_text()
    assert "s1 hicra grams (algorithm hicra, run 1d42f3a3): completions at step 9" in page
    assert page.count("What is 1 + 1?") == 1  # the prompt once per group
    assert "gold answer <code>2</code>" in page and "#0 1.00 / +1.50, #1 0.00 / -0.50" in page
    assert "answer read <code>2</code> (boxed)" in page and "no answer" in page
    assert "truncated at the token budget" in page
    row = json.loads((tmp_path / "completions_step000009.json").read_text())["rows"][1]
    assert row["truncated"] and row["rule"] == "no answer" and row["extracted"] is None and row["gold"] == "2"
