"""A cheaper sliding-window mask for keras-hub's Gemma 3 attention.

keras-hub builds a (key_len x key_len) band matrix with triu/tril in every sliding-window
layer on every call and then slices the query rows out of it. Eager torch really computes
it (15 layers x key_len² per decode step: a large share of a torch step at 256 positions,
quadratic in the cache length). This builds only the (query_len x key_len) rows, with the
same values: position q may attend to k when |q - k| < sliding_window_size.
"""

from __future__ import annotations

import types
from typing import Any


def _mask_sliding_window(self: Any, attention_mask: Any, cache_update_index: Any = 0) -> Any:
    from keras import ops

    if getattr(self, "use_bidirectional_attention", False):
        return type(self)._mask_sliding_window(self, attention_mask, cache_update_index)
    _, query_len, key_len = ops.shape(attention_mask)
    queries = ops.expand_dims(
        ops.arange(query_len, dtype="int32") + ops.cast(cache_update_index, "int32"), 1)
    keys = ops.expand_dims(ops.arange(key_len, dtype="int32"), 0)
    band = ops.abs(queries - keys) < self.sliding_window_size
    return ops.logical_and(attention_mask, ops.expand_dims(band, 0))


def install(backbone: Any) -> int:
    """Give each Gemma 3 attention layer of `backbone` the cheaper mask; returns how many.

    Example:
        >>> from gemma_lab.testing import tiny_causal_lm
        >>> install(tiny_causal_lm("gemma3").backbone) > 0
        True
    """
    count = 0
    for layer in backbone._flatten_layers(include_self=False, recursive=True):
        if type(layer).__name__ == "CachedGemma3Attention" and hasattr(
                layer, "sliding_window_size"):
            layer._mask_sliding_window = types.MethodType(_mask_sliding_window, layer)
            count += 1
    return count
