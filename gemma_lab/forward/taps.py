"""Taps: patches that route one layer's input or output through the hook points.

Each adapter (`forward.gemma`, `forward.gemma4`) says which keras-hub layer yields which
point; a tap wraps only that layer's `call` (see `forward.patching`), so the model's own code
runs unchanged and a hook only sees, and may replace, a tensor passing between its layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gemma_lab.forward.patching import Patch, call_attr

# Apply(name, layer, value) -> value: runs the hook set's functions and records for `name`.
Apply = Callable[[str, "int | None", Any], Any]


def outputs(layer: Any, apply: Apply, name: str, index: int | None) -> Patch:
    """Hook `name` on the output of `layer` (the first item when it returns a tuple).

    Example:
        >>> from gemma_lab.backend import import_keras
        >>> from gemma_lab.forward.patching import applied
        >>> keras = import_keras()
        >>> dense = keras.layers.Dense(1, kernel_initializer="ones", use_bias=False)
        >>> with applied([outputs(dense, lambda name, i, v: v * 0, "out", None)]):
        ...     zero = float(dense(keras.ops.ones((1, 2)))[0, 0])
        >>> zero, float(dense(keras.ops.ones((1, 2)))[0, 0])
        (0.0, 2.0)
    """
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            if isinstance(out, tuple):
                return (apply(name, index, out[0]), *out[1:])
            return apply(name, index, out)
        return call
    return Patch(layer, call_attr(layer), make)


def inputs(layer: Any, apply: Apply, name: str, index: int | None) -> Patch:
    """Hook `name` on the first positional input of `layer`."""
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(x: Any, *args: Any, **kwargs: Any) -> Any:
            return original(apply(name, index, x), *args, **kwargs)
        return call
    return Patch(layer, call_attr(layer), make)


def keyword(layer: Any, apply: Apply, name: str, index: int | None, argument: str) -> Patch:
    """Hook `name` on the keyword argument `argument` of `layer`'s call (skipped when the
    caller passes None)."""
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get(argument) is not None:
                kwargs[argument] = apply(name, index, kwargs[argument])
            return original(*args, **kwargs)
        return call
    return Patch(layer, call_attr(layer), make)


def pattern(attention: Any, apply: Apply, name: str, index: int) -> list[Patch]:
    """Hook the attention softmax: keras-hub's [batch, kv_head, group, q, k] is shown to
    hooks as [batch, head, q, k] (query head n = kv head n // groups, group n % groups)."""
    from gemma_lab.backend import import_keras

    ops = import_keras().ops

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            probs = original(*args, **kwargs)
            shape = ops.shape(probs)
            heads = ops.reshape(probs, (shape[0], shape[1] * shape[2], shape[3], shape[4]))
            return ops.reshape(apply(name, index, heads), shape)
        return call

    # The fused kernel (GPU / TPU) never materialises probabilities: use the explicit path.
    unfused = Patch(attention, "_use_fused_attention_op", lambda _: lambda: False)
    return [unfused, Patch(attention.softmax, call_attr(attention.softmax), make)]


def embedding(token_embedding: Any, apply: Apply, points: frozenset[str],
              cap: float | None = None) -> Patch:
    """The tied embedding: `embed` on its forward call, `logits` on its reverse call (after
    the soft cap `cap`, for a model whose CausalLM caps the reverse embedding's output)."""
    from gemma_lab.backend import import_keras

    ops = import_keras().ops

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(values: Any, reverse: bool = False, **kwargs: Any) -> Any:
            out = original(values, reverse=reverse, **kwargs)
            if reverse and cap is not None:
                out = ops.tanh(out / cap) * cap
            name = "logits" if reverse else "embed"
            return apply(name, None, out) if name in points else out
        return call
    return Patch(token_embedding, call_attr(token_embedding), make)


__all__ = ["Apply", "embedding", "inputs", "keyword", "outputs", "pattern"]
