"""Where the hook points sit in keras-hub's Gemma decoder blocks (Gemma 1, 2 and 3).

`GemmaDecoderBlock` (Gemma 1 / 2) and `Gemma3DecoderBlock` call the same sublayers in the
same order: pre-attention norm → attention (query / key / value projections, softmax,
output projection) → optional post-attention norm → residual add → pre-MLP norm → gated MLP
(`gating_ffw`, `gating_ffw_2`, `ffw_linear`) → optional post-MLP norm → residual add. Each
hook point is the input or output of one of those layers, so the model's own code runs
unchanged and a patch only sees (and may replace) a tensor passing between its layers.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from gemma_lab.forward import taps
from gemma_lab.forward.patching import Patch
from gemma_lab.forward.points import HookSet, ModelShape, by_block, point_names
from gemma_lab.forward.taps import Apply


def _block(block: Any, apply: Apply, index: int, points: set[str]) -> list[Patch]:
    attention = block.attention
    patches = []
    if "resid_pre" in points:
        patches.append(taps.inputs(block, apply, f"blocks.{index}.resid_pre", index))
    for point, layer in (("attn.q", attention.query_dense), ("attn.k", attention.key_dense),
                         ("attn.v", attention.value_dense)):
        if point in points:
            patches.append(taps.outputs(layer, apply, f"blocks.{index}.{point}", index))
    if "attn.pattern" in points:
        patches += taps.pattern(attention, apply, f"blocks.{index}.attn.pattern", index)
    if "attn.z" in points:
        patches.append(taps.inputs(attention.output_dense, apply, f"blocks.{index}.attn.z", index))
    if "attn_out" in points:
        # What is added to the residual: after the post-attention norm where there is one.
        layer = block.post_attention_norm if block.use_post_attention_norm else attention
        patches.append(taps.outputs(layer, apply, f"blocks.{index}.attn_out", index))
    if "mlp.post" in points:
        patches.append(taps.inputs(block.ffw_linear, apply, f"blocks.{index}.mlp.post", index))
    if "mlp_out" in points:
        layer = block.post_ffw_norm if block.use_post_ffw_norm else block.ffw_linear
        patches.append(taps.outputs(layer, apply, f"blocks.{index}.mlp_out", index))
    if "resid_post" in points:
        patches.append(taps.outputs(block, apply, f"blocks.{index}.resid_post", index))
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
    lora_targets: tuple[str, ...] | None = None  # keras-hub's defaults (query, value)
    # Points this family has beyond the common ones (see `forward.points`); none here.
    extra_points: tuple[str, ...] = ()

    def __init__(self, causal_lm: Any):
        self.causal_lm = causal_lm
        self.backbone = causal_lm.backbone
        self.blocks = list(self.backbone.transformer_layers)

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @cached_property  # the model's layers do not change while it is loaded
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
            names=tuple(self.point_names()),
        )

    @property
    def family(self) -> str:
        """The model family in words, e.g. "Gemma 3"."""
        name = type(self.backbone).__name__
        if name == "Gemma3Backbone":
            return "Gemma 3"
        return "Gemma 2" if self.blocks[0].use_post_ffw_norm else "Gemma 1"

    def point_names(self) -> list[str]:
        """Every hook point of this model, in forward order."""
        return point_names(self.num_layers)

    def backbone_inputs(self, token_ids: Any, padding_mask: Any) -> dict[str, Any]:
        """The backbone's functional inputs for whole sequences."""
        return {"token_ids": token_ids, "padding_mask": padding_mask}

    def unembed(self, hidden: Any) -> Any:
        """Logits of final-normed hidden states: the tied reverse embedding (which applies
        the model's final soft cap, if it has one)."""
        return self.backbone.token_embedding(hidden, reverse=True)

    def final_norm(self, residual: Any) -> Any:
        """The model's final RMSNorm."""
        return self.backbone.layer_norm(residual)

    def sliding_window(self, layer: int) -> int | None:
        """The sliding window of block `layer`'s attention, None for global attention."""
        attention = self.blocks[layer].attention
        return (int(attention.sliding_window_size)
                if attention.use_sliding_window_attention else None)

    def patches(self, hooks: HookSet, apply: Apply) -> list[Patch]:
        """The patches that route every point `hooks` touches through `apply`."""
        points = hooks.points()
        patches: list[Patch] = []
        if "embed" in points or "logits" in points:
            patches.append(taps.embedding(self.backbone.token_embedding, apply, points))
        for index, block_points in by_block(points).items():
            patches += _block(self.blocks[index], apply, index, block_points)
        if "final_norm" in points:
            patches.append(taps.outputs(self.backbone.layer_norm, apply, "final_norm", None))
        return patches


__all__ = ["GemmaAdapter"]
