"""One keras-hub Gemma decoder block, run sublayer by sublayer so its attention
probabilities can be read out.

Every weight-bearing step calls the block's own layers (norms, Q/K/V/output projections,
RoPE, sliding-window mask, softmax, MLP), in the order `GemmaDecoderBlock.call` /
`Gemma3DecoderBlock.call` use them. The only lines written here are the ones keras-hub keeps
inside `_compute_attention` without exposing the probabilities: query scaling, the grouped
query/key product and the logit soft cap. They follow keras-hub's non-fused path exactly.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from gemma_lab.backend import import_keras


def query_scale(attention: Any) -> float:
    """The factor keras-hub multiplies queries by before the query/key product."""
    if attention.query_head_dim_normalize:
        return float(1 / np.sqrt(attention.head_dim))
    return float(1 / np.sqrt(attention.hidden_dim // attention.num_query_heads))


def attention_mask(block: Any, normalized_x: Any, padding_mask: Any) -> Any:
    """The block's own causal ∧ padding mask [batch, query, key] (no sliding window yet)."""
    kwargs = {"cache": None, "cache_update_index": 0}
    if "vision_mask" in inspect.signature(block._compute_attention_mask).parameters:
        kwargs["vision_mask"] = None  # Gemma 3, text only
    return block._compute_attention_mask(normalized_x, padding_mask, **kwargs)


def windowed(attention: Any, mask: Any) -> Any:
    """`mask` restricted to the attention layer's sliding window, if it has one."""
    if attention.use_sliding_window_attention:
        return attention._mask_sliding_window(mask, cache_update_index=0)
    return mask


def attention_probabilities(attention: Any, query: Any, key: Any, mask: Any) -> Any:
    """Softmax attention weights [batch, kv_heads, groups, query, key] in float32.

    `mask` is the final [batch, query, key] mask (causal, padding, sliding window).

    Mirrors keras-hub's `_compute_attention` (non-fused path): scaled queries grouped per
    key/value head (GQA), soft-capped logits, the attention layer's own masked softmax.
    """
    ops = import_keras().ops
    query = query * ops.cast(query_scale(attention), query.dtype)
    batch, length, _, head_dim = ops.shape(query)
    groups = attention.num_query_heads // attention.num_key_value_heads
    query = ops.reshape(query, (batch, length, attention.num_key_value_heads, groups, head_dim))
    logits = ops.einsum("btkgh,bskh->bkgts", query, key)
    if attention.logit_soft_cap is not None:
        cap = attention.logit_soft_cap
        logits = ops.multiply(ops.tanh(ops.divide(logits, cap)), cap)
    return attention.softmax(logits, mask=mask[:, None, None, :, :])


def traced_block(block: Any, x: Any, padding_mask: Any) -> tuple[Any, Any]:
    """Run `block` on residual `x`; return (block output, attention probs [batch, head, q, k]).

    Query head `n` is key/value head `n // groups`, group `n % groups`, as in keras-hub.
    """
    keras = import_keras()
    ops = keras.ops
    attention = block.attention

    normalized = block.pre_attention_norm(x)
    mask = attention_mask(block, normalized, padding_mask)

    query = attention.query_dense(normalized)
    key = attention.key_dense(normalized)
    if getattr(attention, "use_query_key_norm", False):
        query = attention.query_norm(query)
        key = attention.key_norm(key)
    query = attention._apply_rope(query, 0)
    key = attention._apply_rope(key, 0)
    value = attention.value_dense(normalized)

    probs = attention_probabilities(attention, query, key, windowed(attention, mask))
    mixed = ops.einsum("bkgts,bskh->btkgh", ops.cast(probs, value.dtype), value)
    batch, length = ops.shape(mixed)[0], ops.shape(mixed)[1]
    mixed = ops.reshape(mixed, (batch, length, attention.num_query_heads, attention.head_dim))
    # keras-hub zeroes the rows of queries that may attend to nothing (all padding).
    nothing = ops.all(ops.equal(mask, 0), axis=-1, keepdims=True)[..., None]
    mixed = ops.where(nothing, ops.zeros_like(mixed), mixed)
    attended = attention.output_dense(mixed)
    if block.use_post_attention_norm:
        attended = block.post_attention_norm(attended)
    attention_x = x + attended

    normalized = block.pre_ffw_norm(attention_x)
    gate = keras.activations.gelu(block.gating_ffw(normalized), approximate=True)
    hidden = block.ffw_linear(gate * block.gating_ffw_2(normalized))
    if block.use_post_ffw_norm:
        hidden = block.post_ffw_norm(hidden)
    output = hidden + attention_x

    heads = ops.reshape(probs, (batch, attention.num_query_heads, length, ops.shape(probs)[-1]))
    return output, heads


def embed(backbone: Any, token_ids: Any) -> Any:
    """The residual stream entering block 0: token embeddings × √hidden, as keras-hub does."""
    ops = import_keras().ops
    x = backbone.token_embedding(token_ids)
    return x * ops.cast(ops.sqrt(backbone.hidden_dim), x.dtype)


def unembed(backbone: Any, x: Any) -> Any:
    """Final norm, then the tied reverse embedding (with the final logit soft cap if any)."""
    return backbone.token_embedding(backbone.get_layer("final_normalization")(x), reverse=True)


def decoder_blocks(backbone: Any) -> list[Any]:
    return list(backbone.transformer_layers)


def sliding_window(block: Any) -> int | None:
    """The sliding window size of a block's attention, or None for global attention."""
    attention = block.attention
    return int(attention.sliding_window_size) if attention.use_sliding_window_attention else None
