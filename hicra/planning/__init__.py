"""Planning-token detectors.

A *planning token* is a response token that carries high-level strategy - deduction, branching, backtracking,
self-checking ("let's try a different angle", "but wait", "we can use the fact that") - as opposed to an
*execution token* (arithmetic, substitution, formatting). Following the HICRA paper (S3), a token is a planning
token iff it is part of an occurrence of a Strategic Gram in the sampled response; HICRA then scales the advantage of
exactly these tokens. Every detector returns a (B, T) bool mask that is False outside the response mask.

* `StrategicGramDetector` - the paper's definition (249 grams by default, or a custom list/file).
* `HighEntropyDetector`   - baseline: the top-rho highest-entropy ("forking") tokens of each response.
* `RandomPlaceboDetector` - control ("Placebo HICRA"): random tokens/spans, as many per response as the grams mark.
* `UnionDetector`         - strategic grams OR high-entropy tokens.
* `AuthorsRuleDetector`   - grams in every response, plus the top-30% entropy tokens of correct responses longer
  than their group's mean (not the paper's: the rule a public port attributes to the authors' code).
* `NullDetector`          - marks nothing (GRPO); `marks_planning` is False so HICRA refuses it.
"""

from hicra.planning.authors_rule import AuthorsRuleDetector
from hicra.planning.base import NullDetector, PlanningDetector
from hicra.planning.high_entropy import HighEntropyDetector
from hicra.planning.random_placebo import RandomPlaceboDetector
from hicra.planning.strategic_grams import StrategicGramDetector, compile_grams, find_gram_spans, load_grams
from hicra.planning.union import UnionDetector

__all__ = [
    "AuthorsRuleDetector",
    "HighEntropyDetector",
    "NullDetector",
    "PlanningDetector",
    "RandomPlaceboDetector",
    "StrategicGramDetector",
    "UnionDetector",
    "compile_grams",
    "find_gram_spans",
    "load_grams",
]
