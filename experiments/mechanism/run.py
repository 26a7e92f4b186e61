"""One-update mechanism test (issue 27): how much more does one HICRA update push the plan decision than one GRPO
update, on the same rollout batches of the base model, and does that match the prediction 1 + alpha(1 - p)?

The quantity: the change of the held-out decision log-probability, sum_q log pi(decision | held-out prompt q), after
one SGD update on a rollout batch. All updates start from the same base model, so with h = sum_q grad log pi(decision
| q) and an update theta + lr * g, the change is lr * h . g to first order; g is linear in the token advantages, so

    h . g_X = (1/N) sum_{i,t} w_X[i,t] * D[i,t],   D[i,t] = grad log pi(y_it | ...) . h    (N = the batch's tokens)

with w_GRPO = A_i, w_HICRA(alpha) = A_i + alpha |A_i| m_it (m = the Strategic-Gram mask), w_placebo(alpha) the same
with a random mask of the same per-reply token count (hicra.planning.RandomPlaceboDetector). D comes from two forward
passes per batch, at theta +- eps * h/|h| (central differences), so every alpha and every mask is read off one pair of
passes. The ratio HICRA/GRPO = (sum_b h.g_HICRA,b) / (sum_b h.g_GRPO,b) over the batches, with a 95% bootstrap CI
(batches resampled, paired: the same batches in numerator and denominator). `--check` batches also take a real SGD
step with each weighting and compare the measured change with the first-order one.

Plain SGD, not AdamW: AdamW's first step divides each coordinate by its own gradient's size (a sign step), so it
would measure the optimizer, not how the advantages weight the gradient.

    python experiments/mechanism/run.py --out experiments/mechanism/results_default.json [hydra overrides ...]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from hicra.algorithms import group_advantages
from hicra.config.instantiate import build
from hicra.planning import RandomPlaceboDetector
from hicra.rollout.hf import sequence_logprobs
from hicra.tasks import build_chat_prompt
from hicra.tasks.scoring import score_completions, shaped_rewards
from hicra.training.run import demonstrations

CONF = Path(__file__).resolve().parents[2] / "conf"


def load(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    bundle, task, sampler = build(cfg.model), build(cfg.task), build(cfg.rollout)
    def render(question: str) -> str:
        return build_chat_prompt(bundle.tokenizer, question, task.instruction, cfg.system_prompt,
                                 sampler.max_prompt_tokens, demonstrations=demonstrations(cfg))
    return cfg, bundle, task, sampler, render


def decision_logprob(model, tokenizer, prompts: list[str], decision_id: int, temperature: float) -> torch.Tensor:
    """sum_q log pi(decision | prompt q) at the sampling temperature: a scalar with its graph."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    positions = (enc.attention_mask.cumsum(1) - 1).clamp(min=0)
    logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, position_ids=positions).logits[:, -1]
    return torch.log_softmax(logits.float() / temperature, dim=-1)[:, decision_id].sum()


def direction(model, tokenizer, prompts, decision_id, temperature) -> tuple[list[torch.Tensor], float, float]:
    """h/|h| per parameter, |h| and the decision's geometric-mean probability on the held-out prompts."""
    model.zero_grad(set_to_none=True)
    total = 0.0
    for i in range(0, len(prompts), 16):
        lp = decision_logprob(model, tokenizer, prompts[i:i + 16], decision_id, temperature)
        lp.backward()
        total += float(lp.detach())
    h = [p.grad.detach().clone() for p in model.parameters()]
    norm = math.sqrt(sum(float((g * g).sum()) for g in h))
    model.zero_grad(set_to_none=True)
    return [g / norm for g in h], norm, math.exp(total / len(prompts))


@torch.no_grad()
def shifted(model, unit: list[torch.Tensor], scale: float, base: list[torch.Tensor]) -> None:
    for p, b, u in zip(model.parameters(), base, unit):
        p.copy_(b + scale * u)


