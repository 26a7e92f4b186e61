"""Probe the base model (SmolLM2-135M-Instruct) on candidate planning-rich tasks before choosing one (issue 27).

For each candidate: the prompt shows two worked examples as chat turns (user / assistant pairs), one answering
directly and one opening "Step by step: ...", then asks a new question. The model samples G replies per question
(T 0.7, strict \\boxed{} scoring, as training samples them). Reported: strict accuracy, the share of replies that
plan (open with "Step by step"), accuracy given a plan vs given a direct answer (with 95% Wilson intervals), boxed and
truncated shares. A task where HICRA has something to act on needs a plan share well below 1 and a plan that helps.

    python experiments/planning_task_probe/probe.py --out experiments/planning_task_probe/results.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hicra.metrics.stats import wilson_interval
from hicra.models.loaders import load_pretrained
from hicra.rollout.hf import HFSampler
from hicra.tasks import ReasoningGymTask
from hicra.tasks.scoring import score_completions

INSTRUCTION = "Give the final answer in \\boxed{}."
ASK = "State the final answer to the following arithmetic problem: "


def chat_turns(dataset: str, shots: list[tuple[str, str]]) -> list[dict]:
    """Worked examples as chat turns: (expression, the assistant's reply), each asked as the dataset asks."""
    ask = ASK if dataset == "chain_sum" else "Calculate "
    end = " =" if dataset == "chain_sum" else "."
    return [m for expr, reply in shots for m in ({"role": "user", "content": f"{ask}{expr}{end}\n\n{INSTRUCTION}"},
                                                 {"role": "assistant", "content": reply})]


def direct(answer: int) -> str:
    return f"The answer is \\boxed{{{answer}}}."


# name: (reasoning-gym dataset, its difficulty, keep a question? (None = all), worked examples: direct, then stepwise)
CANDIDATES = {
    "sum4x1_mixed": ("chain_sum", {"min_terms": 4, "max_terms": 4, "min_digits": 1, "max_digits": 1}, None,
                     [("2 + 6 - 3 + 5", direct(10)),
                      ("7 - 4 + 8 + 1", "Step by step: 7 - 4 = 3, 3 + 8 = 11, 11 + 1 = 12. " + direct(12))]),
    "sum4x1_add": ("chain_sum", {"min_terms": 4, "max_terms": 4, "min_digits": 1, "max_digits": 1}, "no_minus",
                   [("2 + 6 + 3 + 5", direct(16)),
                    ("7 + 4 + 8 + 1", "Step by step: 7 + 4 = 11, 11 + 8 = 19, 19 + 1 = 20. " + direct(20))]),
    "sum5x1_add": ("chain_sum", {"min_terms": 5, "max_terms": 5, "min_digits": 1, "max_digits": 1}, "no_minus",
                   [("2 + 6 + 3 + 5 + 4", direct(20)),
                    ("7 + 4 + 8 + 1 + 6", "Step by step: 7 + 4 = 11, 11 + 8 = 19, 19 + 1 = 20, 20 + 6 = 26. "
                     + direct(26))]),
    "sum3x2_add": ("chain_sum", {"min_terms": 3, "max_terms": 3, "min_digits": 2, "max_digits": 2}, "no_minus",
                   [("23 + 46 + 15", direct(84)),
                    ("37 + 24 + 58", "Step by step: 37 + 24 = 61, 61 + 58 = 119. " + direct(119))]),
    # the same sums from basic_arithmetic, which draws + alone natively (a shippable task option, no filter)
    "add4x1_ba": ("basic_arithmetic", {"min_terms": 4, "max_terms": 4, "min_digits": 1, "max_digits": 1, "operators": ("+",),
                                           "allow_parentheses": False, "allow_negation": False}, None,
                  [("2 + 6 + 3 + 5", direct(16)),
                   ("7 + 4 + 8 + 1", "Step by step: 7 + 4 = 11, 11 + 8 = 19, 19 + 1 = 20. " + direct(20))]),
    # operator precedence: answering left to right is wrong whenever a * follows a + (reasoning-gym 0.1.19's gold
    # answers for these ignore precedence without parentheses: not a usable task, kept to show why)
    "prec3x1": ("basic_arithmetic", {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1, "operators": ("+", "*"),
                                         "allow_parentheses": False, "allow_negation": False}, "mixed_ops",
                [("6 + 2 * 4", direct(14)),
                 ("3 + 5 * 7", "Step by step: multiply first, 5 * 7 = 35, then 3 + 35 = 38. " + direct(38))]),
    "prec4x1": ("basic_arithmetic", {"min_terms": 4, "max_terms": 4, "min_digits": 1, "max_digits": 1, "operators": ("+", "*"),
                                         "allow_parentheses": False, "allow_negation": False}, "mixed_ops",
                [("6 + 2 * 4 + 1", direct(15)),
                 ("3 + 5 * 7 + 2", "Step by step: multiply first, 5 * 7 = 35, then 3 + 35 = 38, 38 + 2 = 40. "
                  + direct(40))]),
}


KEEP = {None: lambda q: True,
        "no_minus": lambda q: "-" not in q.split(":")[1],  # chain_sum draws + and -: addition alone
        "mixed_ops": lambda q: "+" in q and "*" in q}  # precedence matters only with both operators


def questions(dataset: str, difficulty: dict, keep: str | None, count: int, seed: int):
    task = ReasoningGymTask(dataset=dataset, train_size=4000 if keep else count, val_size=8, seed=seed,
                            instruction=INSTRUCTION, **difficulty)
    examples = [e for e in task.train_examples() if KEEP[keep](e.question)]
    return task, examples[:count]


def probe(name: str, bundle, sampler: HFSampler, count: int, group: int, seed: int, stepwise_last: bool) -> dict:
    dataset, difficulty, keep, examples_shown = CANDIDATES[name]
    task, examples = questions(dataset, difficulty, keep, count, seed)
    shots = chat_turns(dataset, examples_shown if stepwise_last else examples_shown[::-1])
    tok = bundle.tokenizer
    prompts = [tok.apply_chat_template([{"role": "system", "content": "Solve the arithmetic problem."}, *shots,
                                        {"role": "user", "content": f"{e.question}\n\n{INSTRUCTION}"}],
                                       tokenize=False, add_generation_prompt=True) for e in examples]
    torch.manual_seed(seed)
    start = time.perf_counter()
    texts, truncated = [], []
    for i in range(0, len(prompts), 8):  # 8 questions x G replies per generation
        rollout = sampler.generate(bundle.model, tok, prompts[i:i + 8], group)
        ids = rollout.response_ids.masked_fill(~rollout.response_mask, tok.pad_token_id)
        texts += tok.batch_decode(ids, skip_special_tokens=True)
        truncated += rollout.truncated.tolist()
    per_reply = [e for e in examples for _ in range(group)]
    scored = score_completions(task, texts, per_reply, truncated)
    plans = [t.lstrip().lower().startswith("step by step") for t in texts]
    correct = [s >= 1.0 for s in scored.scores]

    def rate(selected: list[bool]) -> dict:
        n = sum(selected)
        k = sum(c for c, s in zip(correct, selected) if s)
        low, high = wilson_interval(k, n) if n else (float("nan"), float("nan"))
        return {"n": n, "correct": k, "accuracy": k / n if n else float("nan"), "ci95": [low, high]}

    return {"candidate": name, "stepwise_example_last": stepwise_last, "questions": len(examples), "replies": len(texts),
            "accuracy": sum(correct) / len(texts), "plan_frac": sum(plans) / len(texts),
            "given_plan": rate(plans), "given_direct": rate([not p for p in plans]),
            "boxed_frac": sum(scored.in_form) / len(texts), "truncated_frac": sum(truncated) / len(texts),
            "seconds": round(time.perf_counter() - start, 1),
            "samples": [{"question": e.question, "answer": e.answer, "reply": t}
                        for e, t in list(zip(per_reply, texts))[:: group * 6][:8]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stepwise-first", action="store_true", help="show the stepwise example before the direct one")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    bundle = load_pretrained("bundled://smollm2-135m-instruct")
    sampler = HFSampler(temperature=0.7, max_new_tokens=args.max_new_tokens)
    results = json.loads(args.out.read_text()) if args.out.exists() else []
    for name in args.candidates.split(","):
        row = probe(name, bundle, sampler, args.questions, args.group, args.seed, not args.stepwise_first)
        results = [r for r in results if (r["candidate"], r["stepwise_example_last"]) !=
                   (name, row["stepwise_example_last"])] + [row]
        args.out.write_text(json.dumps(results, indent=1))
        print(f"{name:14s} acc {row['accuracy']:.3f}  plan {row['plan_frac']:.2f}  "
              f"acc|plan {row['given_plan']['accuracy']:.3f} (n={row['given_plan']['n']})  "
              f"acc|direct {row['given_direct']['accuracy']:.3f} (n={row['given_direct']['n']})  "
              f"boxed {row['boxed_frac']:.2f}  trunc {row['truncated_frac']:.2f}  {row['seconds']}s", flush=True)


if __name__ == "__main__":
    main()
