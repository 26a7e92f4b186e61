"""Hierarchy diagnostics of the paper (section 4), computed every step from the rollout the step already has.

No extra generation and no extra forward pass: token log-probs and entropies come from the update pass. The
planning/execution split always uses Strategic Grams (the paper's lens), whichever planner drives the advantage.
The maths lives in `hicra.metrics.diagnostics`; this class only gathers its inputs and keeps step-0 references.
"""

from __future__ import annotations

import math

from torch import Tensor

from hicra.metrics.diagnostics import (
    conditional_entropy_after_gram,
    masked_token_stats,
    pass_at_g,
    relative_perplexity,
    reply_share_with_marks,
    semantic_entropy,
    semantic_entropy_at,
    top_entropy_overlap,
)
from hicra.planning import StrategicGramDetector


class HierarchyDiagnostics:
    def __init__(self, tokenizer, grams_path: str | None = None, top_entropy_fraction: float = 0.3,
                 following_words: int = 3, semantic_entropy_occurrences: int = 32, seed: int = 0):
        self.detector = StrategicGramDetector(tokenizer, grams_path=grams_path)
        self.top_entropy_fraction, self.following_words = top_entropy_fraction, following_words
        self.semantic_entropy_occurrences, self.seed = semantic_entropy_occurrences, seed
        self.reference_nll: dict[str, float] = {}  # mean NLL at the first step, per token class
        self.steps = 0  # calls so far: each step's subsample has its own seed, and a resumed run continues the stream

    def __call__(self, response_ids: Tensor, response_mask: Tensor, rewards: Tensor, group_size: int,
                 logprobs: Tensor, entropies: Tensor) -> dict[str, float]:
        """All inputs are the step's rollout: ids/mask/logprobs/entropies (B,T), rewards (B,)."""
        grams = self.detector.mask(response_ids, response_mask)  # (B,T) the paper's planning tokens
        pairs = self.detector.occurrences_with_context(response_ids, response_mask, self.following_words)
        grams_per_response = [[gram for gram, _ in row] for row in pairs]
        metrics = {
            "hierarchy/semantic_entropy": semantic_entropy(grams_per_response),
            # the same at a fixed number of occurrences: comparable between arms whose replies hold more or fewer grams
            "hierarchy/semantic_entropy_at_n": semantic_entropy_at(grams_per_response, self.semantic_entropy_occurrences,
                                                               seed=self.seed * 1_000_003 + self.steps),
            "hierarchy/cond_entropy_after_gram": conditional_entropy_after_gram([p for row in pairs for p in row]),
            "train/pass_at_g": pass_at_g(rewards, group_size),
            "hierarchy/gram_reply_frac": reply_share_with_marks(grams, response_mask),
        }
        ent_plan, ent_exec = masked_token_stats(entropies, grams, response_mask)
        nll_plan, nll_exec = masked_token_stats(-logprobs, grams, response_mask)
        metrics |= {"hierarchy/entropy_planning": ent_plan, "hierarchy/entropy_execution": ent_exec,
                    "hierarchy/nll_planning": nll_plan, "hierarchy/nll_execution": nll_exec}
        for name, nll in (("planning", nll_plan), ("execution", nll_exec)):
            if name not in self.reference_nll and not math.isnan(nll):
                self.reference_nll[name] = nll  # the first step with such tokens is the reference
            reference = self.reference_nll.get(name)
            metrics[f"hierarchy/rel_ppl_{name}"] = (relative_perplexity(nll, reference)
                                                if reference is not None else float("nan"))
        in_top, top_in_plan = top_entropy_overlap(entropies, grams, response_mask, self.top_entropy_fraction)
        metrics |= {"hierarchy/planning_in_top_entropy_frac": in_top, "hierarchy/top_entropy_in_planning_frac": top_in_plan}
        self.steps += 1
        return metrics

    def state_dict(self) -> dict:
        """The first step's NLL references: without them a resumed run's relative perplexity would restart at 1."""
        return {"reference_nll": dict(self.reference_nll), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.reference_nll, self.steps = dict(state["reference_nll"]), int(state.get("steps", 0))
