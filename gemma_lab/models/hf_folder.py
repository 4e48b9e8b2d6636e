"""Local Hugging Face checkpoints (config.json + safetensors + tokenizer) through keras-hub's
own converters.

keras-hub's `TransformersPresetLoader` converts a Gemma folder on load. A few things a folder
written by transformers' own `save_pretrained` lacks, or that keras-hub 0.32 gets wrong, are
mended here without touching the user's folder:

- `architectures` (the loader reads its first entry) may be absent from config.json;
- transformers 5 folds Gemma 4's `global_head_dim` / `num_global_key_value_heads` into
  `per_layer_config`, while keras-hub's converter reads the top-level keys (without them its
  global layers silently get the local head size);
- keras-hub's Gemma 4 converter always opens `processor_config.json`, even for text-only
  models;
- `keras_hub.models.CausalLM.from_preset` picks `Gemma4AssistantCausalLM` for a Gemma 4
  folder, so Gemma 4 loads with `Gemma4CausalLM` itself.

When a folder needs mending, gemma_lab loads a *view* of it from its cache: a directory of
links to the folder's files with the mended config.json next to them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from gemma_lab.errors import ModelLoadError
from gemma_lab.models.cache import entry_path, read_marker, write_entry

# Hugging Face `model_type`s whose text model keras-hub converts and gemma_lab has hook
# points for (`forward.adapter_for`).
MODEL_TYPES = ("gemma", "gemma2", "gemma3", "gemma3_text", "gemma4", "gemma4_text")
_GEMMA4 = ("gemma4", "gemma4_text")


def read_config(path: Path) -> dict[str, Any]:
    """config.json of the folder at `path`."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{path / 'config.json'} is not readable JSON ({err}).") from err
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path / 'config.json'} is not a JSON object.")
    return config


def is_hf_config(config: dict[str, Any]) -> bool:
    """A Hugging Face config (keras-hub presets have `registered_name` instead)."""
    return "model_type" in config and "registered_name" not in config


def check(config: dict[str, Any], path: Path) -> None:
    """Refuse a Hugging Face checkpoint gemma_lab cannot run, before any weights are read,
    naming the architectures it can.

    Example:
        >>> check({"model_type": "gemma3_text"}, Path("."))
        >>> check({"model_type": "siglip_vision_model"}, Path("."))
        Traceback (most recent call last):
        ...
        gemma_lab.errors.ModelLoadError: ...
    """
    model_type = config.get("model_type")
    if model_type in ("gemma3", "gemma3_text"):
        _check_gemma3_layers(config.get("text_config", config), path)
    if model_type in MODEL_TYPES:
        return
    raise ModelLoadError(
        f"{path} holds a Hugging Face {model_type!r} checkpoint; gemma_lab runs Gemma text "
        f"models ({', '.join(MODEL_TYPES)}: Gemma 1, 2, 3 and 4). Vision-only, audio and "
        "encoder-decoder checkpoints are not supported, and Gemma 3n is not supported yet.")


def _check_gemma3_layers(text: dict[str, Any], path: Path) -> None:
    """keras-hub's Gemma3Backbone makes every 6th layer global; a checkpoint whose
    `layer_types` differ would convert silently wrong."""
    layer_types = text.get("layer_types")
    if not layer_types:
        return
    keras_hub_types = ["full_attention" if i % 6 == 5 else "sliding_attention"
                       for i in range(len(layer_types))]
    if list(layer_types) != keras_hub_types:
        raise ModelLoadError(
            f"{path}: this Gemma 3 checkpoint's layer_types ({layer_types}) differ from the "
            "pattern keras-hub's Gemma 3 builds (every 6th layer global), so its conversion "
            "would be wrong. Released Gemma 3 checkpoints follow that pattern.")


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    return config.get("text_config", config) if config.get("model_type") == "gemma4" else config


def mended(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with what keras-hub's converter reads filled in (see the module docstring).

    Example:
        >>> mended({"model_type": "gemma4_text", "layer_types": ["full_attention"],
        ...         "per_layer_config": {"0": {"head_dim": 32}}})["global_head_dim"]
        32
    """
    out = json.loads(json.dumps(config))
    out.setdefault("architectures", [_architecture(config.get("model_type"))])
    if config.get("model_type") in _GEMMA4:
        text = _text_config(out)
        layer_types = text.get("layer_types") or []
        overrides = text.get("per_layer_config") or {}
        for index, kind in enumerate(layer_types):
            if kind != "full_attention":
                continue
            layer = overrides.get(str(index)) or {}
            if "head_dim" in layer:
                text.setdefault("global_head_dim", layer["head_dim"])
            if "num_key_value_heads" in layer:
                text.setdefault("num_global_key_value_heads", layer["num_key_value_heads"])
    return out


def _architecture(model_type: Any) -> str:
    return {"gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM",
            "gemma3": "Gemma3ForConditionalGeneration", "gemma3_text": "Gemma3ForCausalLM",
            "gemma4": "Gemma4ForConditionalGeneration",
            "gemma4_text": "Gemma4ForCausalLM"}.get(str(model_type), "GemmaForCausalLM")


def keras_hub_folder(path: Path, config: dict[str, Any]) -> Path:
    """The folder keras-hub should read: `path` itself, or a cached view of it with the
    mended config.json (and an empty processor_config.json where Gemma 4 needs one)."""
    fixed = mended(config)
    needs_processor = (config.get("model_type") in _GEMMA4
                       and not (path / "processor_config.json").exists())
    if fixed == config and not needs_processor:
        return path
    text = json.dumps(fixed, sort_keys=True)
    files = sorted(p.name for p in path.iterdir() if p.name != "config.json")
    key = hashlib.sha256(f"{path.resolve()}\n{text}\n{files}".encode()).hexdigest()[:24]
    entry = entry_path("hf_views", key)
    if read_marker(entry) is not None and all((entry / name).exists() for name in files):
        return entry

    def fill(tmp: Path) -> None:
        for name in files:
            (tmp / name).symlink_to((path / name).resolve())
        (tmp / "config.json").write_text(json.dumps(fixed, indent=2))
        if needs_processor:
            (tmp / "processor_config.json").write_text("{}\n")

    return write_entry(entry, fill, {"source": str(path.resolve())})


def task_class(config: dict[str, Any]) -> Any:
    """The keras-hub task class to load a folder with config.json `config` (Hugging Face or
    keras-hub preset): `Gemma4CausalLM` for Gemma 4, whose generic lookup picks the
    assistant (draft) model class; `CausalLM` otherwise."""
    import keras_hub

    gemma4 = (config.get("model_type") in _GEMMA4
              or "Gemma4Backbone" in str(config.get("registered_name", "")))
    return keras_hub.models.Gemma4CausalLM if gemma4 else keras_hub.models.CausalLM


__all__ = ["MODEL_TYPES", "check", "is_hf_config", "keras_hub_folder", "mended", "read_config",
           "task_class"]