def token_weights(advantages: torch.Tensor, mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """(B,) advantages, (B,T) mask -> (B,T) HICRA token advantages A + alpha |A| m (alpha 0 = GRPO)."""
    return advantages[:, None] + alpha * advantages.abs()[:, None] * mask.float()


def sgd_change(model, rollout, weights, response_mask, lr, base, heldout_lp) -> float:
    """Measured change of the held-out decision log-prob after one SGD step on -(1/N) sum w * log pi."""
    model.zero_grad(set_to_none=True)
    logprobs, _ = sequence_logprobs(model, rollout, False, heldout_lp["temperature"])
    (-(weights * logprobs * response_mask).sum() / response_mask.sum()).backward()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(p.grad, alpha=-lr)
    with torch.no_grad():
        after = float(heldout_lp["fn"](model))
    model.zero_grad(set_to_none=True)
    shifted(model, [torch.zeros_like(b) for b in base], 0.0, base)
    return after - heldout_lp["before"]


def bootstrap_ratio(num: list[float], den: list[float], draws: int = 4000, seed: int = 0) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(seed)
    n, d = torch.tensor(num, dtype=torch.float64), torch.tensor(den, dtype=torch.float64)
    idx = torch.randint(len(num), (draws, len(num)), generator=gen)
    ratios = (n[idx].sum(1) / d[idx].sum(1)).sort().values
    return float(ratios[int(0.025 * draws)]), float(ratios[int(0.975 * draws) - 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--heldout", type=int, default=64)
    parser.add_argument("--alphas", default="0.2,0.5")
    parser.add_argument("--decision", default="Step", help="the plan decision: the reply's first token")
    parser.add_argument("--plan-prefix", default="step by step", help="a reply that plans starts with this")
    parser.add_argument("--eps", type=float, default=1e-2, help="central-difference step along h/|h| (weight norm)")
    parser.add_argument("--check", type=int, default=3, help="batches that also take real SGD steps")
    parser.add_argument("--lr", type=float, default=1e-2, help="SGD learning rate of the real-step check")
    parser.add_argument("--seed", type=int, default=0)
    args, overrides = parser.parse_known_args()
    torch.manual_seed(args.seed)
    cfg, bundle, task, sampler, render = load(overrides)
    model, tok = bundle.model, bundle.tokenizer
    model.eval()
    alphas = [float(a) for a in args.alphas.split(",")]
    (decision_id,) = tok(args.decision, add_special_tokens=False).input_ids
    heldout = [render(e.question) for e in task.val_examples()[:args.heldout]]
    unit, h_norm, p_heldout = direction(model, tok, heldout, decision_id, sampler.temperature)
    base = [p.detach().clone() for p in model.parameters()]
    heldout_lp = {"temperature": sampler.temperature,
                  "fn": lambda m: decision_logprob(m, tok, heldout, decision_id, sampler.temperature)}
    with torch.no_grad():
        heldout_lp["before"] = float(heldout_lp["fn"](model))
    grams = build(cfg.planner, tokenizer=tok)
    placebo = RandomPlaceboDetector(tok, grams_path=cfg.planner.get("grams_path"), seed=args.seed)
    G, P = int(cfg.algorithm.group_size), int(cfg.prompts_per_step)
    train = task.train_examples()
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed)).tolist()
    rows, checks, start = [], [], time.perf_counter()
    for b in range(args.batches):
        examples = [train[i] for i in order[b * P:(b + 1) * P]]
        rollout = sampler.generate(model, tok, [render(e.question) for e in examples], G)
        ids = rollout.response_ids.masked_fill(~rollout.response_mask, tok.pad_token_id)
        texts = tok.batch_decode(ids, skip_special_tokens=True)
        cut = None if cfg.score_truncated else rollout.truncated.tolist()  # strict, as training scores
        scored = score_completions(task, texts, [e for e in examples for _ in range(G)], cut)
        rewards = shaped_rewards(torch.tensor(scored.scores), torch.tensor(scored.in_form), cfg.format_reward)
        adv = group_advantages(rewards, G)  # (B,)
        marks = grams.mask(rollout.response_ids, rollout.response_mask)  # (B,T)
        random_marks = placebo.mask(rollout.response_ids, rollout.response_mask)  # (B,T) same count per reply
        valid = rollout.response_mask.float()
        with torch.no_grad():
            shifted(model, unit, args.eps, base)
            plus, _ = sequence_logprobs(model, rollout, False, sampler.temperature)
            shifted(model, unit, -args.eps, base)
            minus, _ = sequence_logprobs(model, rollout, False, sampler.temperature)
            shifted(model, unit, 0.0, base)
        D = (plus - minus) / (2 * args.eps) * valid  # (B,T) grad log pi(y_it) . h/|h|
        N = float(valid.sum())
        plans = [t.lstrip().lower().startswith(args.plan_prefix) for t in texts]
        row = {"batch": b, "plan_frac": sum(plans) / len(plans), "accuracy": sum(s >= 1 for s in scored.scores) / len(texts),
               "marked_frac": float((marks & rollout.response_mask).sum()) / N,
               "grpo": float((token_weights(adv, marks, 0.0) * D).sum()) / N * h_norm}
        for a in alphas:
            row[f"hicra_{a}"] = float((token_weights(adv, marks, a) * D).sum()) / N * h_norm
            row[f"placebo_{a}"] = float((token_weights(adv, random_marks, a) * D).sum()) / N * h_norm
        rows.append(row)
        if b < args.check:  # real SGD steps: measured vs first-order change of the held-out decision log-prob
            for name, w in (("grpo", token_weights(adv, marks, 0.0)), (f"hicra_{alphas[0]}", token_weights(adv, marks, alphas[0]))):
                measured = sgd_change(model, rollout, w, valid, args.lr, base, heldout_lp)
                checks.append({"batch": b, "arm": name, "measured": measured, "first_order": args.lr * row[name]})
        print(f"batch {b}: plan {row['plan_frac']:.2f} acc {row['accuracy']:.2f} marked {row['marked_frac']:.3f} "
              f"grpo {row['grpo']:+.4f} hicra {row[f'hicra_{alphas[0]}']:+.4f}  {time.perf_counter() - start:.0f}s",
              flush=True)
    p_plan = sum(r["plan_frac"] for r in rows) / len(rows)
    summary = {"batches": len(rows), "prompts_per_batch": P, "group_size": G, "heldout_prompts": len(heldout),
               "heldout_decision_prob": p_heldout, "sampled_plan_frac": p_plan,
               "marked_token_frac": sum(r["marked_frac"] for r in rows) / len(rows),
               "grpo_change_per_lr": sum(r["grpo"] for r in rows) / len(rows), "arms": {}}
    grpo = [r["grpo"] for r in rows]
    for a in alphas:
        for arm in ("hicra", "placebo"):
            values = [r[f"{arm}_{a}"] for r in rows]
            low, high = bootstrap_ratio(values, grpo) if sum(grpo) else (math.nan, math.nan)
            summary["arms"][f"{arm}_{a}"] = {"ratio_to_grpo": sum(values) / sum(grpo) if sum(grpo) else math.nan,
                                             "ci95": [low, high],
                                             "predicted_1_plus_alpha_1_minus_p": 1 + a * (1 - p_plan)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": vars(args) | {"out": str(args.out), "overrides": overrides},
                                    "summary": summary, "checks": checks, "batches": rows}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
