"""Direct logit attribution: how much each layer's attention and MLP, and each head, write
the target token's logit at the last position.

The residual stream entering the final norm is a sum: the scaled embedding (`blocks.0.resid_pre`)
plus every block's `attn_out` and `mlp_out`. With the final RMSNorm's scale frozen at its value
on that sum (the usual linearisation: `final_norm(x) = r ⊙ x` with `r = final_norm(x) / x`),
each term's contribution to the target's logit is `(r ⊙ term) · u`, u the target's unembedding
row, and the contributions add up to the logit before any final soft-cap. Heads split a
block's `attn_out` the same way: each head's slice of `attn.z` through keras-hub's own output
projection, times the post-attention norm's frozen scale where the model has that norm (Gemma
2, 3), so the heads of a layer add up to its `attn_out` contribution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gemma_lab import validate
from gemma_lab.backend import to_numpy
from gemma_lab.errors import InputError
from gemma_lab.features import require
from gemma_lab.inspect.activations import run_with_cache

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from gemma_lab.runtime import ModelRuntime


@dataclass(frozen=True)
class LogitAttribution:
    """Direct contributions to one token's logit at the last position of `text`.

    Attributes:
        text: the text run (after `<bos>`); tokens: its pieces, `<bos>` first.
        target: the text of the token whose logit is explained (the model's top prediction
            when none was given; its vocabulary piece if it decodes to no text alone);
            target_id its id.
        embed: the contribution of the scaled token embedding.
        attn, mlp: float64 [layer]: each block's attention and MLP contribution.
        heads: float64 [layer, head]: per head (sums to `attn` per layer).
        logit: the model's logit of the target (after any soft-cap); direct_sum: embed +
            Σ attn + Σ mlp (equals `logit` for models without a final soft-cap).
        metadata: model, weights hash, backend, dtype, adapter.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> la = tiny_session().logit_attribution("hello world")
        >>> la.heads.shape, bool(np.allclose(la.heads.sum(1), la.attn, atol=1e-4))
        ((2, 4), True)
    """

    text: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    target: str
    target_id: int
    embed: float
    attn: np.ndarray
    mlp: np.ndarray
    heads: np.ndarray
    logit: float
    direct_sum: float
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        """Component labels in forward order: "embed", "L0 attn", "L0 mlp", ..."""
        return ["embed"] + [f"L{layer} {part}" for layer in range(len(self.attn))
                            for part in ("attn", "mlp")]

    @property
    def values(self) -> np.ndarray:
        """Contributions in the order of `labels`."""
        return np.asarray([self.embed] + [v for pair in zip(self.attn, self.mlp, strict=True)
                                          for v in pair])

    def to_dict(self) -> dict[str, Any]:
        """The JSON payload (kind "logit_attribution"; see gemma_lab.schema)."""
        from gemma_lab.render import payload, token_entry

        tokens = [token_entry("prompt", piece, token_id, piece=piece)
                  for piece, token_id in zip(self.tokens, self.token_ids, strict=True)]
        return payload(
            "logit_attribution", self.text, tokens, dict(self.metadata),
            summary={"target": self.target, "logit": self.logit,
                     "direct_sum": self.direct_sum},
            logit_attribution={
                "target": self.target,
                "position": len(self.tokens) - 1,
                "layers": [f"L{layer}" for layer in range(len(self.attn))],
                "labels": self.labels,
                "values": np.round(self.values, 5).tolist(),
                "heads": np.round(self.heads, 5).tolist(),
                "logit": self.logit,
                "direct_sum": self.direct_sum,
            },
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from gemma_lab.render import mimebundle

        return mimebundle(self.to_dict(), include, exclude)

    def figure(self, kind: str = "layers") -> go.Figure:
        """"layers": bars per component; "heads": a [layer, head] heatmap."""
        from gemma_lab.figures.logit_attribution import head_heatmap, layer_bars

        if kind == "layers":
            return layer_bars(self.labels, self.values, self.target)
        if kind == "heads":
            return head_heatmap(self.heads, self.target)
        raise InputError(f"kind={kind!r}: choose 'layers' or 'heads'.")

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        top = int(np.argmax(np.abs(self.values)))
        return (f"<LogitAttribution of {self.target!r}: logit {self.logit:.3f} = "
                f"{self.direct_sum:.3f} direct; largest {self.labels[top]} "
                f"{self.values[top]:+.3f}>")


def _frozen_scale(norm: Any, x: np.ndarray) -> np.ndarray:
    """r with norm(x) = r ⊙ x at this x (keras-hub's own norm layer is called)."""
    out = to_numpy(norm(x[None, None].astype("float32")))[0, 0].astype("float64")
    return np.divide(out, x, out=np.zeros_like(out), where=x != 0)


def _unembedding_row(embedding: Any, token_id: int) -> np.ndarray:
    if getattr(embedding, "tie_weights", True):
        return to_numpy(embedding(np.asarray([[token_id]], "int32")))[0, 0].astype("float64")
    return to_numpy(embedding.reverse_embeddings)[:, token_id].astype("float64")


def logit_attribution(runtime: ModelRuntime, text: str, target: str | None = None
                      ) -> LogitAttribution:
    """Direct logit attribution of `target`'s first token (default: the model's top
    prediction) at the last position of `text`; see `LogitAttribution`.

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> la = logit_attribution(tiny_runtime(), "hello world", target=" there")
        >>> abs(la.direct_sum - la.logit) < 1e-3
        True
    """
    require(runtime.adapter, "logit attribution",
            "Use lab.attribute(...) or hooks on attn_out / mlp_out with lab.compare(...).")
    if target is not None and (not isinstance(target, str) or not target):
        raise InputError("target must be a non-empty string (or None for the model's top "
                         "prediction).")
    validate.optional_text(target, "The target")
    shape = runtime.adapter.shape
    layers = shape.num_layers
    names = (["blocks.0.resid_pre", "final_norm"]
             + [f"blocks.{layer}.{point}" for layer in range(layers)
                for point in ("attn.z", "attn_out", "mlp_out")])
    cache = run_with_cache(runtime, text, names)
    last = len(cache.tokens) - 1
    backbone = runtime.backbone
    logits = to_numpy(backbone.token_embedding(cache["final_norm"][None, None, last],
                                               reverse=True))[0, 0].astype("float64")
    if target is None:
        target_id = int(np.argmax(logits))
    else:
        target_ids = runtime.tokenizer.encode(target, add_bos=False)
        if not target_ids:
            raise InputError(f"The target {target!r} encodes to no tokens.")
        target_id = int(target_ids[0])

    embed = cache["blocks.0.resid_pre"][last].astype("float64")
    attn_out = np.stack([cache[f"blocks.{layer}.attn_out"][last] for layer in range(layers)])
    mlp_out = np.stack([cache[f"blocks.{layer}.mlp_out"][last] for layer in range(layers)])
    residual = embed + attn_out.sum(0) + mlp_out.sum(0)
    direction = _frozen_scale(backbone.layer_norm, residual) * _unembedding_row(
        backbone.token_embedding, target_id)

    heads = np.zeros((layers, shape.num_heads))
    for layer, block in enumerate(runtime.adapter.blocks):
        z = cache[f"blocks.{layer}.attn.z"][last]  # [head, head_dim]
        alone = np.zeros((shape.num_heads, 1, *z.shape), "float32")
        for head in range(shape.num_heads):
            alone[head, 0, head] = z[head]
        per_head = to_numpy(block.attention.output_dense(alone))[:, 0].astype("float64")
        if block.use_post_attention_norm:
            per_head = per_head * _frozen_scale(block.post_attention_norm, per_head.sum(0))
        heads[layer] = per_head @ direction
    return LogitAttribution(
        text=text,
        tokens=cache.tokens,
        token_ids=cache.token_ids,
        target=runtime.tokenizer.decode([target_id]) or runtime.tokenizer.piece(target_id),
        target_id=target_id,
        embed=float(embed @ direction),
        attn=attn_out.astype("float64") @ direction,
        mlp=mlp_out.astype("float64") @ direction,
        heads=heads,
        logit=float(logits[target_id]),
        direct_sum=float(residual @ direction),
        metadata=runtime.metadata(),
    )


__all__ = ["LogitAttribution", "logit_attribution"]
