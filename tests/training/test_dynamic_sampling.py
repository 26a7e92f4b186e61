"""DAPO's dynamic sampling (algorithm.dynamic_sampling_rounds): the rounds, hand-built; joining rounds' batches changes
no log-prob; in a run only informative groups are trained, the prompts consumed are logged, a resumed run draws the
same prompts. Two gloo ranks that find different numbers of informative groups stay in step: proven by the real
two-rank DDP run of tests/training/test_ddp.py (test_hicra_train_on_two_ranks_logs_one_run[ddp]), which samples
dynamically (one launch for both)."""

from __future__ import annotations

import pytest
import torch
from support import TINY_RUN

from hicra.algorithms import informative_groups
from hicra.models.loaders import build_tiny_model
from hicra.rollout.hf import RolloutBatch, sequence_logprobs
from hicra.training.sampling_rounds import ScoredRollout, concat_rollouts, fill_with_informative_groups

G = 2
HALF = ["task._target_=support.HalfSolvableTask", "score_truncated=true", "algorithm=grpo", f"algorithm.group_size={G}"]


def _scored(rewards: list[float], prompt_len: int = 3, response_len: int = 4, tag: str = "") -> ScoredRollout:
    """A hand-made rollout of len(rewards)/G groups whose prompts are named `tag0, tag1, ...`."""
    B = len(rewards)
    rollout = RolloutBatch(torch.full((B, prompt_len), 5), torch.ones(B, prompt_len, dtype=torch.bool),
                           torch.full((B, response_len), 7), torch.ones(B, response_len, dtype=torch.bool),
                           torch.zeros(B, dtype=torch.bool))
    r = torch.tensor(rewards)
    prompts = [f"{tag}{i}" for i in range(B // G)]
    return ScoredRollout(rollout, [f"{tag}{i // G}/{i % G}" for i in range(B)], r, torch.zeros(B, dtype=torch.bool),
                         torch.zeros(B), r, prompts, prompts)


def _fill(first, more, max_rounds, smallest=lambda n: n):
    rounds = iter(more)
    return fill_with_informative_groups(first, lambda: next(rounds), lambda r: informative_groups(r, G), max_rounds,
                                        G, smallest, pad_id=0)


def test_informative_groups_compare_rewards_exactly():
    one_ulp_more = float(torch.nextafter(torch.tensor(0.3), torch.tensor(1.0)))  # continuous rewards, barely apart
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.3, one_ulp_more, 0.7, 0.7])
    assert informative_groups(rewards, 2).tolist() == [False, True, True, False]
    assert rewards[4:6].std() < 1e-6  # what a float std threshold would have called constant


def test_rounds_fill_the_step_with_informative_groups_in_order():
    first = _scored([1, 1, 0, 1, 0, 0], tag="a")  # groups a0 (constant), a1 (informative), a2 (constant)
    second = _scored([0, 1, 1, 1, 1, 0], tag="b")  # b0, b2 informative
    batch, tally = _fill(first, [second], max_rounds=3)
    assert batch.prompts == ["a1", "b0", "b2"] and batch.rewards.tolist() == [0, 1, 0, 1, 1, 0]
    assert batch.texts == ["a1/0", "a1/1", "b0/0", "b0/1", "b2/0", "b2/1"]
    assert (tally.rounds, tally.groups, tally.informative, tally.trained) == (2, 6, 3, 3)
    assert tally.correct == 3 + 4 and tally.replies == 12  # every reply sampled, kept or not


def test_a_full_first_round_samples_no_more_and_surplus_groups_are_dropped():
    batch, tally = _fill(_scored([0, 1, 1, 0], tag="a"), [], max_rounds=5)
    assert batch.prompts == ["a0", "a1"] and tally.rounds == 1
    first, second = _scored([0, 0, 0, 1], tag="a"), _scored([0, 1, 1, 0, 1, 0], tag="b")
    batch, tally = _fill(first, [second], max_rounds=5)
    assert batch.prompts == ["a1", "b0"] and tally.informative == 4  # b1, b2 sampled, not needed


def test_at_the_cap_the_step_trains_on_what_it_found():
    first, second = _scored([0, 0, 1, 0, 1, 1], tag="a"), _scored([1, 1, 0, 0, 1, 1], tag="b")
    batch, tally = _fill(first, [second], max_rounds=2)
    assert batch.prompts == ["a1"] and (tally.rounds, tally.trained) == (2, 1)


def test_with_no_informative_group_the_first_batch_is_trained_as_it_is():
    first = _scored([1, 1, 0, 0], tag="a")
    batch, tally = _fill(first, [_scored([0, 0, 0, 0], tag="b")], max_rounds=2)
    assert batch is first and tally.trained == 0 and tally.informative == 0


