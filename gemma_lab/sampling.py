"""How the next token is chosen: greedy, temperature, top-k and top-p, seeded (the draw
itself runs in the compiled decode loop: `gemma_lab.sampling_ops`)."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, replace
from typing import Any

from gemma_lab import validate


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
        # The shared checks (`gemma_lab.validate`); values are kept in plain Python form.
        for name, check in (("temperature", validate.temperature), ("top_k", validate.top_k),
                            ("top_p", validate.top_p), ("seed", validate.seed)):
            object.__setattr__(self, name, check(getattr(self, name)))

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
