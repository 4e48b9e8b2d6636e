"""How each GGUF tensor maps onto a keras-hub Gemma variable, both ways.

One small rule per tensor, in the manner of keras-hub's HF converters. GGUF arrays here are
in HF layout (rows are outputs); keras-hub's EinsumDense kernels are per-head.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = np.ndarray


@dataclass(frozen=True)
class Layout:
    """A reversible transform between a GGUF array and a keras variable's value."""

    name: str
    to_keras: Callable[[Array, tuple[int, ...]], Array]
    to_gguf: Callable[[Array], Array]


def _heads_in(x: Array, shape: tuple[int, ...]) -> Array:
    # (heads*head_dim, hidden) -> (heads, hidden, head_dim)
    heads, hidden, head_dim = shape
    return x.reshape(heads, head_dim, hidden).transpose(0, 2, 1)


def _heads_in_back(x: Array) -> Array:
    heads, hidden, head_dim = x.shape
    return x.transpose(0, 2, 1).reshape(heads * head_dim, hidden)


def _heads_out(x: Array, shape: tuple[int, ...]) -> Array:
    # (hidden, heads*head_dim) -> (heads, head_dim, hidden)
    heads, head_dim, hidden = shape
    return x.reshape(hidden, heads, head_dim).transpose(1, 2, 0)


def _heads_out_back(x: Array) -> Array:
    heads, head_dim, hidden = x.shape
    return x.transpose(2, 0, 1).reshape(hidden, heads * head_dim)


# llama.cpp stores Gemma's RMSNorm weight as (1 + w); keras-hub stores w.
NORM = Layout("norm", lambda x, _: x - 1.0, lambda x: x + 1.0)
COPY = Layout("copy", lambda x, _: x, lambda x: x)
TRANSPOSE = Layout("transpose", lambda x, _: x.T, lambda x: x.T)
HEADS_IN = Layout("heads_in", _heads_in, _heads_in_back)
HEADS_OUT = Layout("heads_out", _heads_out, _heads_out_back)


def weight_rules(backbone: Any) -> Iterator[tuple[str, Any, Layout]]:
    """Yield (gguf tensor name, keras variable, layout) for every weight of a Gemma backbone.

    Works for keras-hub's GemmaBackbone (gemma, gemma2) and Gemma3Backbone.

    Example:
        >>> from gemma_lab.testing import tiny_backbone
        >>> names = [name for name, _, _ in weight_rules(tiny_backbone("gemma3"))]
        >>> names[0], "blk.0.attn_q.weight" in names
        ('token_embd.weight', True)
    """
    yield "token_embd.weight", backbone.get_layer("token_embedding").embeddings, COPY
    for i in range(backbone.num_layers):
        block = backbone.get_layer(f"decoder_block_{i}")
        attention = block.attention
        prefix = f"blk.{i}."
        yield prefix + "attn_norm.weight", block.pre_attention_norm.scale, NORM
        if getattr(block, "use_post_attention_norm", False):
            yield prefix + "post_attention_norm.weight", block.post_attention_norm.scale, NORM
        yield prefix + "ffn_norm.weight", block.pre_ffw_norm.scale, NORM
        if getattr(block, "use_post_ffw_norm", False):
            yield prefix + "post_ffw_norm.weight", block.post_ffw_norm.scale, NORM
        if getattr(attention, "use_query_key_norm", False):
            yield prefix + "attn_q_norm.weight", attention.query_norm.scale, NORM
            yield prefix + "attn_k_norm.weight", attention.key_norm.scale, NORM
        yield prefix + "attn_q.weight", attention.query_dense.kernel, HEADS_IN
        yield prefix + "attn_k.weight", attention.key_dense.kernel, HEADS_IN
        yield prefix + "attn_v.weight", attention.value_dense.kernel, HEADS_IN
        yield prefix + "attn_output.weight", attention.output_dense.kernel, HEADS_OUT
        yield prefix + "ffn_gate.weight", block.gating_ffw.kernel, TRANSPOSE
        yield prefix + "ffn_up.weight", block.gating_ffw_2.kernel, TRANSPOSE
        yield prefix + "ffn_down.weight", block.ffw_linear.kernel, TRANSPOSE
    yield "output_norm.weight", backbone.get_layer("final_normalization").scale, NORM
