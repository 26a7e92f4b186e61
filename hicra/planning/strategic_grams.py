"""Strategic-Gram detector: a token is a planning token iff it overlaps an occurrence of a Strategic Gram (paper S3).

Matching rules (the paper leaves them open; these are ours):
* case-insensitive;
* a gram matches only as whole words: the characters just before and just after the occurrence must not be a
  letter, digit or underscore (lookarounds, not `\\b`, so grams that start or end with punctuation - "## step",
  "hmm,", "does this make sense?" - behave the same way). "so" does not match "also" or "sofa";
* whitespace inside a gram matches any run of whitespace (space, newline, tab); everything else is literal, except
  that an apostrophe also matches the typographic one (let's = let’s);
* overlaps: at each start position the longest matching gram is taken, and occurrences nested inside an earlier one
  are dropped ("but wait" hides "but" and "wait" inside it), while partly overlapping occurrences are all kept, so
  the union of the spans covers every character any gram matches.

Token alignment: text and offsets come from the sampled ids (`token_text.TokenText`), never from re-encoding.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import torch

from hicra.errors import ConfigError
from hicra.planning.base import check_inputs
from hicra.planning.token_text import TokenText

PAPER_GRAMS = "strategic_grams_paper.txt"
_APOSTROPHES = "'\u2019"


# --- grams ---


def _normalise(gram: str) -> str:
    # A byte-order mark is no character of a gram: Windows editors start a file with one (and concatenated files
    # carry it into a line), and the first gram would otherwise never match.
    return " ".join(gram.replace("\ufeff", "").replace("\u2019", "'").lower().split())


def _clean(raw: list[str]) -> list[str]:
    """Strip, collapse whitespace, lower-case, drop BOMs and blank lines, dedupe keeping the first occurrence."""
    return list(dict.fromkeys(g for g in (_normalise(r) for r in raw) if g))


BUNDLED = "bundled://"  # a gram file shipped in hicra/planning/data/, e.g. bundled://placebo_grams_chain_sum.txt


def load_grams(path: str | None = None) -> list[str]:
    """The paper's 249 grams (path=None), a file shipped with hicra (`bundled://<name>`), or a UTF-8 text file with
    one gram per line (a byte-order mark and blank lines are skipped). There is no comment syntax: "## step" is a
    gram. Raises ConfigError for a missing file, one that is not UTF-8 text, or one without any gram."""
    if path is None or str(path).startswith(BUNDLED):
        name = PAPER_GRAMS if path is None else str(path)[len(BUNDLED):]
        data = resources.files("hicra.planning").joinpath("data", name)
        if not data.is_file():
            shipped = sorted(f.name for f in resources.files("hicra.planning").joinpath("data").iterdir()
                             if f.name.endswith(".txt"))
            raise ConfigError(f"no bundled gram file '{name}'; allowed: {', '.join(BUNDLED + s for s in shipped)}")
        text = data.read_text(encoding="utf-8")
        where = f"package data {name}"
    else:
        file = Path(path).expanduser()
        if not file.is_file():
            raise ConfigError(f"strategic grams file not found: {path}")
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"strategic grams file {path} is not UTF-8 text (byte {err.start}); allowed: a text "
                              f"file with one gram per line") from None
        where = str(path)
    grams = _clean(text.splitlines())
    if not grams:
        raise ConfigError(f"strategic grams file has no grams (one per line expected): {where}")
    return grams


_WORD_SEPARATOR = r"(?:\s*-\s*|\s+)"  # between two words of a gram: any whitespace run, or a hyphen


def _atom(char: str) -> str:
    if char == " ":
        return _WORD_SEPARATOR
    if char == "'":
        return f"[{_APOSTROPHES}]"
    return re.escape(char)


def _trie_regex(node: dict) -> str:
    """Regex for a character trie; a node where a gram ends makes the rest optional (greedy = longest first)."""
    branches = [_atom(c) + _trie_regex(child) for c, child in sorted(node.items()) if c]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if "" in node else body


def compile_grams(grams: list[str]) -> re.Pattern:
    """One pattern finding, at every start position, the longest gram that matches there (group 1).

    The grams form a character trie, so each position costs a few character tests instead of one per gram. The
    pattern sits inside a lookahead, so `finditer` also reports occurrences overlapping earlier ones. Where a gram
    ends inside a longer one ("so" / "so after") the continuation is a greedy optional: the longest gram is tried
    first, and because the closing (?!\\w) is inside the lookahead a failed boundary ("so after" + "math")
    backtracks to the shorter gram.
    """
    cleaned = _clean(list(grams))
    if not cleaned:
        raise ConfigError("strategic grams: the list of grams is empty")
    trie: dict = {}
    for gram in cleaned:
        # Words joined by a hyphen are the same phrase: a policy that writes "Step-by-step" still plans ("step by
        # step"), and "let's double-check" is "let's double check". So a gram's hyphen is a space, which matches either.
        gram = " ".join(gram.replace("-", " ").split())
        node = trie
        for char in gram:
            node = node.setdefault(char, {})
        node[""] = {}  # end-of-gram marker
    return re.compile(rf"(?<!\w)(?=({_trie_regex(trie)})(?!\w))", re.IGNORECASE)


def find_gram_spans(text: str, pattern: re.Pattern) -> list[tuple[int, int]]:
    """Character spans [start, end) of gram occurrences in `text`, sorted by start, none nested in another."""
    spans: list[tuple[int, int]] = []
    reach = 0  # furthest end seen so far
    for m in pattern.finditer(text):
        start, end = m.span(1) if pattern.groups else m.span()
        if end > reach and end > start:
            spans.append((start, end))
            reach = end
    return spans


def occurrence_text(text: str, span: tuple[int, int]) -> str:
    """A matched occurrence as a gram string: lower-case, single spaces (a hyphen between words too), straight
    apostrophes: "Step-by-step" and "step by step" are one phrase."""
    return _normalise(re.sub(_WORD_SEPARATOR, " ", text[span[0] : span[1]]))


# Words of the text after a gram (conditional-entropy diagnostic): maximal runs of letters, digits, apostrophes
# (straight or typographic) and math symbols; everything else (spaces, punctuation, brackets, backslashes, $) only
# separates words. "\frac{3}{4}" -> frac, 3, 4;  "x^2+1=5." -> "x^2+1=5";  "let's" -> "let's".
_WORD = re.compile(r"(?:[^\W_]|['\u2019+\-*/=<>^%±×÷·√∞≈≠≤≥∑∏∫∂])+")


def _following(text: str, end: int, n: int) -> str:
    """The first `n` words of `text[end:]`, lower-case, straight apostrophes, joined by single spaces ('' if none)."""
    words = []
    if n > 0:
        for m in _WORD.finditer(text, end):
            words.append(m.group(0))
            if len(words) == n:
                break
    return " ".join(words).replace("\u2019", "'").lower()


# --- detector ---


def tokens_in_spans(
    starts: torch.Tensor,  # (n,) long, nondecreasing
    ends: torch.Tensor,  # (n,) long, nondecreasing
    spans: list[tuple[int, int]],
) -> torch.Tensor:  # (n,) bool: token's [start, end) overlaps some span
    n = starts.numel()
    if not spans or n == 0:
        return torch.zeros(n, dtype=torch.bool)
    s = torch.tensor([a for a, _ in spans], dtype=torch.long)
    e = torch.tensor([b for _, b in spans], dtype=torch.long)
    first = torch.searchsorted(ends, s, right=True)  # first token with end > s
    stop = torch.searchsorted(starts, e, right=False)  # tokens before this one start before e
    keep = first < stop  # always true for spans inside the text; guards the difference array
    first, stop = first[keep], stop[keep]
    diff = torch.zeros(n + 1, dtype=torch.long)
    diff.index_add_(0, first, torch.ones_like(first))
    diff.index_add_(0, stop, -torch.ones_like(stop))
    covered = torch.cumsum(diff[:n], 0) > 0
    return covered & (ends > starts)  # empty tokens (special, partial UTF-8) overlap nothing


class StrategicGramDetector:
    """Planning tokens = tokens overlapping a Strategic Gram occurrence in the response text.

    `tokenizer`: any HF tokenizer (only `len`, `convert_ids_to_tokens`, `all_special_ids`, `added_tokens_decoder`
    and, for unknown vocab schemes, `decode` are used). `grams` / `grams_path`: a custom list or file; both None =
    the paper's 249 grams.
    """

    needs_entropy = False
    marks_planning = True

    def __init__(self, tokenizer, grams: list[str] | None = None, grams_path: str | None = None):
        if grams is not None and grams_path is not None:
            raise ConfigError("strategic grams: give either grams or grams_path, not both")
        self.grams = _clean(list(grams)) if grams is not None else load_grams(grams_path)
        if not self.grams:
            raise ConfigError("strategic grams: the list of grams is empty")
        self.pattern = compile_grams(self.grams)
        self.token_text = TokenText(tokenizer)

    def _response_spans(self, ids: torch.Tensor, valid: torch.Tensor):
        """Per response: positions of its valid tokens, their char spans, the text and its gram spans."""
        for b in range(ids.shape[0]):
            positions = valid[b].nonzero().squeeze(1)  # (n,)
            text, starts, ends = self.token_text.spans(ids[b, positions])
            yield b, positions, starts, ends, text, find_gram_spans(text, self.pattern)

    def mask(
        self,
        response_ids: torch.Tensor,  # (B, T) long
        response_mask: torch.Tensor,  # (B, T) bool
        entropies: torch.Tensor | None = None,  # unused
        correctness: torch.Tensor | None = None,  # unused
    ) -> torch.Tensor:  # (B, T) bool
        valid = check_inputs(response_ids, response_mask).cpu()
        ids = response_ids.detach().cpu()
        out = torch.zeros(ids.shape, dtype=torch.bool)
        for b, positions, starts, ends, _, spans in self._response_spans(ids, valid):
            out[b, positions[tokens_in_spans(starts, ends, spans)]] = True
        return out.to(response_ids.device)

    def occurrences(self, response_ids: torch.Tensor, response_mask: torch.Tensor) -> list[list[str]]:
        """Matched grams per response, in order (lower-case, whitespace-normalised): input to semantic entropy."""
        valid = check_inputs(response_ids, response_mask).cpu()
        found: list[list[str]] = [[] for _ in range(response_ids.shape[0])]
        for b, _, _, _, text, spans in self._response_spans(response_ids.detach().cpu(), valid):
            found[b] = [occurrence_text(text, span) for span in spans]
        return found

    def occurrences_with_context(
        self, response_ids: torch.Tensor, response_mask: torch.Tensor, following_words: int = 3
    ) -> list[list[tuple[str, str]]]:
        """Per response, (gram, next words) for each occurrence, in order: input to the conditional entropy.

        `gram` is the occurrence as `occurrences` gives it; `next words` are the first `following_words` words of the
        response text after the occurrence's end (see `_WORD` for what a word is), lower-case and joined
        by single spaces; '' when the response ends first. Words may belong to a later gram occurrence.
        """
        if not (isinstance(following_words, int) and following_words >= 0):
            raise ValueError(f"following_words={following_words!r} is invalid; allowed: an int >= 0")
        valid = check_inputs(response_ids, response_mask).cpu()
        found: list[list[tuple[str, str]]] = [[] for _ in range(response_ids.shape[0])]
        for b, _, _, _, text, spans in self._response_spans(response_ids.detach().cpu(), valid):
            found[b] = [(occurrence_text(text, span), _following(text, span[1], following_words)) for span in spans]
        return found

    def __repr__(self) -> str:
        return f"StrategicGramDetector({len(self.grams)} grams)"
