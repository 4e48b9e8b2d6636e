"""The result records of inspection: `Trace` (attention, residual stream, logit lens) and
`Attribution` (which prompt tokens the target's log-probability depends on)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gemma_lab.errors import InputError
from gemma_lab.schema import MAX_TOKENS

# Payload caps: attention values shipped in JSON (layers × heads × positions²), at least
# MIN_ATTENTION_POSITIONS positions whatever the selection.
MAX_ATTENTION_VALUES = 2**18
MIN_ATTENTION_POSITIONS = 64
TRACE_FIGURES = ("attention", "heads", "token", "lens")


def _rounded(array: np.ndarray, digits: int = 5) -> list:
    return np.round(np.asarray(array, dtype="float64"), digits).tolist()


@dataclass(frozen=True, eq=False)
class Trace:
    """What happened inside the model on one forward pass over a text.

    Positions index `tokens`, which start with "<bos>". Residual-stream and lens rows are
    indexed by depth, the number of blocks applied: depth 0 is the scaled token embeddings,
    depth d the output of block d - 1, depth `num_layers` the last block's output.

    Attributes:
        text: the traced text.
        tokens: vocabulary pieces of every position, "<bos>" first.
        token_ids: their ids.
        layers: block indices whose attention was kept (ascending).
        heads: query-head indices kept (ascending).
        windows: per kept layer, its sliding-window size, or None for global attention.
        attention: float32 [len(layers), len(heads), query, key] softmax probabilities;
            rows sum to 1 and are exactly 0 for keys outside the causal / sliding window.
        residual: float32 [num_layers + 1, position, hidden] residual stream by depth.
        logits: float32 [position, vocabulary] final logits, or None when that would exceed
            2**21 values (use the lens' last row for the final top-k then).
        lens_top_ids, lens_top_tokens, lens_top_probs: [depth, position, k] top-k of the
            logit lens (final norm + tied unembedding + final soft cap applied to each depth).
        lens_target_probs: [depth, position] lens probability of the actual next token;
            NaN at the last position, which has no next token.
        metadata: model, weights hash, backend, dtype, adapter.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> t = tiny_session("gemma3").trace("hello world", layers=[0])
        >>> t.attention.shape[0], t.residual.shape[0] == t.num_layers + 1
        (1, True)
    """

    text: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    layers: tuple[int, ...]
    heads: tuple[int, ...]
    windows: tuple[int | None, ...]
    attention: np.ndarray
    residual: np.ndarray
    logits: np.ndarray | None
    lens_top_ids: np.ndarray
    lens_top_tokens: np.ndarray
    lens_top_probs: np.ndarray
    lens_target_probs: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    speakers: tuple[str, ...] = ()  # chat transcripts: the speaker of each position

    @property
    def num_layers(self) -> int:
        return self.residual.shape[0] - 1

    @property
    def lens_layers(self) -> tuple[int, ...]:
        """Depth of each lens row (0 = embeddings, d = after block d - 1)."""
        return tuple(range(self.residual.shape[0]))

    def attention_matrix(self, layer: int, head: int | None = None) -> np.ndarray:
        """[query, key] probabilities of block `layer` and query head `head` (None: mean)."""
        if layer not in self.layers:
            raise InputError(f"Layer {layer} was not traced (traced: {list(self.layers)}); "
                             f"trace again with layers=[{layer}].")
        per_layer = self.attention[self.layers.index(layer)]
        if head is None:
            return per_layer.mean(axis=0)
        if head not in self.heads:
            raise InputError(f"Head {head} was not traced (traced: {list(self.heads)}); "
                             f"trace again with heads=[{head}].")
        return per_layer[self.heads.index(head)]

    def to_dict(self) -> dict[str, Any]:
        """The v1 JSON payload: tokens ("<bos>" first, as the arrays), attention and lens."""
        from gemma_lab.render import payload, token_entry, with_speakers

        tokens = [token_entry("prompt", piece, token_id, piece=piece)
                  for piece, token_id in zip(self.tokens, self.token_ids, strict=True)]
        return payload("trace", self.text, with_speakers(tokens, self.speakers),
                       dict(self.metadata), **self.payload_extras())

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from gemma_lab.render import mimebundle

        return mimebundle(self, include, exclude)

    def view(self, attention: bool = True, lens: bool = True) -> TraceView:
        """The trace shown with only the asked-for views (what `%%gemma --attention` shows).

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> shown = tiny_session().trace("hello world").view(lens=False)
            >>> sorted(key for key in ("attention", "lens") if key in shown.to_dict())
            ['attention']
        """
        return TraceView(self, attention=attention, lens=lens)

    def payload_extras(self) -> dict[str, Any]:
        """The "attention" and "lens" fields of the v1 payload (gemma_lab.schema), capped."""
        n = len(self.tokens)
        matrices = max(1, len(self.layers) * len(self.heads))
        shown = min(n, max(MIN_ATTENTION_POSITIONS,
                           math.isqrt(MAX_ATTENTION_VALUES // matrices)))
        attention: dict[str, Any] = {
            "layers": list(self.layers),
            "heads": list(self.heads),
            "data": _rounded(self.attention[:, :, :shown, :shown]),
            "truncated": shown < n,
        }
        if shown < n:
            widest = min(n, math.isqrt(MAX_ATTENTION_VALUES))
            attention["note"] = (
                f"attention shows the first {shown} of {n} positions for {len(self.layers)} "
                f"layers × {len(self.heads)} heads; trace fewer with layers=[...] / "
                f"heads=[...] to see more (one layer and head: {widest} positions). The full "
                "arrays are in Trace.attention."
            )
        positions = min(n, MAX_TOKENS)
        lens = {
            "layers": list(self.lens_layers),
            "top_tokens": self.lens_top_tokens[:, :positions, 0].tolist(),
            "top_probs": _rounded(self.lens_top_probs[:, :positions, 0]),
            # The last position has no next token, so its row is one shorter.
            "target_probs": _rounded(self.lens_target_probs[:, : min(positions, n - 1)]),
            "truncated": positions < n,
        }
        return {"attention": attention, "lens": lens}

    def figure(self, kind: str = "attention", layer: int | None = None,
               head: int | None = None, query: int | None = None) -> Any:
        """A plotly figure: "attention" heatmap of one layer/head (head=None: mean of heads),
        "heads" grid of a layer, "token" attention of one query position over the keys, or
        the logit "lens" heatmap.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> t = tiny_session("gemma3").trace("hello world")
            >>> t.figure("heads", layer=1).layout.title.text
            'Attention heads of layer 1 (sliding window 4)'
        """
        if kind not in TRACE_FIGURES:
            raise InputError(f"kind={kind!r}: choose one of {', '.join(TRACE_FIGURES)}.")
        if kind == "lens":
            from gemma_lab.figures.lens import lens_heatmap

            return lens_heatmap(self.lens_target_probs, self.lens_top_tokens,
                                self.lens_top_probs, self.tokens)
        if not self.layers or not self.heads:
            raise InputError("This trace kept no attention; trace again without layers=[] "
                             "or heads=[].")
        layer = self.layers[0] if layer is None else layer
        window = self.windows[self.layers.index(layer)] if layer in self.layers else None
        scope = f"sliding window {window}" if window else "global"
        if kind == "heads":
            from gemma_lab.figures.attention import head_grid

            self.attention_matrix(layer, self.heads[0])  # validates the layer
            return head_grid(self.attention[self.layers.index(layer)], self.tokens,
                             heads=self.heads,
                             title=f"Attention heads of layer {layer} ({scope})")
        head_label = "mean of heads" if head is None else f"head {head}"
        matrix = self.attention_matrix(layer, head)
        if kind == "token":
            from gemma_lab.figures.attention import token_attention

            query = len(self.tokens) - 1 if query is None else query
            if not 0 <= query < len(self.tokens):
                raise InputError(f"query={query} is out of range (0 to {len(self.tokens) - 1}).")
            return token_attention(matrix[query], self.tokens, query,
                                   title=f"Layer {layer}, {head_label}: attention from "
                                         f"position {query}")
        from gemma_lab.figures.attention import attention_heatmap

        return attention_heatmap(matrix, self.tokens,
                                 title=f"Layer {layer}, {head_label} ({scope})")

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return (f"<Trace {len(self.tokens)} tokens, {len(self.layers)} of {self.num_layers} "
                f"layers × {len(self.heads)} heads, lens top-{self.lens_top_ids.shape[-1]}>")

class TraceView:
    """A `Trace` displayed with a chosen subset of its views (attention, logit lens)."""

    def __init__(self, trace: Trace, attention: bool = True, lens: bool = True):
        self.trace, self.attention, self.lens = trace, attention, lens

    def to_dict(self) -> dict[str, Any]:
        payload = self.trace.to_dict()
        for part, shown in (("attention", self.attention), ("lens", self.lens)):
            if not shown:
                payload.pop(part, None)
        return payload

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from gemma_lab.render import mimebundle

        return mimebundle(self, include, exclude)


@dataclass(frozen=True, eq=False)
class Attribution:
    """How much each prompt token contributes to log p(target | prompt).

    Gradients are taken with respect to the token embeddings (every path that reads them,
    block 0 and e.g. Gemma 4's per-layer projection, varies with them; the scores do not
    depend on the model's √hidden scale); <bos> and the target's own tokens are held fixed, so
    `tokens` and `scores` cover the prompt after <bos>.

    Attributes:
        prompt, target: the texts.
        tokens, token_ids: the prompt's pieces and ids (without <bos>).
        target_tokens, target_token_ids: the target's pieces and ids.
        scores: float64 [len(tokens)], Σ over hidden of gradient × input ("grad_x_input"),
            or of path-averaged gradient × (input − baseline) ("integrated_gradients").
        method: "grad_x_input" or "integrated_gradients".
        steps: Riemann steps (midpoint rule) for integrated gradients, else None.
        target_logprob: log p(target | prompt), summed over target tokens.
        baseline_logprob: the same with the prompt embeddings zeroed (integrated gradients).
        metadata: model, weights hash, backend, dtype, adapter.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> a = tiny_session("gemma3").attribute("hello", target=" world")
        >>> a.method, a.scores.shape == (len(a.tokens),)
        ('grad_x_input', True)
    """

    prompt: str
    target: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    target_tokens: tuple[str, ...]
    target_token_ids: tuple[int, ...]
    scores: np.ndarray
    method: str
    steps: int | None
    target_logprob: float
    baseline_logprob: float | None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def completeness_error(self) -> float | None:
        """Σ scores − (target_logprob − baseline_logprob): ≈ 0 for integrated gradients."""
        if self.baseline_logprob is None:
            return None
        return float(self.scores.sum() - (self.target_logprob - self.baseline_logprob))

    def to_dict(self) -> dict[str, Any]:
        """The v1 JSON payload: prompt tokens (without <bos>, as `scores`) and attribution."""
        from gemma_lab.render import payload, token_entry

        tokens = [token_entry("prompt", piece, token_id, piece=piece)
                  for piece, token_id in zip(self.tokens, self.token_ids, strict=True)]
        return payload("attribution", self.prompt, tokens, dict(self.metadata),
                       **self.payload_extras())

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from gemma_lab.render import mimebundle

        return mimebundle(self, include, exclude)

    def payload_extras(self) -> dict[str, Any]:
        """The "attribution" field of the v1 payload (gemma_lab.schema); scores align with
        `tokens` (the prompt without <bos>)."""
        return {"attribution": {"method": self.method, "target": self.target,
                                "scores": _rounded(self.scores[:MAX_TOKENS], 6)}}

    def figure(self, kind: str = "bar") -> Any:
        """A plotly bar chart of the score of each prompt token."""
        if kind != "bar":
            raise InputError(f"kind={kind!r}: Attribution has one figure, kind='bar'.")
        from gemma_lab.figures.attribution import attribution_bars

        return attribution_bars(self.scores, self.tokens, self.target, self.method)

    def __str__(self) -> str:
        return self.prompt

    def __repr__(self) -> str:
        completeness = ""
        if self.completeness_error is not None:
            change = self.target_logprob - (self.baseline_logprob or 0.0)
            off = abs(self.completeness_error) / max(abs(change), 1e-12)
            completeness = f", {self.steps} steps, Σ scores off Δ log p by {100 * off:.1f}%"
        return (f"<Attribution {self.method} of {self.target!r} over {len(self.tokens)} "
                f"prompt tokens, log p = {self.target_logprob:.3f}{completeness}>")
