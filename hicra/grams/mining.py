"""Pure parts of Strategic-Gram mining: no model, no I/O.

Tokenisation rule (chosen so that every mined gram is found again by `hicra.planning.strategic_grams`, which
lower-cases, needs a non-word character on both sides of an occurrence and lets a gram's single space stand for
any whitespace run):

* text is lower-cased and the typographic apostrophe (U+2019) becomes "'";
* a word is a maximal run of word characters (letters, digits, underscore - the matcher's `\\w`) with apostrophes
  allowed *inside* it: "let's", "don't" and "x_1" are one word each; a leading or trailing quote is dropped;
* everything else (punctuation, maths symbols) is dropped, and an n-gram only joins words separated by spaces or
  tabs alone: a newline, a sentence end (. ! ?) or any other punctuation between two words ends the run of words
  n-grams are taken from. "So, let's try again." gives the runs ["so"] and ["let's", "try", "again"], so the
  only 3-gram is "let's try again". (Joining across a comma would mine "so let's try", which the matcher never finds
  in "so, let's try"; so a comma breaks a run too, not only a sentence break.)

An n-gram is its words joined by single spaces: exactly the form `load_grams` normalises a gram file to.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping

_WORD = re.compile(r"\w+(?:'\w+)*")
_SAME_RUN = re.compile(r"[ \t]*")  # what may separate two words of one n-gram
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")  # a sentence ends at . ! ? before whitespace, or at a line break


def word_runs_with_spans(text: str) -> list[list[tuple[str, int, int]]]:
    """Runs of words that n-grams may span (see the module docstring): (word, start, end) with `text[start:end]`
    the word as written; the word itself is lower-case."""
    text = text.replace("\u2019", "'")  # one character for one: offsets stay those of `text`
    runs: list[list[tuple[str, int, int]]] = []
    current: list[tuple[str, int, int]] = []
    last_end = None
    for m in _WORD.finditer(text):
        if last_end is not None and not _SAME_RUN.fullmatch(text, last_end, m.start()):
            runs.append(current)
            current = []
        current.append((m.group().lower(), m.start(), m.end()))
        last_end = m.end()
    if current:
        runs.append(current)
    return runs


def word_runs(text: str) -> list[list[str]]:
    """Runs of words that n-grams may span (see the module docstring), lower-case."""
    return [[word for word, _, _ in run] for run in word_runs_with_spans(text)]


def ngrams(text: str, min_n: int = 3, max_n: int = 5) -> list[str]:
    """Every word n-gram of `text` with min_n <= n <= max_n, in text order, repeats kept."""
    out: list[str] = []
    for run in word_runs(text):
        for n in range(min_n, max_n + 1):
            out.extend(" ".join(run[i : i + n]) for i in range(len(run) - n + 1))
    return out


def drop_answer_sentence(text: str, marker: str = "\\boxed{") -> str:
    """`text` without its sentences that hold `marker` (the final answer in the asked form): "19 + 1 = 20. The answer
    is \\boxed{20}." -> "19 + 1 = 20.". Such a sentence restates the answer in the form the prompt demonstrates, so
    in a corpus of short replies its n-grams ("the answer is") are in every solution and win the Cluster DF on
    frequency alone. A text without the marker is returned unchanged."""
    if marker not in text:
        return text
    sentences = [s for s in _SENTENCE_END.split(text) if s]
    return "\n".join(s for s in sentences if marker not in s)  # a line break: no n-gram spans a dropped sentence


def doc_ngrams(text: str, min_n: int = 3, max_n: int = 5) -> set[str]:
    """The distinct n-grams of one document."""
    return set(ngrams(text, min_n, max_n))


def document_frequency(texts: Iterable[str], min_n: int = 3, max_n: int = 5) -> Counter:
    """gram -> number of documents containing it."""
    df: Counter = Counter()
    for text in texts:
        df.update(doc_ngrams(text, min_n, max_n))
    return df


def prefilter(df: Mapping[str, int], min_df: int, max_grams: int) -> list[str]:
    """Grams with DF >= min_df, the max_grams most frequent, ordered by DF desc then gram (deterministic)."""
    kept = [g for g, c in df.items() if c >= min_df]
    kept.sort(key=lambda g: (-df[g], g))
    return kept[:max_grams]


def cluster_document_frequency(doc_gram_sets: Iterable[Iterable[str]], labels: Mapping[str, int]) -> Counter:
    """Cluster DF (paper S3): cluster -> number of documents containing at least one gram of the cluster.

    `doc_gram_sets`: the n-grams of each document (grams without a label are ignored); `labels`: gram -> cluster.
    """
    cdf: Counter = Counter()
    for grams in doc_gram_sets:
        cdf.update({labels[g] for g in grams if g in labels})
    return cdf


def select_clusters(cluster_df: Mapping[int, int], members: Mapping[int, list[str]], top_fraction: float) -> list[int]:
    """The ceil(top_fraction * n_clusters) clusters (at least one) with the highest Cluster DF.

    Ties are broken by the cluster's alphabetically first gram, so the choice does not depend on label numbering.
    Clusters absent from `cluster_df` have DF 0. Returned in the same order (DF desc, first gram).
    """
    clusters = sorted(members, key=lambda c: (-cluster_df.get(c, 0), min(members[c])))
    keep = max(1, math.ceil(top_fraction * len(clusters) - 1e-9))
    return clusters[:keep]


def selected_grams(kept: list[int], members: Mapping[int, list[str]], cluster_df: Mapping[int, int]) -> list[str]:
    """Union of the kept clusters' grams, sorted by Cluster DF desc then gram."""
    rows = {g: cluster_df.get(c, 0) for c in kept for g in members[c]}
    return sorted(rows, key=lambda g: (-rows[g], g))
