"""Contrastive steering vectors: the mean difference of the residual stream of two text sets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from gemma_lab import validate
from gemma_lab.errors import InputError
from gemma_lab.inspect.activations import run_with_cache

if TYPE_CHECKING:
    from gemma_lab.runtime import ModelRuntime


def _texts(texts: str | Sequence[str], what: str) -> list[str]:
    if not isinstance(texts, (str, list, tuple)) or not texts or not all(
            isinstance(t, str) and t for t in ([texts] if isinstance(texts, str) else texts)):
        raise InputError(f"steering_vector() needs {what} as a non-empty string or a list of "
                         "them.")
    return validate.texts(texts, f"The {what} texts")


def _mean_residual(runtime: ModelRuntime, texts: list[str], name: str) -> np.ndarray:
    """Mean of `name` over every non-<bos> position of each text, then over the texts."""
    means = []
    for text in texts:
        values = run_with_cache(runtime, text, [name])[name]
        means.append(values[1:].mean(axis=0) if len(values) > 1 else values[0])
    return np.mean(means, axis=0)


def steering_vector(runtime: ModelRuntime, positive: str | Sequence[str],
                    negative: str | Sequence[str], layer: int) -> np.ndarray:
    """mean resid_post(positive) − mean resid_post(negative) at block `layer`: a float32
    [hidden] vector for `interventions.add(vector, layer)`. Each text is averaged over its
    positions after `<bos>`, then the texts of a side are averaged.

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> steering_vector(tiny_runtime(), "I love it", "I hate it", layer=1).shape
        (32,)
    """
    layer = runtime.adapter.shape.check_layer(layer)
    name = f"blocks.{layer}.resid_post"
    plus = _mean_residual(runtime, _texts(positive, "positive"), name)
    minus = _mean_residual(runtime, _texts(negative, "negative"), name)
    return (plus - minus).astype("float32")


__all__ = ["steering_vector"]
