"""Resolving a model spec to a keras-hub Gemma CausalLM: default, GGUF, preset dir or remote."""

from __future__ import annotations

import gc
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gemma_lab._progress import progress_counter
from gemma_lab.backend import import_keras
from gemma_lab.chat_template import CheckpointTemplate, from_gguf, from_hf_folder
from gemma_lab.errors import CacheError, InputError, ModelLoadError
from gemma_lab.models import hf_folder
from gemma_lab.models.cache import (
    damaged_files,
    entry_files,
    entry_lock,
    entry_path,
    read_marker,
    record_files,
    recorded_files,
    write_entry,
)
from gemma_lab.models.default_model import (
    DEFAULT_MODEL_ID,
    default_gguf_path,
    default_gguf_sha256,
)
from gemma_lab.models.distribution import make_distribution
from gemma_lab.models.distribution import scope as distribution_scope
from gemma_lab.models.flat_weights import (
    FLAT_FILES,
    drop_flat_weights,
    has_flat_weights,
    load_with_flat_weights,
    save_flat_weights,
)
from gemma_lab.models.gguf_file import read_gguf, sha256_file

DTYPES = ("float32", "bfloat16", "int8")
REMOTE_PREFIXES = ("kaggle://", "hf://", "modelscope://", "gs://")


@dataclass(frozen=True)
class LoadedModel:
    """A loaded keras-hub CausalLM and where it came from."""

    causal_lm: Any
    model_id: str
    source: str
    weights_sha256: str | None
    dtype: str
    distribution: Any = None  # the Keras distribution the model was built under, if any
    chat_template: CheckpointTemplate | None = None  # the checkpoint's own, if it has one


def _check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise InputError(f"dtype={dtype!r} is not supported; choose one of {', '.join(DTYPES)}.")
    return dtype


def _from_preset(preset: str, dtype: str, distribution: Any = None, task: Any = None) -> Any:
    import_keras()
    import keras_hub

    task = task or keras_hub.models.CausalLM
    # int8 loads float32 weights, then quantizes them with Keras.
    load_dtype = "float32" if dtype == "int8" else dtype
    # Variables take their device layout when created: build inside the distribution.
    try:
        with distribution_scope(distribution), _safe_mode():
            try:
                causal_lm = task.from_preset(preset, dtype=load_dtype)
            except TypeError as err:
                # keras-hub's generic lookup can pick Gemma 4's assistant (draft) class.
                if "Gemma4AssistantCausalLM" not in str(err):
                    raise
                causal_lm = keras_hub.models.Gemma4CausalLM.from_preset(preset,
                                                                        dtype=load_dtype)
    except (TypeError, ValueError) as err:
        if not any(hint in str(err) for hint in _UNSAFE_CONFIG_HINTS):
            raise
        raise ModelLoadError(
            f"The preset {preset!r} asks Keras to run code or build a class it does not know "
            f"({err}). gemma_lab loads presets in Keras safe mode and will not run it: use a "
            "preset saved by keras-hub's save_to_preset, or a .gguf file."
        ) from err
    if dtype == "int8":
        _quantize_int8(causal_lm)
    return causal_lm


def _quantize_int8(causal_lm: Any) -> None:
    """Keras int8 weight quantization of the backbone (not the tokenizer layer).

    Keras runs a full `gc.collect()` for every float kernel it replaces (127 here), each
    scanning every object of the process (~0.2 s with TensorFlow, JAX and keras-hub loaded:
    28 of the 45 s). Objects that exist before quantizing are frozen out of those scans;
    the replaced kernels are still freed by reference counting.
    """
    gc.freeze()
    try:
        causal_lm.backbone.quantize("int8")
    finally:
        gc.unfreeze()


def _from_cache_entry(preset: Path, dtype: str, distribution: Any = None) -> Any:
    """A converted cache entry; from its flat weights file when it has one (`flat_weights`:
    no random initialisation, no h5), which the first float32 load writes."""
    if distribution is None and has_flat_weights(preset):
        import_keras()
        with _safe_mode():
            causal_lm = load_with_flat_weights(preset, "float32" if dtype == "int8" else dtype)
        if causal_lm is not None:
            if dtype == "int8":
                _quantize_int8(causal_lm)
            return causal_lm
    causal_lm = _from_preset(str(preset), dtype, distribution)
    if dtype == "float32" and distribution is None and not has_flat_weights(preset):
        save_flat_weights(causal_lm, preset)
    return causal_lm


