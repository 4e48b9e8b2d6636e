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

from gemma_lab.forward.patching import Patch


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


def patches(blocks: list[Any]) -> list[Patch]:
    """Scoped patches giving each Gemma 3 sliding-window attention of `blocks` the cheaper
    mask (applied only while gemma_lab runs the model: see `forward.patching`).

    Example:
        >>> from gemma_lab.testing import tiny_causal_lm
        >>> len(patches(list(tiny_causal_lm("gemma3").backbone.transformer_layers))) > 0
        True
    """
    return [
        Patch(block.attention, "_mask_sliding_window",
              lambda _, layer=block.attention: types.MethodType(_mask_sliding_window, layer))
        for block in blocks
        if type(block.attention).__name__ == "CachedGemma3Attention"
        and getattr(block.attention, "use_sliding_window_attention", False)
    ]
