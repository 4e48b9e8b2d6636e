"""The one backend-specific step of attribution: a vector-valued function's values and the
gradient of their sum with respect to its input, on JAX, TensorFlow or torch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gemma_lab.backend import import_keras


def values_and_grad(fn: Callable[[Any], Any], x: Any) -> tuple[Any, Any]:
    """`(fn(x), d sum(fn(x)) / dx)` for a backend tensor `x`.

    With `fn` mapping a batch of inputs to one value per example (examples independent),
    the gradient's row i is the gradient of value i.

    Example:
        >>> keras = import_keras()
        >>> x = keras.ops.convert_to_tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> values, grad = values_and_grad(lambda t: keras.ops.sum(t * t, axis=-1), x)
        >>> keras.ops.convert_to_numpy(grad).tolist()
        [[2.0, 4.0], [6.0, 8.0]]
    """
    keras = import_keras()
    backend = keras.config.backend()
    x = keras.ops.convert_to_tensor(x)
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        values, pullback = jax.vjp(fn, x)
        (grad,) = pullback(jnp.ones_like(values))
        return values, grad
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            values = fn(x)
        return values, tape.gradient(values, x)
    import torch

    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        values = fn(x)
        (grad,) = torch.autograd.grad(values.sum(), x)
    return values.detach(), grad