# Keras' messages when safe mode refuses a lambda or a config names an unknown class.
_UNSAFE_CONFIG_HINTS = ("lambda", "arbitrary code", "Could not locate", "Could not deserialize",
                        "no class registered", "KerasSaveable")


def _safe_mode() -> Any:
    """Keras' default safe mode for this load, even if the process enabled unsafe
    deserialization: configs may not carry lambdas (deserialize_keras_object's default).
    The scope is reset to "unset", not True: True would also refuse keras-hub's own
    tokenizer assets inside the preset directory."""
    try:
        from keras.src.saving.serialization_lib import SafeModeScope  # no public alias
    except ImportError:  # pragma: no cover - Keras moved it; its default is safe mode anyway
        import contextlib

        return contextlib.nullcontext()
    return SafeModeScope(None)


H5_FILE = "model.weights.h5"


def _entry_damage(entry: Path, flat: bool) -> str | None:
    """What is wrong with the files of the complete cache entry `entry` that this load reads
    (its flat weights file instead of the h5 when it has one and `flat`), checked against
    the marker's fingerprints; None when they are intact. A damaged flat weights file alone
    is removed (the load writes it again from the h5). Files no fingerprint covers yet (an
    entry of a gemma_lab without fingerprints) are fingerprinted now, as they are."""
    names = entry_files(entry)
    if flat and has_flat_weights(entry):
        names = [name for name in names if name != H5_FILE]
    recorded = recorded_files(entry)
    damaged = damaged_files(entry, [name for name in names if name in recorded])
    if damaged and set(damaged) <= set(FLAT_FILES) and _dropped_flat_weights(entry, damaged):
        damaged = damaged_files(entry, [H5_FILE])
    if not damaged:
        _fingerprint(entry, [name for name in names if name not in recorded])
    return "; ".join(damaged.values()) or None


def _dropped_flat_weights(entry: Path, damaged: dict[str, str]) -> bool:
    """Remove the entry's damaged flat weights file (False where the cache is read-only)."""
    try:
        drop_flat_weights(entry)
    except (OSError, CacheError):
        return False
    warnings.warn(f"The cache entry {entry} was damaged ({'; '.join(damaged.values())}): "
                  f"rebuilt its flat weights file from {H5_FILE}.", stacklevel=2)
    return True


def _fingerprint(entry: Path, names: list[str]) -> None:
    """Fingerprint files of the entry written without fingerprints, where the cache is
    writable (a read-only cache keeps loading, unchecked as before)."""
    try:
        record_files(entry, add=[name for name in names if (entry / name).is_file()])
    except (OSError, CacheError):
        pass


def _intact_entry(entry: Path, flat: bool) -> tuple[bool, str | None]:
    """(whether `entry` is complete and undamaged, what is damaged in a complete entry)."""
    if read_marker(entry) is None:
        return False, None
    damage = _entry_damage(entry, flat)
    return damage is None, damage


def _converted_preset(gguf_path: Path | None, sha256: str, progress: bool,
                      flat: bool = True) -> Path:
    """The cache entry holding the keras-hub preset converted from this GGUF, built if needed,
    rebuilt if a file it fingerprints changed (`flat`: the load reads the flat weights)."""
    entry = entry_path("presets", sha256[:24])
    if _intact_entry(entry, flat)[0]:
        return entry
    with entry_lock(entry):  # another process may be converting the same GGUF
        intact, damage = _intact_entry(entry, flat)
        if intact:
            return entry
        from gemma_lab.models.gguf_convert import convert_gguf

        try:
            if gguf_path is None:
                gguf_path = default_gguf_path()
            if damage is not None:
                _check_rebuild_source(gguf_path, sha256)
            model = read_gguf(gguf_path, sha256=sha256)
        except ModelLoadError as err:
            if damage is None:
                raise
            raise CacheError(
                f"The cache entry {entry} is damaged ({damage}) and cannot be rebuilt: {err} "
                f"Delete this folder ({entry}) and load again."
            ) from err
        causal_lm = convert_gguf(model, progress=progress)
        write_entry(
            entry,
            lambda tmp: causal_lm.save_to_preset(str(tmp)),
            {"sha256": sha256, "source": str(gguf_path), "name": model.name},
        )
    if damage is not None:
        warnings.warn(f"The cache entry {entry} was damaged ({damage}): rebuilt it from "
                      f"{gguf_path}.", stacklevel=2)
    return entry


