"""Where the hook points sit in keras-hub's Gemma 3n text decoder (`Gemma3nBackbone`).

Gemma 3n carries several residual streams through its blocks (AltUp): a block takes and
returns a stack [altup, batch, pos, hidden], and does its work on the *active* stream
(`altup_active_idx`). A `Gemma3nTextDecoderBlock` runs: AltUp predict (mixing the streams)
→ input norm of the active prediction → Laurel (a low-rank residual branch) beside attention
(query / key / value projections, Q/K/V norms, softmax, output projection; a KV-shared layer
reads an earlier layer's keys and values instead of projecting its own) → post-attention norm
→ residual add, averaged with Laurel → pre-FFW norm → gated MLP (with Gaussian top-k
activation sparsity where configured) → post-FFW norm → residual add → AltUp correct → the
per-layer-input gate, whose normed output is added to the other streams. The points are the
inputs and outputs of those layers, batch first:

| point                   | value                                                        |
|-------------------------|--------------------------------------------------------------|
| `embed`                 | token embeddings [batch, pos, hidden] (before the √hidden scale) |
| `blocks.{l}.resid_pre`  | the active AltUp stream entering block l [batch, pos, hidden] |
| `blocks.{l}.attn.q`     | queries after the projection [batch, pos, head, head_dim]     |
| `blocks.{l}.attn.k|v`   | keys / values after the projection [batch, pos, kv_head, head_dim] |
| `blocks.{l}.attn.pattern` | attention probabilities [batch, head, query, key]           |
| `blocks.{l}.attn.z`     | per-head output before the output projection [batch, pos, head, dim] |
| `blocks.{l}.attn_out`   | the post-attention norm's output [batch, pos, hidden]         |
| `blocks.{l}.laurel_out` | Laurel's output: its input plus its low-rank term [batch, pos, hidden] |
| `blocks.{l}.mlp.post`   | the MLP neurons, act(sparse(gate)) · up [batch, pos, intermediate] |
| `blocks.{l}.mlp_out`    | the post-FFW norm's output [batch, pos, hidden]               |
| `blocks.{l}.ple.in`     | block l's per-layer input [batch, pos, ple_dim]               |
| `blocks.{l}.ple_out`    | the per-layer gate's normed output [batch, pos, hidden] |
| `blocks.{l}.resid_post` | the active AltUp stream leaving block l [batch, pos, hidden]  |
| `final_norm`            | the final RMSNorm's output [batch, pos, hidden]               |
| `logits`                | soft-capped logits [batch, pos, vocabulary]                   |

A hook on `resid_pre` / `resid_post` may rewrite the active stream; the other AltUp streams
are not exposed. The final norm reads the mean of all streams (each projected back), so the
logit lens on a block's active stream is an approximation for Gemma 3n. A KV-shared layer has
no `attn.k` / `attn.v` of its own (hook the source layer's, `kv_source`). keras-hub computes
the softmax inside `_compute_attention` (no layer to tap): the `attn.pattern` tap wraps that
method, and only when a hook rewrites the probabilities does it redo their product with the
values (with keras-hub's own `repeat_kv`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

from gemma_lab.errors import ModelLoadError
from gemma_lab.forward import taps
from gemma_lab.forward.patching import Patch, call_attr
from gemma_lab.forward.points import HookSet, ModelShape, by_block, point_names
from gemma_lab.forward.taps import Apply

_ORDER = ("resid_pre", "attn.q", "attn.k", "attn.v", "attn.pattern", "attn.z", "attn_out",
          "laurel_out", "mlp.post", "mlp_out", "ple.in", "ple_out", "resid_post")


def _ops() -> Any:
    from gemma_lab.backend import import_keras

    return import_keras().ops


def _heads(apply: Apply, name: str, index: int, flat: Any, head_dim: int) -> Any:
    """`flat` [batch, pos, heads * head_dim] shown to hooks as [batch, pos, heads, head_dim]."""
    ops = _ops()
    shape = ops.shape(flat)
    split = ops.reshape(flat, (shape[0], shape[1], shape[2] // head_dim, head_dim))
    hooked = apply(name, index, split)
    return flat if hooked is split else ops.reshape(hooked, shape)


def _head_outputs(layer: Any, apply: Apply, name: str, index: int, head_dim: int) -> Patch:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return _heads(apply, name, index, original(*args, **kwargs), head_dim)
        return call
    return Patch(layer, call_attr(layer), make)


def _head_inputs(layer: Any, apply: Apply, name: str, index: int, head_dim: int) -> Patch:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(x: Any, *args: Any, **kwargs: Any) -> Any:
            return original(_heads(apply, name, index, x, head_dim), *args, **kwargs)
        return call
    return Patch(layer, call_attr(layer), make)


def _pattern(attention: Any, apply: Apply, name: str, index: int) -> Patch:
    """Hook the probabilities `_compute_attention` returns ([batch, head, query, key]); a
    rewrite is multiplied with the (repeated) values as keras-hub does."""
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def compute(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
            output, weights = original(query, key, value, *args, **kwargs)
            hooked = apply(name, index, weights)
            if hooked is weights:
                return output, weights
            ops = _ops()
            output = ops.matmul(hooked, attention.repeat_kv(value))
            return ops.transpose(output, (0, 2, 1, 3)), hooked
        return compute
    return Patch(attention, "_compute_attention", make)


def _streams(block: Any, apply: Apply, index: int, points: set[str]) -> Patch:
    """`resid_pre` / `ple.in` on the block's (streams, per_layer_input, padding_mask) input,
    `resid_post` on its output streams: the active stream only."""
    active = int(block.altup_active_idx)

    def active_hooked(name: str, streams: Any) -> Any:
        stream = streams[active]
        hooked = apply(name, index, stream)
        if hooked is stream:
            return streams
        ops = _ops()
        parts = [streams[i] for i in range(int(block.altup_num_inputs))]
        parts[active] = hooked
        return ops.stack(parts, axis=0)

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(inputs: Any, *args: Any, **kwargs: Any) -> Any:
            streams, per_layer_input, padding_mask = inputs
            if "resid_pre" in points:
                streams = active_hooked(f"blocks.{index}.resid_pre", streams)
            if "ple.in" in points:
                per_layer_input = apply(f"blocks.{index}.ple.in", index, per_layer_input)
            out, cache = original((streams, per_layer_input, padding_mask), *args, **kwargs)
            if "resid_post" in points:
                out = active_hooked(f"blocks.{index}.resid_post", out)
            return out, cache
        return call
    return Patch(block, call_attr(block), make)


def _logits(language_model: Any, apply: Apply) -> Patch:
    """`logits` on the reverse call of the text model's `token_embedding` (after its cap)."""
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def token_embedding(inputs: Any, reverse: bool = False) -> Any:
            out = original(inputs, reverse=reverse)
            return apply("logits", None, out) if reverse else out
        return token_embedding
    return Patch(language_model, "token_embedding", make)


