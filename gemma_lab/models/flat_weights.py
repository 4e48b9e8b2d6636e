"""Fast warm loads: a cached preset's weights as one flat float32 .npy beside the preset.

keras-hub's `from_preset` first initialises every variable randomly (seconds for a 262k
vocabulary embedding) and then reads `model.weights.h5` (seconds more). Here the model is
built inside a Keras stateless scope that leaves variables uninitialised, and each variable
is then initialised straight from a memory-mapped .npy written on the first load. Any
mismatch (another keras-hub layout, a missing or short file) falls back to `from_preset`.
Both files are fingerprinted in the cache entry's marker when written (`cache.record_files`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from gemma_lab.errors import CacheError
from gemma_lab.models.cache import record_files

FLAT_FILE = "gemma_lab_weights.npy"
INDEX_FILE = "gemma_lab_weights.json"
FLAT_FILES = (FLAT_FILE, INDEX_FILE)


def _index(weights: list[Any]) -> list[list[Any]]:
    return [[w.path, list(w.shape)] for w in weights]


def has_flat_weights(preset: Path) -> bool:
    """Whether `preset` carries a flat weights file written by `save_flat_weights`."""
    return (preset / FLAT_FILE).is_file() and (preset / INDEX_FILE).is_file()


def save_flat_weights(causal_lm: Any, preset: Path) -> bool:
    """Write the backbone's weights as one float32 .npy (atomically); False if it cannot.

    Example:
        >>> import tempfile, pathlib
        >>> from gemma_lab.testing import tiny_causal_lm
        >>> save_flat_weights(tiny_causal_lm(), pathlib.Path(tempfile.mkdtemp()))
        True
    """
    weights = causal_lm.backbone.weights
    if any(str(w.dtype) not in ("float32", "bfloat16") for w in weights):
        return False  # quantized or integer weights: keep the h5 path
    total = sum(int(np.prod(w.shape)) for w in weights)
    try:
        handle, tmp = tempfile.mkstemp(prefix=f".{FLAT_FILE}.", dir=preset)
        os.close(handle)
        flat = np.lib.format.open_memmap(tmp, mode="w+", dtype="float32", shape=(total,))
        offset = 0
        for w in weights:
            value = np.asarray(w.numpy(), dtype="float32").ravel()
            flat[offset: offset + value.size] = value
            offset += value.size
        flat.flush()
        del flat
        (preset / INDEX_FILE).write_text(json.dumps(_index(weights)))
        os.chmod(tmp, 0o644)  # like the rest of the preset (mkstemp made it owner-only)
        os.replace(tmp, preset / FLAT_FILE)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        return False
    try:
        record_files(preset, add=FLAT_FILES)  # a cache entry's: fingerprinted as written
    except CacheError:
        pass  # a marker that cannot be rewritten now: the next load fingerprints the files
    return True


def drop_flat_weights(preset: Path) -> None:
    """Remove the flat weights file of `preset` and its fingerprints (it is damaged); the next
    float32 load reads the h5 and writes it again."""
    record_files(preset, drop=FLAT_FILES)
    for name in FLAT_FILES:
        (preset / name).unlink(missing_ok=True)


def load_with_flat_weights(preset: Path, dtype: str) -> Any | None:
    """The preset's CausalLM with weights from the flat file, or None to use from_preset."""
    import keras
    import keras_hub
    from keras.src.backend.common import global_state
    from keras.src.backend.common.variables import initialize_all_variables

    try:
        index = json.loads((preset / INDEX_FILE).read_text())
        task_config = json.loads((preset / "task.json").read_text())
        flat = np.load(preset / FLAT_FILE, mmap_mode="r")
    except (OSError, ValueError):
        return None
    # Variables created here stay uninitialised: no random initialisation to throw away.
    with keras.StatelessScope(initialize_variables=False):
        backbone = keras_hub.models.Backbone.from_preset(
            str(preset), dtype=dtype, load_weights=False)
    weights = backbone.weights
    total = sum(int(np.prod(shape)) for _, shape in index)
    if _index(weights) != index or flat.shape != (total,):
        initialize_all_variables()  # random values; the caller loads from_preset instead
        return None
    to_device = _device_array_maker()
    offset = 0
    for weight in weights:
        size = int(np.prod(weight.shape))
        value = to_device(flat[offset: offset + size].reshape(weight.shape), weight.dtype)
        offset += size
        weight._initializer = lambda shape, dtype, value=value: value
    initialize_all_variables()
    global_state.set_global_attribute("uninitialized_variables", [])
    return _task_from_config(task_config, backbone, preset)


def _device_array_maker() -> Any:
    """A function turning a (read-only, memory-mapped) host slice into an initial value.

    JAX: `jax.device_put` of an array already in the variable's dtype, which Keras then takes
    as is; `jnp.asarray` on a host array compiles a conversion per shape and copies twice
    (~6 s for this model). Other backends convert a writable host copy themselves.
    """
    import keras

    if keras.backend.backend() == "jax":
        import jax
        import ml_dtypes

        def to_jax(value: np.ndarray, dtype: str) -> Any:
            if dtype == "bfloat16":
                return jax.device_put(value.astype(ml_dtypes.bfloat16))
            return jax.device_put(value.astype(dtype, copy=False))

        return to_jax
    return lambda value, dtype: np.array(value)  # writable copy


def _task_from_config(task_config: dict[str, Any], backbone: Any, preset: Path) -> Any:
    """The CausalLM of `task.json` around an already built backbone.

    keras-hub's `from_preset` would load the tokenizer with Keras dependency tracking on, which
    wraps each of its 262k vocabulary entries (a list and a dict on the layer) in tracking
    code: ~6 s. The vocabulary holds no variables or layers, so it is loaded untracked here.
    """
    import keras
    from keras.src.utils.tracking import DotNotTrackScope  # no public alias

    preprocessor = keras.saving.deserialize_keras_object(task_config["config"]["preprocessor"])
    with DotNotTrackScope():
        preprocessor.load_preset_assets(str(preset))
    task_config["config"]["backbone"] = backbone
    task_config["config"]["preprocessor"] = preprocessor
    return keras.saving.deserialize_keras_object(task_config)


__all__ = ["FLAT_FILES", "drop_flat_weights", "has_flat_weights", "load_with_flat_weights",
           "save_flat_weights"]
