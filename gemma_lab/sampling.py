"""How the next token is chosen: greedy, temperature, top-k and top-p, seeded (the draw
itself runs in the compiled decode loop: `gemma_lab.sampling_ops`)."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, replace
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


def resolved(config: SamplerConfig) -> SamplerConfig:
    """`config` with a seed: its own, or a freshly drawn one for a sampled config without
    one (recorded in the result's metadata, so any sampled run can be repeated). The
    compiled decode loop draws tokens from it (`gemma_lab.sampling_ops`).

    Example:
        >>> resolved(SamplerConfig(temperature=1.0)).seed is not None
        True
        >>> resolved(SamplerConfig()).seed is None  # greedy needs none
        True
    """
    if config.greedy or config.seed is not None:
        return config
    return replace(config, seed=secrets.randbelow(1 << 31))
