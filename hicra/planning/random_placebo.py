"""Placebo detector: random tokens in the same amount as Strategic Grams would mark (the paper's "Placebo HICRA").

It answers "does HICRA help because of *which* tokens it amplifies, or merely because it amplifies some?". For each
batch an internal `StrategicGramDetector` runs on the same responses, and each response then gets exactly as many
marked tokens as the grams mark in *that response* (per-response matching, not per-batch: the credit HICRA moves
inside every response is then the same as with grams, only the positions differ; a per-batch fraction would shift
credit between responses, confounding position with amount). The marked tokens are random positions among the
response's valid tokens:

* mode="spans"  (default): random contiguous spans of 2-5 tokens, like gram occurrences, separated by at least one
  unmarked token whenever there is room (so each span stays a separate run); the lengths sum exactly to the target.
  Only a target of 1 token gives a 1-token span.
* mode="tokens": independent random positions.

`fraction` (in (0, 1]) replaces the matching: each response gets ceil(fraction * n_valid) marked tokens (the
`HighEntropyDetector` rounding rule) and no gram detector is built.

Randomness: one CPU `torch.Generator` seeded with `seed` and advanced by every `mask` call, so a run with the same
seed and the same batches marks the same tokens, and two seeds differ. Spans live in the index space of the valid
tokens (a response mask with holes is treated as if the valid tokens were adjacent).
"""

from __future__ import annotations

import math

import torch

from hicra.errors import ConfigError
from hicra.options import PLACEBO_MODES as MODES
from hicra.planning.base import check_inputs
from hicra.planning.strategic_grams import StrategicGramDetector

MIN_SPAN, MAX_SPAN = 2, 5  # gram occurrences are mostly 2-5 tokens long
_CEIL_EPS = 1e-9


class RandomPlaceboDetector:
    """Random planning tokens with the per-response count of Strategic Gram tokens (or a fixed `fraction`)."""

    needs_entropy = False
    marks_planning = True

    def __init__(
        self,
        tokenizer=None,
        mode: str = "spans",
        grams: list[str] | None = None,
        grams_path: str | None = None,
        seed: int = 0,
        fraction: float | None = None,
    ):
        if mode not in MODES:
            raise ConfigError(f"planner.mode={mode!r} is invalid; allowed: {', '.join(MODES)}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"planner.seed={seed!r} is invalid; allowed: an int")
        self.mode, self.seed = mode, seed
        if fraction is not None:
            if isinstance(fraction, bool) or not (
                isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0.0 < fraction <= 1.0
            ):
                raise ConfigError(f"planner.fraction={fraction!r} is invalid; allowed: null or a number in (0, 1]")
            if grams is not None or grams_path is not None:
                raise ConfigError("planner: fraction replaces gram matching; give grams/grams_path or fraction, not both")
            self.fraction: float | None = float(fraction)
            self.grams_detector = None
        else:
            if tokenizer is None:
                raise ConfigError("RandomPlaceboDetector matches Strategic Grams and needs the tokenizer (or fraction=)")
            self.fraction = None
            self.grams_detector = StrategicGramDetector(tokenizer, grams=grams, grams_path=grams_path)
        self.generator = torch.Generator().manual_seed(seed)

    def targets(self, response_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B,) long: how many tokens to mark in each response."""
        n_valid = valid.sum(dim=1)  # (B,)
        if self.fraction is None:
            return self.grams_detector.mask(response_ids, valid).cpu().sum(dim=1)
        k = torch.ceil(n_valid.double() * self.fraction - _CEIL_EPS).long()
        return torch.minimum(k, n_valid)

    def _span_lengths(self, k: int) -> list[int]:
        """Random lengths in [MIN_SPAN, MAX_SPAN] summing to k (a single 1 only when k == 1)."""
        lengths, remaining = [], k
        while remaining > 0:
            length = min(int(torch.randint(MIN_SPAN, MAX_SPAN + 1, (1,), generator=self.generator)), remaining)
            if remaining - length == 1:  # never leave a single token behind
                length = length + 1 if length < MAX_SPAN else length - 1
            lengths.append(length)
            remaining -= length
        return lengths

    def _pick(self, n: int, k: int) -> torch.Tensor:
        """(k,) long: the chosen indices among n valid tokens."""
        if self.mode == "tokens" or k == n:
            return torch.randperm(n, generator=self.generator)[:k]
        lengths = self._span_lengths(k)
        m, free = len(lengths), n - k
        # spans go into the gaps of the `free` unmarked tokens; distinct gaps keep spans apart when there is room
        if m <= free + 1:
            gaps = torch.randperm(free + 1, generator=self.generator)[:m]
        else:
            gaps = torch.randint(0, free + 1, (m,), generator=self.generator)
        gaps = gaps.sort().values.tolist()
        picked, before = [], 0
        for gap, length in zip(gaps, lengths):
            start = gap + before  # `before` marked tokens precede this span
            picked.extend(range(start, start + length))
            before += length
        return torch.tensor(picked, dtype=torch.long)

    def mask(
        self,
        response_ids: torch.Tensor,  # (B, T) long
        response_mask: torch.Tensor,  # (B, T) bool
        entropies: torch.Tensor | None = None,  # unused
        correctness: torch.Tensor | None = None,  # unused
    ) -> torch.Tensor:  # (B, T) bool
        valid = check_inputs(response_ids, response_mask).cpu()
        ids = response_ids.detach().cpu()
        k = self.targets(ids, valid).tolist()
        out = torch.zeros(ids.shape, dtype=torch.bool)
        for b in range(ids.shape[0]):
            if k[b] == 0:
                continue
            positions = valid[b].nonzero().squeeze(1)  # (n,)
            out[b, positions[self._pick(positions.numel(), k[b])]] = True
        return out.to(response_ids.device)

    def state_dict(self) -> dict:
        """The generator's position: saved in checkpoints so a resumed run marks the same random tokens."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        amount = f"fraction={self.fraction}" if self.fraction is not None else f"matched to {self.grams_detector!r}"
        return f"RandomPlaceboDetector(mode={self.mode!r}, seed={self.seed}, {amount})"
