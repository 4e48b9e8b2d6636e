"""Where the hook points sit in keras-hub's Gemma decoder blocks (Gemma 1, 2 and 3).

`GemmaDecoderBlock` (Gemma 1 / 2) and `Gemma3DecoderBlock` call the same sublayers in the
same order: pre-attention norm → attention (query / key / value projections, softmax,
output projection) → optional post-attention norm → residual add → pre-MLP norm → gated MLP
(`gating_ffw`, `gating_ffw_2`, `ffw_linear`) → optional post-MLP norm → residual add. Each
hook point is the input or output of one of those layers, so the model's own code runs
unchanged and a patch only sees (and may replace) a tensor passing between its layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gemma_lab.forward.patching import Patch, call_attr
from gemma_lab.forward.points import HookSet, ModelShape, block_point

# Apply(name, layer, value) -> value: runs the hook set's functions and records for `name`.
Apply = Callable[[str, "int | None", Any], Any]


def _outputs(layer: Any, apply: Apply, name: str, index: int | None) -> Patch:
    """Hook `name` on the output of `layer` (the first item when it returns a tuple)."""
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            if isinstance(out, tuple):
                return (apply(name, index, out[0]), *out[1:])
            return apply(name, index, out)
        return call
    return Patch(layer, call_attr(layer), make)


def _inputs(layer: Any, apply: Apply, name: str, index: int | None) -> Patch:
    """Hook `name` on the first positional input of `layer`."""
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(x: Any, *args: Any, **kwargs: Any) -> Any:
            return original(apply(name, index, x), *args, **kwargs)
        return call
    return Patch(layer, call_attr(layer), make)


def _pattern(attention: Any, apply: Apply, name: str, index: int) -> list[Patch]:
    """Hook the attention softmax: keras-hub's [batch, kv_head, group, q, k] is shown to
    hooks as [batch, head, q, k] (query head n = kv head n // groups, group n % groups)."""
    from gemma_lab.backend import import_keras

    ops = import_keras().ops

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            probs = original(*args, **kwargs)
            shape = ops.shape(probs)
            heads = ops.reshape(probs, (shape[0], shape[1] * shape[2], shape[3], shape[4]))
            return ops.reshape(apply(name, index, heads), shape)
        return call

    # The fused kernel (GPU / TPU) never materialises probabilities: use the explicit path.
    unfused = Patch(attention, "_use_fused_attention_op", lambda _: lambda: False)
    return [unfused, Patch(attention.softmax, call_attr(attention.softmax), make)]


def _block(block: Any, apply: Apply, index: int, points: set[str]) -> list[Patch]:
    attention = block.attention
    patches = []
    if "resid_pre" in points:
        patches.append(_inputs(block, apply, f"blocks.{index}.resid_pre", index))
    for point, layer in (("attn.q", attention.query_dense), ("attn.k", attention.key_dense),
                         ("attn.v", attention.value_dense)):
        if point in points:
            patches.append(_outputs(layer, apply, f"blocks.{index}.{point}", index))
    if "attn.pattern" in points:
        patches += _pattern(attention, apply, f"blocks.{index}.attn.pattern", index)
    if "attn.z" in points:
        patches.append(_inputs(attention.output_dense, apply, f"blocks.{index}.attn.z", index))
    if "attn_out" in points:
        # What is added to the residual: after the post-attention norm where there is one.
        layer = block.post_attention_norm if block.use_post_attention_norm else attention
        patches.append(_outputs(layer, apply, f"blocks.{index}.attn_out", index))
    if "mlp.post" in points:
        patches.append(_inputs(block.ffw_linear, apply, f"blocks.{index}.mlp.post", index))
    if "mlp_out" in points:
        layer = block.post_ffw_norm if block.use_post_ffw_norm else block.ffw_linear
        patches.append(_outputs(layer, apply, f"blocks.{index}.mlp_out", index))
    if "resid_post" in points:
        patches.append(_outputs(block, apply, f"blocks.{index}.resid_post", index))
    return patches


class GemmaAdapter:
    """Hook points of a keras-hub `GemmaBackbone` (Gemma 1, 2) or `Gemma3Backbone`.

    Example:
        >>> from gemma_lab.testing import tiny_causal_lm
        >>> adapter = GemmaAdapter(tiny_causal_lm("gemma2"))
        >>> adapter.num_layers, adapter.sliding_window(0)
        (2, 4)
    """

    architectures = ("GemmaBackbone", "Gemma3Backbone")

    def __init__(self, causal_lm: Any):
        self.causal_lm = causal_lm
        self.backbone = causal_lm.backbone
        self.blocks = list(self.backbone.transformer_layers)

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def shape(self) -> ModelShape:
        """Layer, head and width sizes the hook points have."""
        attention = self.blocks[0].attention
        return ModelShape(
            num_layers=self.num_layers,
            num_heads=int(attention.num_query_heads),
            num_kv_heads=int(attention.num_key_value_heads),
            head_dim=int(attention.head_dim),
            hidden_dim=int(self.backbone.hidden_dim),
            mlp_dim=int(self.blocks[0].ffw_linear.kernel.shape[0]),
            vocabulary_size=int(self.backbone.vocabulary_size),
        )

    def sliding_window(self, layer: int) -> int | None:
        """The sliding window of block `layer`'s attention, None for global attention."""
        attention = self.blocks[layer].attention
        return (int(attention.sliding_window_size)
                if attention.use_sliding_window_attention else None)

    def patches(self, hooks: HookSet, apply: Apply) -> list[Patch]:
        """The patches that route every point `hooks` touches through `apply`."""
        points = hooks.points()
        per_block: dict[int, set[str]] = {}
        for name in points:
            parsed = block_point(name)
            if parsed is not None:
                per_block.setdefault(parsed[0], set()).add(parsed[1])
        patches: list[Patch] = []
        if "embed" in points or "logits" in points:
            patches.append(self._embedding(apply, points))
        for index, block_points in sorted(per_block.items()):
            patches += _block(self.blocks[index], apply, index, block_points)
        if "final_norm" in points:
            patches.append(_outputs(self.backbone.layer_norm, apply, "final_norm", None))
        return patches

    def _embedding(self, apply: Apply, points: frozenset[str]) -> Patch:
        """The tied embedding: `embed` on its forward call, `logits` on its reverse call."""
        embedding = self.backbone.token_embedding

        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            def call(inputs: Any, reverse: bool = False, **kwargs: Any) -> Any:
                out = original(inputs, reverse=reverse, **kwargs)
                name = "logits" if reverse else "embed"
                return apply(name, None, out) if name in points else out
            return call
        return Patch(embedding, call_attr(embedding), make)


__all__ = ["GemmaAdapter"]
