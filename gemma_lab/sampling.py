"""Choosing the next token from logits: greedy, temperature, top-k and top-p, seeded."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gemma_lab.errors import InputError


@dataclass(frozen=True, kw_only=True)
class SamplerConfig:
    """How the next token is picked.

    Attributes:
        temperature: 0 picks the most likely token (greedy); higher flattens the distribution.
        top_k: keep only the k most likely tokens before sampling (None keeps all).
        top_p: keep the smallest set of tokens whose probability reaches p (None keeps all).
        seed: makes sampled output reproducible on the same backend.

    Example:
        >>> SamplerConfig(temperature=0.0).greedy
        True
    """

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.temperature, (int, float)) or not np.isfinite(self.temperature):
            raise InputError(f"temperature must be a number ≥ 0, got {self.temperature!r}.")
        if self.temperature < 0:
            raise InputError(f"temperature must be ≥ 0 (0 is greedy), got {self.temperature}.")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise InputError(f"top_k must be a positive integer or None, got {self.top_k!r}.")
        if self.top_p is not None and not (0 < float(self.top_p) <= 1):
            raise InputError(f"top_p must be in (0, 1], got {self.top_p!r}.")
        if self.seed is not None and not isinstance(self.seed, int):
            raise InputError(f"seed must be an integer or None, got {self.seed!r}.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        name = "greedy" if self.greedy else "sample"
        return {"name": name, **asdict(self)}


class Sampler:
    """Stateful sampler: one RNG per generation, seeded from the config.

    Example:
        >>> sampler = Sampler(SamplerConfig(temperature=1.0, seed=0))
        >>> sampler.choose(np.array([0.0, 10.0, 0.0]))
        1
    """

    def __init__(self, config: SamplerConfig):
        self.config = config
        self._rng = np.random.default_rng(config.seed)

    def choose(self, logits: np.ndarray) -> int:
        if self.config.greedy:
            return int(np.argmax(logits))
        scaled = logits.astype(np.float64) / self.config.temperature
        candidates = np.arange(scaled.shape[-1])
        if self.config.top_k is not None and self.config.top_k < scaled.shape[-1]:
            candidates = np.argpartition(-scaled, self.config.top_k - 1)[: self.config.top_k]
        scores = scaled[candidates]
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        if self.config.top_p is not None and self.config.top_p < 1:
            order = np.argsort(-probs)
            cumulative = np.cumsum(probs[order])
            keep = order[: int(np.searchsorted(cumulative, self.config.top_p)) + 1]
            candidates, probs = candidates[keep], probs[keep] / probs[keep].sum()
        return int(candidates[self._rng.choice(len(candidates), p=probs)])
