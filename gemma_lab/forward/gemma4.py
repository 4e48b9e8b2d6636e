"""Where the hook points sit in keras-hub's Gemma 4 text decoder (`Gemma4Backbone`).

A `Gemma4TextDecoderBlock` runs: pre-attention norm → attention (query / key / value
projections, Q/K norms, softmax, output projection; a KV-shared layer borrows an earlier
layer's keys and values instead of projecting its own) → post-attention norm → residual add
→ pre-FFW norm → dense gated MLP, and in a mixture-of-experts model a router and expert bank
beside it → post-FFW norm → residual add → the per-layer-embedding gate (E2B / E4B) →
`layer_scalar`. The points are the inputs and outputs of those layers. Besides the common
points (`forward.points`), Gemma 4 has:

| point                   | value                                                      |
|-------------------------|------------------------------------------------------------|
| `blocks.{l}.moe.router` | router dispatch weights [batch, pos, experts], k non-zero  |
| `blocks.{l}.moe_out`    | the expert bank's output after its norm [batch, pos, hidden] |
| `blocks.{l}.ple.in`     | block l's per-layer embedding input [batch, pos, ple_dim]  |
| `blocks.{l}.ple_out`    | what the per-layer gate adds to the residual [batch, pos, hidden] |

keras-hub's block multiplies its MLP kernels directly (`ops.matmul(x, ffw_linear.kernel)`)
instead of calling those layers, so Gemma 4 has no `mlp.post` (neuron) point; a KV-shared
layer has no `attn.k` / `attn.v` of its own (hook the source layer's), and a layer whose
values reuse the key projection (`attention_k_eq_v`) has no `attn.v`: its `attn.k` (the key
projection's output) feeds both keys and values, and in a cached step keras-hub projects it
twice, so the hook runs twice on the same value. `logits` are the
final logits, after the CausalLM's soft cap (applied at the reverse embedding while `logits`
is hooked, where keras-hub applies it just after).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from gemma_lab.forward import taps
from gemma_lab.forward.patching import Patch, call_attr
from gemma_lab.forward.points import HookSet, ModelShape, by_block, point_names
from gemma_lab.forward.taps import Apply

_ORDER = ("resid_pre", "attn.q", "attn.k", "attn.v", "attn.pattern", "attn.z", "attn_out",
          "moe.router", "moe_out", "mlp_out", "ple.in", "ple_out", "resid_post")


def _router(router: Any, apply: Apply, name: str, index: int) -> Patch:
    """The router's flat [tokens, experts] dispatch weights shown as [batch, pos, experts]."""
    from gemma_lab.backend import import_keras

    ops = import_keras().ops

    def make(original: Any) -> Any:
        def call(x: Any, *args: Any, **kwargs: Any) -> Any:
            weights = original(x, *args, **kwargs)
            batch, length = ops.shape(x)[0], ops.shape(x)[1]
            shown = ops.reshape(weights, (batch, length, ops.shape(weights)[-1]))
            return ops.reshape(apply(name, index, shown), ops.shape(weights))
        return call
    return Patch(router, call_attr(router), make)


