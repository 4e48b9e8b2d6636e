"""Per-token statistics shared by generations and scores."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TokenStats:
    """What the model thought of one token.

    Attributes:
        token_id: the token's id.
        text: the text this token added (empty while a multi-byte character is incomplete).
        piece: the vocabulary entry, "▁" shown as a space.
        logprob: natural-log probability the model gave this token (temperature 1).
        rank: 1 if it was the model's top choice, 2 if second, ...
        entropy: entropy (nats) of the model's distribution at this position.
        top_k: the k most likely tokens there, as (piece, probability), best first.
        top_k_ids: their ids.

    Example:
        >>> TokenStats(5, "a", "a", -0.1, 1, 0.3, (("a", 0.9),), (5,)).prob
        0.9048374180359595
    """

    token_id: int
    text: str
    piece: str
    logprob: float
    rank: int
    entropy: float
    top_k: tuple[tuple[str, float], ...]
    top_k_ids: tuple[int, ...]

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)

    def to_dict(self, role: str) -> dict:
        return {
            "text": self.text,
            "piece": self.piece,
            "id": self.token_id,
            "role": role,
            "prob": self.prob,
            "logprob": self.logprob,
            "rank": self.rank,
            "entropy": self.entropy,
            "top_k": [[piece, prob] for piece, prob in self.top_k],
        }


class PerTokenViews:
    """Per-token lists (`tokens`, `logprobs`, `top_k`, ...) of a record that has `steps`.

    Example:
        >>> class Record(PerTokenViews):
        ...     steps = (TokenStats(5, "a", "a", -0.1, 1, 0.3, (("a", 0.9),), (5,)),)
        >>> Record().token_ids, Record().ranks
        ([5], [1])
    """

    steps: Sequence[TokenStats]

    @property
    def tokens(self) -> list[str]:
        return [s.text for s in self.steps]

    @property
    def token_ids(self) -> list[int]:
        return [s.token_id for s in self.steps]

    @property
    def logprobs(self) -> list[float]:
        return [s.logprob for s in self.steps]

    @property
    def probs(self) -> list[float]:
        return [s.prob for s in self.steps]

    @property
    def ranks(self) -> list[int]:
        return [s.rank for s in self.steps]

    @property
    def entropy(self) -> list[float]:
        return [s.entropy for s in self.steps]

    @property
    def top_k(self) -> list[list[tuple[str, float]]]:
        return [list(s.top_k) for s in self.steps]
