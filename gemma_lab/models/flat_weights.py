"""Fast warm loads: a cached preset's weights as one flat float32 .npy beside the preset.

keras-hub's `from_preset` first initialises every variable randomly (seconds for a 262k
vocabulary embedding) and then reads `model.weights.h5` (seconds more). Here the model is
built inside a Keras stateless scope that leaves variables uninitialised, and each variable
is then initialised straight from a memory-mapped .npy written on the first load. Any
mismatch (another keras-hub layout, a missing or short file) falls back to `from_preset`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

FLAT_FILE = "gemma_lab_weights.npy"
INDEX_FILE = "gemma_lab_weights.json"


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
    return True


def load_with_flat_weights(preset: Path, dtype: str) -> Any | None:
    """The preset's CausalLM with weights from the flat file, or None to use from_preset."""
    import keras
    import keras_hub
    from keras.src.backend.common import global_state
    from keras.src.backend.common.variables import initialize_all_variables

    try:
        index = json.loads((preset / INDEX_FILE).read_text())
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
    offset = 0
    for weight in weights:
        size = int(np.prod(weight.shape))
        value = np.array(flat[offset: offset + size]).reshape(weight.shape)  # writable copy
        offset += size
        weight._initializer = lambda shape, dtype, value=value: value
    initialize_all_variables()
    global_state.set_global_attribute("uninitialized_variables", [])
    return keras_hub.models.CausalLM.from_preset(
        str(preset), backbone=backbone, dtype=dtype, load_weights=False)


__all__ = ["has_flat_weights", "load_with_flat_weights", "save_flat_weights"]
