"""Scoring: teacher-forced probability of every token of a text, and its result record."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gemma_lab import render, validate
from gemma_lab.decoding import decoder
from gemma_lab.errors import InputError
from gemma_lab.token_stats import PerTokenViews, TokenStats
from gemma_lab.tokenizer import IncrementalDecoder

if TYPE_CHECKING:
    from gemma_lab.runtime import ModelRuntime


@dataclass(frozen=True)
class Score(PerTokenViews):
    """How probable the model finds each token of a text, given the tokens before it.

    Attributes:
        text: the scored text.
        steps: per token statistics (`TokenStats`); the first is conditioned on <bos> alone.
        metadata: model, weights hash, backend, dtype.
        speakers: for a chat transcript, who speaks each scored token ("system", "user",
            "model" or "markup": turn markers and role names); empty for plain text.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> s = tiny_session().score("hello world")
        >>> len(s.logprobs) == len(s.token_ids) and s.total_logprob < 0
        True
    """

    text: str
    steps: tuple[TokenStats, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    speakers: tuple[str, ...] = ()

    @property
    def total_logprob(self) -> float:
        return float(sum(self.logprobs))

    @property
    def perplexity(self) -> float:
        return math.exp(-self.total_logprob / max(len(self.steps), 1))

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, Any]:
        """The v1 JSON payload (`gemma_lab.schema.JSON_SCHEMA`): every scored token with its
        teacher-forced statistics."""
        return render.payload(
            "score",
            self.text,
            render.with_speakers([step.to_dict("scored") for step in self.steps],
                                 self.speakers),
            self.metadata,
            summary={"total_logprob": self.total_logprob, "perplexity": self.perplexity,
                     "scored_tokens": len(self.steps)},
        )

    def figure(self, kind: str = "probs") -> Any:
        """A plotly Figure: "probs" (default), "top_k", "entropy" or "rank" per token."""
        from gemma_lab.figures import steps_figure

        return steps_figure(self.steps, kind)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return render.mimebundle(self.to_dict(), include, exclude)


def score_text(runtime: ModelRuntime, text: str, ids: Sequence[int] | None = None,
               speakers: Sequence[str] = ()) -> Score:
    """Teacher-force `text` (after <bos>) through the model (hooks in force apply); see
    `GemmaLab.score`. `ids` (with `<bos>`), when given, are scored as they are (a chat
    transcript's exact ids, `speakers` labelling each)."""
    return score_texts(runtime, [(text, ids, speakers)])[0]


def score_texts(runtime: ModelRuntime,
                items: Sequence[tuple[str, Sequence[int] | None, Sequence[str]]]
                ) -> list[Score]:
    """`score_text` of several (text, ids, speakers), batched (`CompiledModel.score_batch`:
    each row's statistics are its own; padding never reaches them).

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> scores = score_texts(tiny_runtime(), [("hello", None, ()), ("a b c", None, ())])
        >>> [len(s.steps) for s in scores] == [len(tiny_runtime().tokenizer.encode(t))
        ...                                    for t in ("hello", "a b c")]
        True
    """
    tokenizer = runtime.tokenizer
    rows = []
    for index, (text, ids, speakers) in enumerate(items):
        where = f" (text {index})" if len(items) > 1 else ""
        if not isinstance(text, str) or not text:
            raise InputError(f"score() needs a non-empty string to score{where}.")
        validate.text(text, f"The text{where}")
        ids = list(ids) if ids is not None else tokenizer.encode(text, add_bos=True)
        if speakers and len(speakers) != len(ids):
            raise InputError(f"{len(speakers)} speakers for {len(ids)} token ids{where}: give "
                             "one per id.")
        if len(ids) > runtime.context_length:
            raise InputError(
                f"The text{where} has {len(ids)} tokens, more than the model's context of "
                f"{runtime.context_length}. Score a shorter text.")
        rows.append(np.asarray(ids, dtype="int32"))
    model = decoder(runtime, runtime.active_hooks)
    batches = model.score_batch(rows, runtime.context_length)
    return [_score(runtime, text, row.tolist(), stats, speakers)
            for (text, _, speakers), row, stats in zip(items, rows, batches, strict=True)]


def _score(runtime: ModelRuntime, text: str, ids: list[int], stats: dict[str, np.ndarray],
           speakers: Sequence[str]) -> Score:
    tokenizer = runtime.tokenizer
    text_decoder = IncrementalDecoder(tokenizer)
    steps = []
    for position, token_id in enumerate(ids[1:]):
        top_ids = stats["top_ids"][position].tolist()
        steps.append(
            TokenStats(
                token_id=int(token_id),
                text=_shown(text_decoder, tokenizer, token_id),
                piece=tokenizer.piece(token_id),
                logprob=float(stats["logprob"][position]),
                rank=int(stats["rank"][position]),
                entropy=float(stats["entropy"][position]),
                top_k=tuple(
                    (tokenizer.piece(i), float(np.exp(lp)))
                    for i, lp in zip(top_ids, stats["top_logprobs"][position].tolist(),
                                     strict=True)
                ),
                top_k_ids=tuple(int(i) for i in top_ids),
            )
        )
    return Score(text=text, steps=tuple(steps), metadata=runtime.metadata(),
                 speakers=tuple(speakers[1:]))


def _shown(decoder: IncrementalDecoder, tokenizer: Any, token_id: int) -> str:
    """What token `token_id` adds to the text; a control token (a chat turn marker, which
    decodes to nothing) shows as its piece."""
    text = decoder.push(token_id)
    if not text and tokenizer.is_control(token_id):
        return tokenizer.piece(token_id)
    return text
