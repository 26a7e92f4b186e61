"""Evaluation protocols: how many answers are sampled per problem, how, and which pass@k are reported."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hicra.errors import ConfigError
from hicra.rollout.hf import HFSampler


@dataclass
class Protocol:
    """`num_samples` answers per problem (one greedy decode, or samples at `temperature` / `top_p`).

    Every protocol reports pass@1 (the mean over problems of correct samples / num_samples, i.e. accuracy when
    greedy) as its headline number `eval/score`, plus pass@k for every k in `ks`. `samples_per_benchmark` maps a
    benchmark-name prefix to its own k (the paper: aime -> 32, amc -> 4); other benchmarks take `num_samples`.
    `strict` scores only a closed \\boxed{} answer, whatever the benchmark's task says about a last-number fallback.
    `base_max_new_tokens` is the generation budget of a model without a training run (a base model; eval.yaml's
    `base_max_new_tokens` reads it): the budget the trained models it is compared with answer within, so that base
    and trained models are evaluated alike (a trained run is evaluated at its own rollout.max_new_tokens).
    """

    name: str
    num_samples: int
    temperature: float = 1.0
    top_p: float = 1.0
    greedy: bool = False
    ks: Sequence[int] = field(default_factory=lambda: (1,))
    samples_per_benchmark: Mapping[str, int] = field(default_factory=dict)
    strict: bool = False
    base_max_new_tokens: int = 1024

    def __post_init__(self) -> None:
        if not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise ConfigError(f"protocol.num_samples={self.num_samples} is not allowed; use an integer >= 1")
        self.samples_per_benchmark = {str(k).lower(): v for k, v in dict(self.samples_per_benchmark).items()}
        for prefix, k in self.samples_per_benchmark.items():
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ConfigError(f"protocol.samples_per_benchmark.{prefix}={k} is not allowed; use an integer >= 1")
        if self.greedy and self.samples_per_benchmark:
            raise ConfigError("protocol.samples_per_benchmark is not allowed with greedy decoding (one answer per "
                              "problem); use {} or a sampling protocol")
        if isinstance(self.base_max_new_tokens, bool) or not isinstance(self.base_max_new_tokens, int) or \
                self.base_max_new_tokens < 1:
            raise ConfigError(f"protocol.base_max_new_tokens={self.base_max_new_tokens!r} is not allowed; use an "
                              "integer >= 1")
        if not isinstance(self.strict, bool):
            raise ConfigError(f"protocol.strict={self.strict!r} is not allowed; use true or false")
        if self.greedy and self.num_samples != 1:
            raise ConfigError(f"protocol.num_samples={self.num_samples} is not allowed with greedy decoding "
                              "(every greedy answer is the same); use 1, or a sampling protocol (paper, pass_at_k)")
        if not 0.0 < self.temperature <= 10.0:
            raise ConfigError(f"protocol.temperature={self.temperature} is not allowed; use a value in (0, 10] "
                              "(protocol=greedy for greedy decoding)")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"protocol.top_p={self.top_p} is not allowed; use a value in (0, 1]")
        fewest = min([self.num_samples, *self.samples_per_benchmark.values()])
        if any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= fewest for k in self.ks):
            raise ConfigError(f"protocol.ks={list(self.ks)} is not allowed; every k must be an integer in "
                              f"[1, {fewest}] (the fewest samples any benchmark gets: protocol.num_samples="
                              f"{self.num_samples}, samples_per_benchmark={self.samples_per_benchmark})")
        self.ks = tuple(sorted({1, *self.ks}))

    def samples_for(self, benchmark: str) -> int:
        """k for this benchmark: the first `samples_per_benchmark` prefix its name starts with, else num_samples."""
        name = benchmark.lower()
        return next((k for prefix, k in self.samples_per_benchmark.items() if name.startswith(prefix)),
                    self.num_samples)

    def sampler(self, max_new_tokens: int, max_prompt_tokens: int) -> HFSampler:
        """The training sampler with this protocol's settings (greedy decoding uses its val_max_new_tokens)."""
        return HFSampler(temperature=self.temperature, top_p=self.top_p, top_k=0, max_new_tokens=max_new_tokens,
                         max_prompt_tokens=max_prompt_tokens, val_max_new_tokens=max_new_tokens)
