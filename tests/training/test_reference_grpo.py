"""Speed never changes the maths: hicra's GRPO loss and gradient on a fixed batch equal a straightforward reference
written from the formulas: one unpadded sequence at a time, a full log-softmax, group statistics by hand."""

from __future__ import annotations

import torch
from support import TINY_RUN

from hicra.config.instantiate import build
from hicra.training.module import PolicyGradientModule

REWARDS = torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 1])  # 2 groups of 4, mixed outcomes


def _reference_loss(model, rollout, rewards, group_size: int, temperature: float) -> torch.Tensor:
    """GRPO (token-mean, on-policy so the ratio is 1 with gradient d ratio = d log pi) from first principles; log pi is
    the sampling distribution, logits / temperature."""
    groups = rewards.view(-1, group_size)
    advantages = ((groups - groups.mean(1, keepdim=True)) / (groups.std(1, keepdim=True) + 1e-6)).flatten()
    terms, count = [], 0
    for i in range(len(rewards)):
        prompt = rollout.prompt_ids[i][rollout.prompt_mask[i]]  # no padding at all
        response = rollout.response_ids[i][rollout.response_mask[i]]
        ids = torch.cat([prompt, response])[None]
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1]  # positions that predict the response
        logp = torch.log_softmax(logits.float() / temperature, dim=-1).gather(-1, response[:, None]).squeeze(-1)
        ratio = torch.exp(logp - logp.detach())
        terms.append(-(ratio * advantages[i]).sum())  # clipping is inactive at ratio 1
        count += len(response)
    return torch.stack(terms).sum() / count


def test_grpo_loss_and_gradient_match_a_reference_computation(compose_cfg):
    cfg = compose_cfg(*TINY_RUN, "algorithm=grpo", "planner=none", "algorithm.group_size=4")
    bundle, algorithm, sampler = build(cfg.model), build(cfg.algorithm), build(cfg.rollout)
    module = PolicyGradientModule(bundle.model, bundle.tokenizer, algorithm, build(cfg.planner), task=None,
                                  sampler=sampler, optimizer_factory=None, micro_batch_size=3)
    torch.manual_seed(0)
    rollout = sampler.generate(bundle.model, bundle.tokenizer, ["What is 1 + 1?", "Name three primes, please."], 4)
    lengths = torch.tensor([24, 5, 17, 1, 24, 9, 12, 3])  # as if EOS came at different places
    rollout.response_mask = torch.arange(rollout.response_ids.shape[1]) < lengths[:, None]
    assert rollout.prompt_mask.sum(1).min() < rollout.prompt_ids.shape[1]  # left padding is exercised

    planning = torch.zeros_like(rollout.response_mask)
    token_advantages = algorithm.token_advantages(algorithm.advantages(REWARDS), planning)
    bundle.model.zero_grad(set_to_none=True)
    metrics = module._accumulate_gradients(rollout, {"token_advantages": token_advantages})
    fast = {n: p.grad.clone() for n, p in bundle.model.named_parameters()}

    bundle.model.zero_grad(set_to_none=True)
    assert sampler.temperature != 1.0  # the temperature is exercised (the embedded default samples at 0.7)
    reference = _reference_loss(bundle.model, rollout, REWARDS, group_size=4, temperature=sampler.temperature)
    reference.backward()
    assert abs(float(reference)) > 1e-3  # unequal lengths: the on-policy loss value is not trivially 0
    assert abs(metrics["loss/policy"] - float(reference)) < 1e-5
    assert abs(metrics["loss/total"] - float(reference)) < 1e-5
    # fp32 sums in another order (prompts computed once per group, padded batches): ~1e-7 apart on the largest
    # gradients (0.06); a wrong term would be off by orders of magnitude more
    for name, p in bundle.model.named_parameters():
        torch.testing.assert_close(fast[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert sum(float(g.abs().sum()) for g in fast.values()) > 0