class Gemma4Adapter:
    """Hook points of a keras-hub `Gemma4Backbone` (text decoder).

    Example:
        >>> from gemma_lab.testing import tiny_causal_lm
        >>> adapter = Gemma4Adapter(tiny_causal_lm("gemma4"))
        >>> adapter.family, "blocks.0.moe.router" in adapter.point_names()
        ('Gemma 4', True)
    """

    architectures = ("Gemma4Backbone",)

    def __init__(self, causal_lm: Any):
        self.causal_lm = causal_lm
        self.backbone = causal_lm.backbone
        self.blocks = list(self.backbone.transformer_layers)

    family = "Gemma 4"
    lora_targets: tuple[str, ...] | None = None  # keras-hub's defaults

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def block_points(self, layer: int) -> list[str]:
        """The points block `layer` has, in forward order."""
        block = self.blocks[layer]
        attention = block.attention
        absent = set()
        if attention.key_dense is None:  # KV-shared: keys and values come from another layer
            absent |= {"attn.k", "attn.v"}
        if attention.value_dense is None:
            absent.add("attn.v")
        if not block.enable_moe_block:
            absent |= {"moe.router", "moe_out"}
        if not block.hidden_size_per_layer_input:
            absent |= {"ple.in", "ple_out"}
        return [point for point in _ORDER if point not in absent]

    def point_names(self) -> list[str]:
        """Every hook point of this model, in forward order."""
        return point_names(self.num_layers, self.block_points)

    @cached_property  # the model's layers do not change while it is loaded
    def shape(self) -> ModelShape:
        """Layer, head and width sizes the hook points have (per layer where they differ)."""
        first = self.blocks[0]
        return ModelShape(
            num_layers=self.num_layers,
            num_heads=int(first.attention.num_query_heads),
            num_kv_heads=int(first.attention.effective_num_kv_heads),
            head_dim=int(first.attention.head_dim),
            hidden_dim=int(self.backbone.hidden_dim),
            mlp_dim=int(first.actual_intermediate_dim),
            vocabulary_size=int(self.backbone.vocabulary_size),
            names=tuple(self.point_names()),
            head_dims=tuple(int(b.attention.head_dim) for b in self.blocks),
            kv_heads=tuple(int(b.attention.effective_num_kv_heads) for b in self.blocks),
            experts=int(first.num_experts or 0) if first.enable_moe_block else 0,
            per_layer_dim=int(first.hidden_size_per_layer_input or 0),
        )

    def sliding_window(self, layer: int) -> int | None:
        """The sliding window of block `layer`'s attention, None for global attention."""
        block = self.blocks[layer]
        if block.use_sliding_window_attention and not block.is_global_attention:
            return int(block.sliding_window_size)
        return None

    def kv_source(self, layer: int) -> int | None:
        """The layer whose keys and values block `layer` reuses (None: its own)."""
        block = self.blocks[layer]
        return block.kv_shared_layer_index if block.is_kv_shared_layer else None

    def backbone_inputs(self, token_ids: Any, padding_mask: Any) -> dict[str, Any]:
        """The backbone's functional inputs for whole sequences (positions 0..n-1)."""
        from gemma_lab.backend import import_keras

        ops = import_keras().ops
        # All tensors: Keras refuses a call whose inputs mix NumPy arrays and tensors (torch).
        token_ids, padding_mask = ops.convert_to_tensor(token_ids), ops.convert_to_tensor(
            padding_mask)
        positions = ops.broadcast_to(ops.arange(ops.shape(token_ids)[1], dtype="int32"),
                                     ops.shape(token_ids))
        return {"token_ids": token_ids, "padding_mask": padding_mask,
                "position_ids": positions}

    def unembed(self, hidden: Any) -> Any:
        """Logits as `Gemma4CausalLM.call_with_cache` makes them: the tied reverse
        embedding, then the CausalLM's final soft cap when it has one."""
        from gemma_lab.backend import import_keras

        ops = import_keras().ops
        logits = self.backbone.token_embedding(hidden, reverse=True)
        cap = getattr(self.causal_lm, "final_logit_cap", None)
        if cap is not None:
            logits = ops.tanh(logits / cap) * cap
        return logits

    def final_norm(self, residual: Any) -> Any:
        """The model's final RMSNorm."""
        return self.backbone.layer_norm(residual)

    def patches(self, hooks: HookSet, apply: Apply) -> list[Patch]:
        """The patches that route every point `hooks` touches through `apply`."""
        points = hooks.points()
        patches: list[Patch] = []
        if "embed" in points or "logits" in points:
            cap = getattr(self.causal_lm, "final_logit_cap", None) if "logits" in points else None
            if cap is not None:  # the tap caps, so the CausalLM must not cap again meanwhile
                patches.append(Patch(self.causal_lm, "final_logit_cap", lambda _: None))
            patches.append(taps.embedding(self.backbone.token_embedding, apply, points, cap))
        for index, block_points in by_block(points).items():
            patches += self._block(index, apply, block_points)
        if "final_norm" in points:
            patches.append(taps.outputs(self.backbone.layer_norm, apply, "final_norm", None))
        return patches

    def _block(self, index: int, apply: Apply, points: set[str]) -> list[Patch]:
        block = self.blocks[index]
        attention = block.attention

        def name(point: str) -> str:
            return f"blocks.{index}.{point}"

        patches = []
        if "resid_pre" in points:
            patches.append(taps.inputs(block, apply, name("resid_pre"), index))
        if "ple.in" in points:
            patches.append(taps.keyword(block, apply, name("ple.in"), index, "per_layer_input"))
        for point, layer in (("attn.q", attention.query_dense), ("attn.k", attention.key_dense),
                             ("attn.v", attention.value_dense)):
            if point in points:
                patches.append(taps.outputs(layer, apply, name(point), index))
        if "attn.pattern" in points:
            patches += taps.pattern(attention, apply, name("attn.pattern"), index)
        if "attn.z" in points:
            patches.append(taps.inputs(attention.output_dense, apply, name("attn.z"), index))
        if "attn_out" in points:
            patches.append(taps.outputs(block.post_attention_norm, apply, name("attn_out"),
                                        index))
        if "moe.router" in points:
            patches.append(_router(block.moe_router, apply, name("moe.router"), index))
        if "moe_out" in points:
            patches.append(taps.outputs(block.post_ffw_norm_moe_path, apply, name("moe_out"),
                                        index))
        if "mlp_out" in points:
            patches.append(taps.outputs(block.post_ffw_norm, apply, name("mlp_out"), index))
        if "ple_out" in points:
            patches.append(taps.outputs(block.post_per_layer_input_norm, apply,
                                        name("ple_out"), index))
        if "resid_post" in points:
            patches.append(taps.outputs(block, apply, name("resid_post"), index))
        return patches


__all__ = ["Gemma4Adapter"]
