"""Choosing the Keras backend, and the few things that must differ per backend.

Everything else in gemma_lab uses `keras.ops`. Importing this module imports no Keras.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from gemma_lab.errors import BackendError

BACKENDS = ("jax", "tensorflow", "torch")
DEFAULT_BACKEND = "jax"
_ALIASES = {"tf": "tensorflow", "pytorch": "torch"}


def _normalise(name: str) -> str:
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in BACKENDS:
        raise BackendError(f"Unknown backend {name!r}: choose one of {', '.join(BACKENDS)}.")
    return key


def requested_backend() -> str:
    """The backend gemma_lab will use: set_backend > GEMMA_LAB_BACKEND > KERAS_BACKEND > jax.

    Example:
        >>> requested_backend() in BACKENDS
        True
    """
    for var in ("GEMMA_LAB_BACKEND", "KERAS_BACKEND"):
        if os.environ.get(var):
            return _normalise(os.environ[var])
    return DEFAULT_BACKEND


def active_backend() -> str | None:
    """The backend Keras already runs on in this process, or None before Keras is imported."""
    if "keras" not in sys.modules:
        return None
    import keras

    return keras.config.backend()


def set_backend(name: str) -> str:
    """Choose the Keras backend ("jax", "tensorflow" or "torch") before the first load.

    Keras fixes its backend when it is first imported; asking for another one afterwards
    raises `BackendError` telling you to restart the kernel.

    Example:
        >>> import gemma_lab
        >>> gemma_lab.set_backend("jax")
        'jax'
    """
    backend = _normalise(name)
    current = active_backend()
    if current is not None and current != backend:
        raise BackendError(
            f"Keras is already running on {current!r} in this process; it cannot switch to "
            f"{backend!r}. Restart the kernel and call gemma_lab.set_backend({backend!r}) "
            "before loading a model (or set GEMMA_LAB_BACKEND)."
        )
    os.environ["GEMMA_LAB_BACKEND"] = backend
    os.environ["KERAS_BACKEND"] = backend
    return backend


def import_keras() -> Any:
    """Import Keras on the requested backend and return the module.

    Example:
        >>> keras = import_keras()
        >>> keras.config.backend() in BACKENDS
        True
    """
    backend = requested_backend()
    current = active_backend()
    if current is None:
        os.environ["KERAS_BACKEND"] = backend
        # TensorFlow (keras-hub imports it on every backend) and SentencePiece write C++ log
        # lines to fd 2 as they load: set their levels and filter that start-up noise first.
        from gemma_lab import _quiet

        _quiet.configure_native_logging(backend)
        _quiet.install()
        try:
            import keras
        except ImportError as err:  # pragma: no cover - depends on the install
            raise BackendError(
                f"Keras could not start on {backend!r} ({err}). Install it with "
                f"`pip install 'gemma_lab[{backend}]'` or pick another backend."
            ) from err
        return keras
    if "GEMMA_LAB_BACKEND" in os.environ and current != backend:
        raise BackendError(
            f"Keras is already running on {current!r}, but {backend!r} was requested. "
            "Restart the kernel to change the backend."
        )
    import keras

    return keras


def compile_function(
    fn: Callable[..., Any], model: Any, donate: tuple[int, ...] = ()
) -> Callable[..., Any]:
    """Compile a pure inference function of `model`'s variables for the active backend.

    `fn(*args)` may read `model`'s variables; it must not assign to them. JAX gets a jitted
    stateless call (variables passed in as state, like keras-hub's generate); TensorFlow a
    graph `tf.function`; torch runs eagerly under `no_grad`. `donate` names positional
    arguments whose buffers JAX may reuse for outputs (a KV cache updated in place).

    Example:
        >>> import numpy as np
        >>> keras = import_keras()
        >>> layer = keras.layers.Dense(2)
        >>> layer.build((1, 3))
        >>> double = compile_function(lambda x: layer(x) * 2, layer)
        >>> double(np.ones((1, 3), "float32")).shape
        (1, 2)
    """
    keras = import_keras()
    backend = keras.config.backend()
    if backend == "jax":
        import jax

        _persistent_jax_cache(jax)
        variables = list(model.variables)

        @partial(jax.jit, donate_argnums=tuple(i + 1 for i in donate))
        def stateless(state, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, state, strict=True))):
                return fn(*args)

        def call_jax(*args):
            return stateless([v.value for v in variables], *args)

        return call_jax
    if backend == "tensorflow":
        import tensorflow as tf

        # Not jit_compile: XLA recompiles a cached decode step for every new position
        # (keras-hub's attention slices by the position), graph mode does not.
        return tf.function(fn)

    import torch

    def call_torch(*args):
        with torch.no_grad():
            return fn(*args)

    return call_torch


def _persistent_jax_cache(jax: Any) -> None:
    """Keep compiled XLA programs in <model cache>/xla, so a new process reuses them (the
    decode step and prefill otherwise recompile in every kernel), unless the user set a
    compilation cache directory already."""
    if jax.config.jax_compilation_cache_dir:
        return
    from gemma_lab.models.cache import cache_root

    try:
        jax.config.update("jax_compilation_cache_dir", str(cache_root() / "xla"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    except (AttributeError, ValueError):  # pragma: no cover - older or newer JAX
        pass


def ready(x: Any) -> Any:
    """`x` (a tensor or nested structure of them) once it is computed: JAX dispatches
    compiled calls asynchronously, so a timer stopped before this measures the dispatch;
    TensorFlow and torch on CPU return finished tensors already.

    Example:
        >>> ready([1.0, 2.0])
        [1.0, 2.0]
    """
    if import_keras().config.backend() == "jax":
        import jax

        return jax.block_until_ready(x)
    return x


def to_numpy(x: Any) -> Any:
    """Convert a backend tensor (or nested tuple of them) to numpy.

    In a multi-process JAX run (`gemma_lab.distributed`) an array may span devices of other
    processes: it is gathered from all of them (a collective: every process converts the
    same arrays in the same order, as they all run the same program)."""
    keras = import_keras()
    if isinstance(x, (tuple, list)):
        return type(x)(to_numpy(item) for item in x)
    if getattr(x, "is_fully_addressable", True) is False:
        import numpy as np
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return keras.ops.convert_to_numpy(x)


__all__ = [
    "BACKENDS",
    "active_backend",
    "compile_function",
    "import_keras",
    "ready",
    "requested_backend",
    "set_backend",
    "to_numpy",
]