def test_every_rank_trains_the_smallest_ranks_count():
    """This rank found 2 of 2 informative groups; another found 1 and the cap is reached: both train on 1."""
    batch, tally = _fill(_scored([0, 1, 1, 0], tag="a"), [_scored([0, 0, 0, 0], tag="b")], max_rounds=2,
                         smallest=lambda n: min(n, 1))
    assert batch.prompts == ["a0"] and (tally.rounds, tally.trained) == (2, 1)


def test_joining_rounds_pads_and_changes_no_log_prob():
    bundle = build_tiny_model(seed=0)
    model, tokenizer = bundle.model, bundle.tokenizer
    torch.manual_seed(0)
    parts = []
    for lp, t in ((3, 5), (6, 2)):  # different prompt and response widths
        ids, resp = torch.randint(3, 100, (G, lp)), torch.randint(3, 100, (G, t))
        mask = torch.ones(G, t, dtype=torch.bool)
        mask[1, -1] = False
        rollout = RolloutBatch(ids, torch.ones(G, lp, dtype=torch.bool), resp, mask, torch.zeros(G, dtype=torch.bool),
                               torch.randn(G, t).masked_fill(~mask, 0.0))
        parts.append(ScoredRollout(rollout, ["x"] * G, torch.zeros(G), torch.zeros(G, dtype=torch.bool),
                                   torch.zeros(G), torch.tensor([0.0, 1.0]), ["e"], ["p"]))
    joined = concat_rollouts(parts, tokenizer.pad_token_id)
    assert joined.rollout.prompt_ids.shape == (2 * G, 6) and joined.rollout.response_ids.shape == (2 * G, 5)
    assert not joined.rollout.prompt_mask[:G, :3].any() and not joined.rollout.response_mask[G:, 2:].any()
    model.eval()
    with torch.no_grad():
        together = sequence_logprobs(model, joined.rollout)[0]  # (2G, 5)
        for i, part in enumerate(parts):
            alone = sequence_logprobs(model, part.rollout)[0]
            width = alone.shape[1]
            rows = slice(i * G, (i + 1) * G)
            torch.testing.assert_close(together[rows, :width] * part.rollout.response_mask,
                                       alone * part.rollout.response_mask, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(joined.rollout.sampler_logprobs[rows, :width], part.rollout.sampler_logprobs)


def _train(compose_cfg, tmp_path, *overrides):
    from hicra.training.run import train

    cfg = compose_cfg(*TINY_RUN, *HALF, "logger=none", f"paths.output_dir={tmp_path}", "trainer.max_steps=3",
                      "prompts_per_step=4", "val_every_n_steps=10", "checkpoint_every_n_steps=1", *overrides)
    return train(cfg, choices={"algorithm": "grpo"})["train_history"]


@pytest.mark.slow  # a whole training run or a fresh interpreter (make test-fast leaves it out)
def test_a_run_trains_informative_groups_only_and_logs_what_it_consumed(compose_cfg, tmp_path):
    plain = _train(compose_cfg, tmp_path / "plain")
    assert max(row["train/frac_zero_std_groups"] for row in plain) >= 0.5  # half the questions carry no signal
    assert not any(k.startswith("sampling/") for k in plain[0])  # off: nothing new is logged
    rows = _train(compose_cfg, tmp_path / "dynamic", "algorithm.dynamic_sampling_rounds=4")
    assert all(row["train/frac_zero_std_groups"] == 0.0 for row in rows if row["sampling/kept_frac"] > 0)
    assert sum(row["sampling/rounds"] for row in rows) > 3  # the even questions sent it back for more
    for step, row in enumerate(rows):
        assert row["sampling/prompts_consumed"] == 4 * row["sampling/rounds"]
        assert row["sampling/prompts_consumed_total"] == sum(r["sampling/prompts_consumed"] for r in rows[:step + 1])
        assert 0 <= row["sampling/kept_frac"] <= 1 and 0 <= row["sampling/informative_frac"] <= 1


@pytest.mark.slow  # a whole training run or a fresh interpreter (make test-fast leaves it out)
def test_a_resumed_run_draws_the_same_prompts(compose_cfg, tmp_path):
    dynamic = "algorithm.dynamic_sampling_rounds=4"
    straight = _train(compose_cfg, tmp_path / "straight", dynamic)
    first = _train(compose_cfg, tmp_path / "first", dynamic, "trainer.max_steps=2")
    ckpt = tmp_path / "first" / "runs" / "manual" / "checkpoints" / "last.ckpt"
    data_position = torch.load(ckpt, map_location="cpu", weights_only=True)["PromptDataModule"]
    assert data_position == {"consumed_batches": 2,  # the refill stream's position travels with the batches'
                             "refill_position": sum(row["sampling/prompts_consumed"] - 4 for row in first)}
    resumed = _train(compose_cfg, tmp_path / "resumed", dynamic, f"ckpt_path={ckpt}")
    keys = ("sampling/prompts_consumed_total", "sampling/rounds", "train/reward_mean", "loss/policy")
    assert [[row[k] for k in keys] for row in resumed] == [[row[k] for k in keys] for row in straight]