class Gemma3nAdapter:
    """Hook points of a keras-hub `Gemma3nBackbone` (its text decoder).

    Example:
        >>> from gemma_lab.testing import tiny_causal_lm
        >>> adapter = Gemma3nAdapter(tiny_causal_lm("gemma3n"))
        >>> adapter.family, "blocks.0.laurel_out" in adapter.point_names()
        ('Gemma 3n', True)
    """

    architectures = ("Gemma3nBackbone",)
    family = "Gemma 3n"
    # keras-hub's default LoRA targets (query_dense, value_dense) name no Gemma 3n layer.
    lora_targets: tuple[str, ...] | None = ("q_proj", "v_proj")

    def __init__(self, causal_lm: Any):
        backbone = causal_lm.backbone
        if getattr(backbone, "vision_encoder", None) is not None or getattr(
                backbone, "audio_encoder", None) is not None:
            # Its functional call then requires image and audio inputs as well.
            raise ModelLoadError(
                "gemma_lab runs Gemma 3n's text decoder only, and this Gemma3nBackbone has a "
                "vision or audio encoder. Build it with vision_encoder_config=None and "
                "audio_encoder_config=None (see gemma_lab.testing.tiny_gemma3n).")
        self.causal_lm = causal_lm
        self.backbone = backbone
        self.language_model = backbone.language_model
        self.blocks = list(self.language_model.transformer_layers)

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def block_points(self, layer: int) -> list[str]:
        """The points block `layer` has, in forward order."""
        absent = {"attn.k", "attn.v"} if self.blocks[layer].is_kv_shared_layer else set()
        return [point for point in _ORDER if point not in absent]

    def point_names(self) -> list[str]:
        """Every hook point of this model, in forward order."""
        return point_names(self.num_layers, self.block_points)

    @cached_property  # the model's layers do not change while it is loaded
    def shape(self) -> ModelShape:
        """Layer, head and width sizes the hook points have."""
        model = self.language_model
        return ModelShape(
            num_layers=self.num_layers,
            num_heads=int(model.num_attention_heads),
            num_kv_heads=int(model.num_key_value_heads),
            head_dim=int(model.head_dim),
            hidden_dim=int(model.hidden_size),
            mlp_dim=int(self.blocks[0].intermediate_size),
            vocabulary_size=int(model.vocab_size),
            names=tuple(self.point_names()),
            per_layer_dim=int(model.hidden_size_per_layer_input),
        )

    def sliding_window(self, layer: int) -> int | None:
        """The sliding window of block `layer`'s attention, None for global attention."""
        window = self.blocks[layer].attention.sliding_window
        return None if window is None else int(window)

    def kv_source(self, layer: int) -> int | None:
        """The layer whose keys and values block `layer` reuses (None: its own): as in
        keras-hub, the last non-shared layer of the same attention type."""
        if not self.blocks[layer].is_kv_shared_layer:
            return None
        types = self.language_model.layer_types
        return max((i for i in range(layer) if types[i] == types[layer]
                    and not self.blocks[i].is_kv_shared_layer), default=None)

    def backbone_inputs(self, token_ids: Any, padding_mask: Any) -> dict[str, Any]:
        """The backbone's functional inputs for whole sequences (text only)."""
        return {"token_ids": token_ids, "padding_mask": padding_mask}

    def unembed(self, hidden: Any) -> Any:
        """Logits of final-normed hidden states as `Gemma3nCausalLM.call_with_cache` makes
        them: the text model's tied reverse embedding, soft cap included."""
        return self.language_model.token_embedding(hidden, reverse=True)

    def final_norm(self, residual: Any) -> Any:
        """The model's final RMSNorm."""
        return self.language_model.final_normalization(residual)

    def step_inputs(self, token_ids: Any, cache: Any) -> dict[str, Any]:
        """Extra `call_with_cache` arguments for `token_ids` at a cache index: a chunk of
        several tokens needs a padding mask as long as the cache (keras-hub's default,
        as long as the chunk, only broadcasts against the cache for one token)."""
        from gemma_lab.backend import import_keras

        ops = import_keras().ops
        rows, count = ops.shape(token_ids)
        if count == 1:
            return {}
        return {"padding_mask": ops.ones((rows, ops.shape(cache)[4]), dtype="bool")}

    def patches(self, hooks: HookSet, apply: Apply) -> list[Patch]:
        """The patches that route every point `hooks` touches through `apply`."""
        points = hooks.points()
        patches: list[Patch] = []
        if "embed" in points:
            patches.append(taps.outputs(self.language_model.embed_tokens.embedding, apply,
                                        "embed", None))
        for index, block_points in by_block(points).items():
            patches += self._block(index, apply, block_points)
        if "final_norm" in points:
            patches.append(taps.outputs(self.language_model.final_normalization, apply,
                                        "final_norm", None))
        if "logits" in points:
            patches.append(_logits(self.language_model, apply))
        return patches

    def _block(self, index: int, apply: Apply, points: set[str]) -> list[Patch]:
        block = self.blocks[index]
        attention = block.attention
        head_dim = int(attention.head_dim)

        def name(point: str) -> str:
            return f"blocks.{index}.{point}"

        patches = []
        if points & {"resid_pre", "ple.in", "resid_post"}:
            patches.append(_streams(block, apply, index, points))
        for point, layer in (("attn.q", attention.q_proj), ("attn.k", attention.k_proj),
                             ("attn.v", attention.v_proj)):
            if point in points:
                patches.append(_head_outputs(layer, apply, name(point), index, head_dim))
        if "attn.pattern" in points:
            patches.append(_pattern(attention, apply, name("attn.pattern"), index))
        if "attn.z" in points:
            patches.append(_head_inputs(attention.o_proj, apply, name("attn.z"), index,
                                        head_dim))
        for point, layer in (("attn_out", block.post_attention_layernorm),
                             ("laurel_out", block.laurel),
                             ("mlp_out", block.post_feedforward_layernorm),
                             ("ple_out", block.post_per_layer_input_norm)):
            if point in points:
                patches.append(taps.outputs(layer, apply, name(point), index))
        if "mlp.post" in points:
            patches.append(taps.inputs(block.mlp.down_proj, apply, name("mlp.post"), index))
        return patches


__all__ = ["Gemma3nAdapter"]