def _check_rebuild_source(gguf_path: Path, sha256: str) -> None:
    """Refuse to rebuild an entry from a GGUF other than the one it was converted from."""
    if not gguf_path.is_file() or sha256_file(gguf_path) != sha256:
        raise ModelLoadError(f"its source {gguf_path} is missing or not the GGUF it was "
                             "converted from (sha256 differs).")


def _looks_like_preset_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def load_model(spec: str | os.PathLike[str] | None = None, dtype: str = "float32",
               progress: bool = True, distribution: str | None = None,
               mesh: tuple[int, ...] | None = None) -> LoadedModel:
    """Load a Gemma CausalLM from a spec (see `gemma_lab.load`), optionally sharded over
    devices with a Keras distribution ("model_parallel" / "data_parallel", JAX only).

    Example:
        >>> loaded = load_model(dtype="float32", progress=False)
        >>> loaded.causal_lm.backbone.num_layers
        18
    """
    _check_dtype(dtype)
    if distribution is None and mesh is not None:
        raise InputError("mesh= needs distribution='model_parallel' or 'data_parallel'.")
    keras_distribution = None if distribution is None else make_distribution(distribution, mesh)
    bar = progress_counter(2, desc="Loading Gemma", disable=not progress)
    try:
        loaded = _resolve_and_load(spec, dtype, progress, bar, keras_distribution)
        bar.update(bar.total - bar.n)  # only a load that worked shows as complete
    finally:
        bar.close()
    return loaded


def _resolve_and_load(spec: str | os.PathLike[str] | None, dtype: str, progress: bool,
                      bar: Any, distribution: Any = None) -> LoadedModel:
    if spec is None or str(spec) == "default":
        sha = default_gguf_sha256()
        preset = _converted_preset(None, sha, progress, flat=distribution is None)
        bar.update(1)
        causal_lm = _from_cache_entry(preset, dtype, distribution)
        return LoadedModel(causal_lm, DEFAULT_MODEL_ID, "default", sha, dtype, distribution,
                           from_gguf(default_gguf_path()))

    text = os.fspath(spec)
    path = Path(text).expanduser()
    if text.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"No GGUF file at {path}. Check the path.")
        sha = sha256_file(path)
        preset = _converted_preset(path, sha, progress, flat=distribution is None)
        bar.update(1)
        return LoadedModel(_from_cache_entry(preset, dtype, distribution), path.name,
                           str(path), sha, dtype, distribution, from_gguf(path))

    if path.is_dir():
        if not _looks_like_preset_dir(path):
            raise ModelLoadError(
                f"{path} is a directory but neither a keras-hub preset nor a Hugging Face "
                "checkpoint (no config.json). Save one with causal_lm.save_to_preset(dir), or "
                "pass a .gguf file."
            )
        config = hf_folder.read_config(path)
        folder, task, template = path, hf_folder.task_class(config), None
        if hf_folder.is_hf_config(config):  # a Hugging Face checkpoint: keras-hub converts it
            hf_folder.check(config, path)
            folder = hf_folder.keras_hub_folder(path, config)
            template = from_hf_folder(path)
        bar.update(1)
        return LoadedModel(_from_preset(str(folder), dtype, distribution, task), path.name,
                           str(path), None, dtype, distribution, template)

    if text.startswith(REMOTE_PREFIXES) or _is_known_preset_name(text):
        bar.update(1)
        return LoadedModel(_load_remote(text, dtype, distribution), text, text, None, dtype,
                           distribution)

    raise ModelLoadError(
        f"Cannot resolve model spec {text!r}: it is not a .gguf file, a preset directory, "
        "a kaggle:// or hf:// handle, or a keras-hub Gemma preset name. "
        "Call gemma_lab.load() with no argument for the embedded default model."
    )


def _is_known_preset_name(name: str) -> bool:
    import_keras()
    import keras_hub

    return any(
        name in cls.presets
        for cls in (keras_hub.models.GemmaCausalLM, keras_hub.models.Gemma3CausalLM,
                    keras_hub.models.Gemma4CausalLM)
    )


def _load_remote(spec: str, dtype: str, distribution: Any = None) -> Any:
    try:
        return _from_preset(spec, dtype, distribution)
    except (OSError, ConnectionError, ValueError) as err:
        raise ModelLoadError(
            f"Could not fetch the remote preset {spec!r} ({type(err).__name__}: {err}). "
            "Remote presets need network access and, for Kaggle, KAGGLE_USERNAME/KAGGLE_KEY "
            "(for Hugging Face, HF_TOKEN). Offline, load a local preset directory or a .gguf file."
        ) from err
