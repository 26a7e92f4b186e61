"""The paper's Placebo HICRA list: random n-grams used in place of the Strategic Grams (a fixed list, so the same
phrases are reinforced every step). Pure: no model, no I/O.

The draw mirrors the grams it replaces: as many n-grams of each word length as the reference list has (the paper's
249: 19 one-word, 45 two-word, ... 6 six-word), taken uniformly at random, with a seed, from the n-grams of the
task's own completions that pass mining's document-frequency filter (in at least `min_df` completions, so a placebo
gram occurs about as often as a mined one can) and are not reference grams themselves. Words and n-grams follow
`hicra.grams.mining`, so every drawn gram is found again by the matcher. A corpus too uniform to supply a length
(chain_sum replies have no 6-word run) gives fewer grams of it; the report says how many.
"""

from __future__ import annotations

import random
from collections import Counter

from hicra.grams.mining import document_frequency, word_runs


def word_length(gram: str) -> int:
    """Words of a gram as mining counts them ("## step" -> 1, "let's try" -> 2); at least 1."""
    return max(1, sum(len(run) for run in word_runs(gram)))


def draw_placebo_grams(texts: list[str], reference: list[str], seed: int = 0,
                       min_df: int = 3) -> tuple[list[str], dict[int, dict[str, int]]]:
    """(placebo grams, {n: {"wanted", "drawn", "pool"}}) for a corpus `texts` and the reference gram list."""
    wanted = Counter(word_length(g) for g in reference)
    excluded = {" ".join(w for run in word_runs(g) for w in run) for g in reference}
    rng = random.Random(seed)
    grams, report = [], {}
    for n in sorted(wanted):
        df = document_frequency(texts, n, n)
        pool = sorted(g for g, count in df.items() if count >= min_df and g not in excluded)  # sorted: seed decides
        drawn = rng.sample(pool, min(wanted[n], len(pool)))
        grams += sorted(drawn)
        report[n] = {"wanted": wanted[n], "drawn": len(drawn), "pool": len(pool)}
    return grams, report
