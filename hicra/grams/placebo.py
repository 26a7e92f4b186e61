"""The paper's Placebo HICRA list: random n-grams used in place of the Strategic Grams (a fixed list, so the same
phrases are reinforced every step), marking as many tokens as the grams do and none of theirs. No model, no I/O.

The corpus is the task's own completions, seen as the detector sees them (`Response`: text decoded from token ids,
each token's character span), so "a gram marks a token" means exactly what `StrategicGramDetector.mask` does.

Candidates. The n-grams of the corpus (words and runs as `hicra.grams.mining` counts them, so every drawn gram is
found again by the matcher) of the word lengths the reference grams have, found in at least `min_df` texts (mining's
document-frequency filter), except those that

1. contain a Strategic Gram: the reference grams' matcher finds a gram in the n-gram's own text ("so the answer is"
   holds the gram "so"), or
2. overlap one: some occurrence of the n-gram in the corpus has a word that shares a character with a gram match in
   that text (with "so" a gram, "answer so" is out even if it held no gram itself).

Draw. Candidates come one at a time in a seeded random order: a word length drawn with probability proportional to
the reference's count of grams of that length (among lengths with candidates left), then that length's next
candidate in a seeded shuffle. A candidate joins the list unless it marks a token the grams mark (3: a token that
straddles a gram match and a word next to it), adds no marked token, or would lift the placebo's marked-token share
above the grams' share times (1 + tolerance). The draw stops once the share is at least the grams' share times
(1 - tolerance), or when no candidate is left (the caller says the corpus could not match). The placebo and the
grams then mark disjoint sets of tokens of the corpus, of about the same size.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from hicra.grams.mining import document_frequency, word_runs, word_runs_with_spans
from hicra.planning.strategic_grams import compile_grams, find_gram_spans, tokens_in_spans
from hicra.planning.token_text import TokenText


@dataclass(frozen=True)
class Response:
    """One corpus text as the detector sees it: decoded from its token ids, with each token's character span."""

    text: str
    starts: torch.Tensor  # (n,) long
    ends: torch.Tensor  # (n,) long


@dataclass(frozen=True)
class PlaceboDraw:
    grams: list[str]  # by word length, then alphabetical
    by_word_length: dict[int, dict[str, int]]  # n -> {"reference": grams of n words, "pool": candidates, "drawn"}
    excluded: int  # frequent n-grams left out for containing or overlapping a Strategic Gram (rules 1, 2)
    tokens: int  # tokens of the corpus
    gram_tokens: int  # tokens the reference grams mark
    placebo_tokens: int  # tokens the drawn list marks
    both_tokens: int  # tokens both mark: 0 by rule 3

    def within(self, tolerance: float) -> bool:
        """The placebo's share is within `tolerance` (relative) of the grams' share."""
        return self.gram_tokens > 0 and abs(self.placebo_tokens - self.gram_tokens) <= tolerance * self.gram_tokens


def word_length(gram: str) -> int:
    """Words of a gram as mining counts them ("## step" -> 1, "let's try" -> 2); at least 1."""
    return max(1, sum(len(run) for run in word_runs(gram)))


def tokenize(texts: list[str], tokenizer) -> list[Response]:
    """The texts as a model's replies: their token ids (no special tokens), decoded back as the detector does."""
    token_text = TokenText(tokenizer)
    responses = []
    for text in texts:
        ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
        responses.append(Response(*token_text.spans(ids)))
    return responses


def marked_tokens(responses: list[Response], grams: list[str]) -> torch.Tensor:  # (tokens of all responses,) bool
    """What `StrategicGramDetector` with `grams` marks, every response's tokens one after another."""
    pattern = compile_grams(grams)
    return _marks(responses, [find_gram_spans(r.text, pattern) for r in responses])


def _marks(responses: list[Response], spans: list[list[tuple[int, int]]]) -> torch.Tensor:
    return torch.cat([torch.zeros(0, dtype=torch.bool),
                      *(tokens_in_spans(r.starts, r.ends, s) for r, s in zip(responses, spans))])


def overlapping_ngrams(responses: list[Response], gram_spans: list[list[tuple[int, int]]],
                       lengths: set[int]) -> set[str]:
    """Rule 2: n-grams (of these word lengths) with an occurrence holding a word that overlaps a gram match."""
    out: set[str] = set()
    for response, spans in zip(responses, gram_spans):
        if not spans:
            continue
        for run in word_runs_with_spans(response.text):
            hit = [any(s < end and start < e for s, e in spans) for _, start, end in run]
            for n in lengths:
                out.update(" ".join(w for w, _, _ in run[i : i + n]) for i in range(len(run) - n + 1)
                           if any(hit[i : i + n]))
    return out


def _draw_order(pools: dict[int, list[str]], weights: Counter, rng: random.Random) -> Iterator[str]:
    """Candidates one at a time: a word length with probability proportional to its weight, then its next one."""
    left = {n: rng.sample(pool, len(pool)) for n, pool in sorted(pools.items()) if pool}
    while left:
        lengths = sorted(left)
        n = rng.choices(lengths, weights=[weights[m] for m in lengths])[0]
        yield left[n].pop()
        if not left[n]:
            del left[n]


def draw_placebo_grams(responses: list[Response], reference: list[str], seed: int = 0, min_df: int = 3,
                       tolerance: float = 0.1) -> PlaceboDraw:
    """The placebo list for a corpus and the reference grams (see the module docstring for the rules)."""
    pattern = compile_grams(reference)
    gram_spans = [find_gram_spans(r.text, pattern) for r in responses]
    gram_marks = _marks(responses, gram_spans)
    total, target = gram_marks.numel(), int(gram_marks.sum())
    weights = Counter(word_length(g) for g in reference)
    overlapping = overlapping_ngrams(responses, gram_spans, set(weights))
    texts = [r.text for r in responses]
    pools, excluded = {}, 0
    for n in sorted(weights):
        frequent = sorted(g for g, count in document_frequency(texts, n, n).items() if count >= min_df)
        pools[n] = [g for g in frequent if g not in overlapping and not find_gram_spans(g, pattern)]  # rules 2, 1
        excluded += len(frequent) - len(pools[n])
    union, drawn = torch.zeros(total, dtype=torch.bool), []
    for gram in _draw_order(pools, weights, random.Random(seed)):
        if int(union.sum()) >= (1 - tolerance) * target:
            break
        marks = marked_tokens(responses, [gram])
        grown = union | marks
        if (marks & gram_marks).any() or int(grown.sum()) == int(union.sum()) or \
                int(grown.sum()) > (1 + tolerance) * target:
            continue  # rule 3, nothing new, or past the grams' share
        union = grown
        drawn.append(gram)
    count = Counter(word_length(g) for g in drawn)
    return PlaceboDraw(
        grams=sorted(drawn, key=lambda g: (word_length(g), g)),
        by_word_length={n: {"reference": weights[n], "pool": len(pools[n]), "drawn": count[n]} for n in pools},
        excluded=excluded, tokens=total, gram_tokens=target, placebo_tokens=int(union.sum()),
        both_tokens=int((union & gram_marks).sum()))
