"""Sliding-window attention of keras-hub's Gemma 3 that costs the window, not the cache.

Two scoped patches on each sliding-window `CachedGemma3Attention`, same values as
keras-hub's own code:

- the mask: keras-hub builds a (key_len x key_len) band matrix with triu/tril in every
  sliding-window layer on every call and then slices the query rows out of it. Eager torch
  really computes it (15 layers x key_len² per decode step: a large share of a torch step at
  256 positions, quadratic in the cache length). This builds only the (query_len x key_len)
  rows: position q may attend to k when |q - k| < sliding_window_size.
- the keys (`windowed=True`): against a KV cache, a chunk of queries at positions
  index .. index + n - 1 can only attend to keys after index - window, yet keras-hub's
  attention multiplies every query with the whole cache (keys it then masks out). A
  chunked prefill of 12k tokens into a 16k cache spent ~90% of its time there. This hands
  keras-hub's `_compute_attention` the slice of window + n - 1 keys (and their mask) that
  can be attended; the masked keys it leaves out had softmax weight exactly 0.
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


def _windowed_attention(self: Any, q: Any, k: Any, v: Any, attention_mask: Any,
                        training: bool = False, cache_update_index: Any = 0) -> Any:
    """keras-hub's `_compute_attention` on the keys queries at `cache_update_index` ..
    can attend to: (first query - window, last query]."""
    from keras import ops

    original = type(self)._compute_attention
    rows, query_len, key_len = ops.shape(attention_mask)
    static = all(isinstance(n, int) for n in (rows, query_len, key_len))
    size = min(key_len, int(self.sliding_window_size) + query_len - 1) if static else 0
    if (not static or size >= key_len
            or getattr(self, "use_bidirectional_attention", False)):
        return original(self, q, k, v, attention_mask, training=training,
                        cache_update_index=cache_update_index)
    index = ops.cast(cache_update_index, "int32")
    start = ops.clip(index + query_len - size, 0, key_len - size)
    _, _, heads, head_dim = ops.shape(k)
    k = ops.slice(k, (0, start, 0, 0), (rows, size, heads, head_dim))
    v = ops.slice(v, (0, start, 0, 0), (rows, size, heads, head_dim))
    attention_mask = ops.slice(attention_mask, (0, 0, start), (rows, query_len, size))
    # The band mask is computed from positions relative to the first key handed over.
    return original(self, q, k, v, attention_mask, training=training,
                    cache_update_index=index - start)


def patches(blocks: list[Any], windowed: bool = True) -> list[Patch]:
    """Scoped patches giving each Gemma 3 sliding-window attention of `blocks` the cheaper
    mask and, with `windowed`, only its window of a KV cache (applied only while gemma_lab
    runs the model: see `forward.patching`). A hook on the attention pattern sees the
    whole cache: pass windowed=False then.

    Example:
        >>> from gemma_lab.testing import tiny_causal_lm
        >>> len(patches(list(tiny_causal_lm("gemma3").backbone.transformer_layers))) > 0
        True
    """
    layers = [block.attention for block in blocks
              if type(block.attention).__name__ == "CachedGemma3Attention"
              and getattr(block.attention, "use_sliding_window_attention", False)]
    found = [Patch(layer, "_mask_sliding_window",
                   lambda _, layer=layer: types.MethodType(_mask_sliding_window, layer))
             for layer in layers]
    if windowed:
        found += [Patch(layer, "_compute_attention",
                        lambda _, layer=layer: types.MethodType(_windowed_attention, layer))
                  for layer in layers]
    return found
