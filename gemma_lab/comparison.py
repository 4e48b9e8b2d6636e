"""Comparisons of two runs, token by token: with vs without an intervention, the base model vs
a LoRA adapter, two prompts, or any two results with per-token log-probabilities.

`Comparison.diff` is log p_b − log p_a of each token both runs share (position by position,
up to where their tokens first differ): positive where run b finds the token likelier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gemma_lab.errors import InputError
from gemma_lab.scoring import score_text

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from gemma_lab.finetune.adapters import Adapters
    from gemma_lab.forward import HookSet
    from gemma_lab.runtime import ModelRuntime


@dataclass(frozen=True)
class Comparison:
    """Per-token log-probabilities of two runs and their difference.

    Attributes:
        labels: what runs a and b are ("base", "adapter my-tune", "with hooks", ...).
        text_a, text_b: their texts; tokens_a / tokens_b (the text each token adds),
            token_ids_a / token_ids_b their tokens (without `<bos>`); logprobs_a / logprobs_b
            float64, one per token; pieces_b run b's vocabulary pieces.
        metadata_a, metadata_b: each run's provenance (model, adapter, ...).

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> from gemma_lab import interventions as iv
        >>> c = tiny_session().compare("hello world", hooks=iv.ablate_heads([(0, 0)]))
        >>> c.labels, c.diverged_at, len(c.diff) == len(c.tokens_a)
        (('without hooks', 'with hooks'), None, True)
    """

    labels: tuple[str, str]
    text_a: str
    text_b: str
    tokens_a: tuple[str, ...]
    tokens_b: tuple[str, ...]
    token_ids_a: tuple[int, ...]
    token_ids_b: tuple[int, ...]
    logprobs_a: np.ndarray
    logprobs_b: np.ndarray
    pieces_b: tuple[str, ...] = ()
    metadata_a: dict[str, Any] = field(default_factory=dict)
    metadata_b: dict[str, Any] = field(default_factory=dict)

    @property
    def diverged_at(self) -> int | None:
        """The first token index where the runs' tokens differ (None: the same tokens)."""
        for index, (a, b) in enumerate(zip(self.token_ids_a, self.token_ids_b, strict=False)):
            if a != b:
                return index
        if len(self.token_ids_a) != len(self.token_ids_b):
            return min(len(self.token_ids_a), len(self.token_ids_b))
        return None

    @property
    def diff(self) -> np.ndarray:
        """log p_b − log p_a of each shared token (up to `diverged_at`)."""
        shared = self.diverged_at if self.diverged_at is not None else len(self.token_ids_a)
        return self.logprobs_b[:shared] - self.logprobs_a[:shared]

    @property
    def total_diff(self) -> float:
        return float(self.diff.sum())

    def to_dict(self) -> dict[str, Any]:
        """The JSON payload (kind "comparison"; see gemma_lab.schema): run b's tokens, each
        with its log p under both runs."""
        from gemma_lab.render import payload, token_entry

        diff = self.diff
        pieces = self.pieces_b or self.tokens_b
        tokens = [token_entry("scored", text, token_id, piece=pieces[i],
                              logprob=float(self.logprobs_b[i]),
                              prob=float(np.exp(self.logprobs_b[i])))
                  for i, (text, token_id) in enumerate(zip(self.tokens_b, self.token_ids_b,
                                                           strict=True))]
        return payload(
            "comparison", self.text_b, tokens, dict(self.metadata_b),
            prompt=self.text_a,
            summary={"total_diff": self.total_diff, "shared_tokens": len(diff),
                     "label_a": self.labels[0], "label_b": self.labels[1]},
            comparison={
                "labels": list(self.labels),
                "tokens_a": list(self.tokens_a),
                "logprobs_a": np.round(self.logprobs_a, 6).tolist(),
                "logprobs_b": np.round(self.logprobs_b, 6).tolist(),
                "diff": np.round(diff, 6).tolist(),
                "diverged_at": self.diverged_at,
                "adapter_a": self.metadata_a.get("adapter"),
                "adapter_b": self.metadata_b.get("adapter"),
            },
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from gemma_lab.render import mimebundle

        return mimebundle(self.to_dict(), include, exclude)

    def figure(self, kind: str = "diff") -> go.Figure:
        """"diff": bars of log p_b − log p_a per token; "logprobs": both runs' lines."""
        from gemma_lab.figures.comparison import comparison_figure

        if kind not in ("diff", "logprobs"):
            raise InputError(f"kind={kind!r}: choose 'diff' or 'logprobs'.")
        return comparison_figure(self.tokens_b, self.logprobs_a, self.logprobs_b,
                                 self.labels, self.diverged_at, kind)

    def __str__(self) -> str:
        return self.text_b

    def __repr__(self) -> str:
        diverged = "" if self.diverged_at is None else f", tokens differ from {self.diverged_at}"
        return (f"<Comparison {self.labels[1]!r} vs {self.labels[0]!r}: Σ Δ log p = "
                f"{self.total_diff:+.3f} over {len(self.diff)} tokens{diverged}>")


def _run(record: Any, label: str) -> dict[str, Any]:
    """A result with per-token log-probabilities (Score, Generation) as one side."""
    if not all(hasattr(record, name) for name in ("token_ids", "logprobs", "tokens")):
        raise InputError(f"compare() takes texts or results with per-token log-probabilities "
                         f"(Score, Generation), got {type(record).__name__}.")
    texts = [step.text or step.piece for step in record.steps]  # piece: half a character
    return {"label": label, "text": str(record.text), "tokens": tuple(texts),
            "pieces": tuple(step.piece for step in record.steps),
            "token_ids": tuple(int(i) for i in record.token_ids),
            "logprobs": np.asarray(record.logprobs, dtype="float64"),
            "metadata": dict(getattr(record, "metadata", {}))}


def _pair(a: dict[str, Any], b: dict[str, Any]) -> Comparison:
    return Comparison(
        labels=(a["label"], b["label"]), text_a=a["text"], text_b=b["text"],
        tokens_a=a["tokens"], tokens_b=b["tokens"], token_ids_a=a["token_ids"],
        token_ids_b=b["token_ids"], logprobs_a=a["logprobs"], logprobs_b=b["logprobs"],
        pieces_b=b["pieces"], metadata_a=a["metadata"], metadata_b=b["metadata"])


def compare(runtime: ModelRuntime, a: Any, b: Any = None, *, hooks: HookSet | None = None,
            adapter: str | bool | None = None, adapters: Adapters | None = None,
            labels: tuple[str, str] | None = None) -> Comparison:
    """Compare two runs token by token (see `GemmaLab.compare` for the forms).

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> runtime = tiny_runtime()
        >>> compare(runtime, "hello world", "hello there").labels
        ("'hello world'", "'hello there'")
    """
    if labels is not None and (len(labels) != 2 or not all(isinstance(x, str) for x in labels)):
        raise InputError("labels must be two strings, e.g. labels=('base', 'tuned').")
    forms = sum(x is not None for x in (b, hooks, adapter))
    if forms != 1:
        raise InputError("compare() takes one of: a second run (compare(a, b)), hooks= (a "
                         "text with and without them) or adapter= (a text on the base model "
                         "and on an adapter).")
    if b is not None:
        if isinstance(a, str) != isinstance(b, str):
            raise InputError("compare(a, b) takes two texts or two results, not one of each.")
        if isinstance(a, str):
            pair = (_run(score_text(runtime, a), repr(a[:30])),
                    _run(score_text(runtime, b), repr(b[:30])))
        else:
            pair = (_run(a, "a"), _run(b, "b"))
    elif not isinstance(a, str) or not a:
        raise InputError("compare(text, hooks=...) and compare(text, adapter=...) need a "
                         "non-empty text to score.")
    elif hooks is not None:
        without = _run(score_text(runtime, a), "without hooks")
        with runtime.hooked(hooks):
            pair = (without, _run(score_text(runtime, a), "with hooks"))
    else:
        if adapters is None:
            raise InputError("compare(text, adapter=...) needs the session's adapters.")
        name = runtime.adapter_name if adapter is True else adapter
        if not name:
            raise InputError("No adapter is in use: fine-tune first, or name a saved one: "
                             "compare(text, adapter='name').")
        with adapters.using(None):
            base = _run(score_text(runtime, a), "base model")
        with adapters.using(str(name)):
            pair = (base, _run(score_text(runtime, a), f"adapter {name}"))
    if labels is not None:
        pair = ({**pair[0], "label": labels[0]}, {**pair[1], "label": labels[1]})
    return _pair(*pair)


__all__ = ["Comparison", "compare"]
