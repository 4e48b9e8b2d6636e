"""The logit lens: read each layer's residual stream through the model's own final norm and
tied (soft-capped) unembedding, keeping only top-k and the actual next token's probability."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gemma_lab.backend import import_keras, to_numpy
from gemma_lab.decoding import bucket_length
from gemma_lab.forward import ForwardPass, compiled_pass

# Rows of [rows, vocabulary] float32 logits materialised per call (≈128 MiB).
LOGITS_PER_CALL = 2**25


class LogitLens:
    """Compiled logit-lens statistics of one model's forward pass.

    Example:
        >>> import numpy as np
        >>> from gemma_lab.testing import tiny_runtime
        >>> lens = LogitLens(tiny_runtime("gemma3").forward_pass(), k=3)
        >>> top_ids, top_probs, target = lens(np.zeros((5, 32), "float32"), np.ones(5, "int32"))
        >>> top_ids.shape, target.shape
        ((5, 3), (5,))
    """

    def __init__(self, run: ForwardPass, k: int = 5):
        self.vocabulary_size = run.adapter.shape.vocabulary_size
        self.k = int(k)
        self._stats = compiled_pass(run, self._stats_fn)
        self._logits = compiled_pass(run, self._logits_fn)

    def _stats_fn(self, run: ForwardPass, hidden: Any, targets: Any) -> tuple[Any, Any, Any]:
        ops = import_keras().ops
        logits = ops.cast(run.residual_logits(hidden), "float32")
        log_norm = ops.logsumexp(logits, axis=-1, keepdims=True)
        top_values, top_ids = ops.top_k(logits, self.k)
        target = ops.take_along_axis(logits, ops.expand_dims(targets, -1), axis=-1)
        return top_ids, ops.exp(top_values - log_norm), ops.exp(target - log_norm)[:, 0]

    def _logits_fn(self, run: ForwardPass, hidden: Any) -> Any:
        return import_keras().ops.cast(run.residual_logits(hidden), "float32")

    def __call__(self, hidden: np.ndarray, targets: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k ids, top-k probabilities and target probability for each row of `hidden`.

        `hidden` is [rows, hidden_dim] residual stream; `targets` [rows] token ids.
        """
        rows = hidden.shape[0]
        cap = max(1, LOGITS_PER_CALL // self.vocabulary_size)
        per_call = min(bucket_length(rows), 2 ** int(math.log2(cap)))
        top_ids, top_probs, target_probs = [], [], []
        for start in range(0, rows, per_call):
            chunk = np.zeros((per_call, hidden.shape[1]), dtype="float32")
            chunk_targets = np.zeros((per_call,), dtype="int32")
            stop = min(start + per_call, rows)
            chunk[: stop - start] = hidden[start:stop]
            chunk_targets[: stop - start] = targets[start:stop]
            ids, probs, target = to_numpy(self._stats(chunk, chunk_targets))
            top_ids.append(ids[: stop - start])
            top_probs.append(probs[: stop - start])
            target_probs.append(target[: stop - start])
        return (np.concatenate(top_ids).astype("int64"), np.concatenate(top_probs),
                np.concatenate(target_probs))

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        """Full float32 logits [rows, vocabulary] of each row of `hidden` (keep it small)."""
        return to_numpy(self._logits(np.asarray(hidden, dtype="float32")))
