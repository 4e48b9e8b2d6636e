"""Read SAEs from the files researchers have: Gemma Scope's `params.npz` (or
`params.safetensors`), SAELens' `sae_weights.safetensors` + `cfg.json`, and gemma_lab's own
folders (`SAE.save`); `hf://owner/repo/sub/folder` downloads one where a hub is reachable.

Hook names in configs are translated from TransformerLens / SAELens (`blocks.6.hook_resid_post`,
`blocks.6.attn.hook_z`) and Hugging Face (`model.layers.6` outputs) to gemma_lab's points.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gemma_lab.errors import InputError, ModelLoadError
from gemma_lab.sae.model import PARAM_NAMES, SAE

WEIGHT_FILES = ("params.npz", "params.safetensors", "sae_weights.safetensors")
CONFIG_FILES = ("gemma_lab_sae.json", "cfg.json", "config.json")
# SAELens' JumpReLU stores log(threshold) in some releases.
_ALIASES = {"w_enc": "W_enc", "w_dec": "W_dec", "b_enc": "b_enc", "b_dec": "b_dec",
            "threshold": "threshold", "log_threshold": "log_threshold"}
_TL_POINTS = {"hook_resid_pre": "resid_pre", "hook_resid_post": "resid_post",
              "hook_mlp_out": "mlp_out", "hook_attn_out": "attn_out", "attn.hook_z": "attn.z",
              "hook_z": "attn.z", "mlp.hook_post": "mlp.post", "hook_resid_mid": None}


def hook_from_config(name: Any) -> str | None:
    """gemma_lab's point for a hook name written by SAELens / TransformerLens or gemma_lab.

    Example:
        >>> hook_from_config("blocks.6.hook_resid_post"), hook_from_config("blocks.2.attn.hook_z")
        ('blocks.6.resid_post', 'blocks.2.attn.z')
        >>> hook_from_config("blocks.3.mlp_out"), hook_from_config("model.layers.4.output")
        ('blocks.3.mlp_out', 'blocks.4.resid_post')
    """
    if not isinstance(name, str):
        return None
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    if match:
        point = match.group(2)
        point = _TL_POINTS.get(point, point)
        return f"blocks.{match.group(1)}.{point}" if point else None
    match = re.fullmatch(r"model\.layers\.(\d+)(?:\.output)?", name)
    if match:  # a decoder layer's output: the residual stream leaving it
        return f"blocks.{match.group(1)}.resid_post"
    return name if name in ("embed", "final_norm") else None


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: np.asarray(data[key]) for key in data.files}
        else:
            from safetensors.numpy import load_file

            arrays = load_file(str(path))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise ModelLoadError(f"Could not read SAE weights {path} ({type(err).__name__}: "
                             f"{err}). The file is damaged or not an SAE: download it again."
                             ) from err
    except Exception as err:  # safetensors raises its own SafetensorError
        raise ModelLoadError(f"Could not read SAE weights {path} ({type(err).__name__}: "
                             f"{err}). The file is damaged or not an SAE: download it again."
                             ) from err
    named = {}
    for key, value in arrays.items():
        canonical = _ALIASES.get(key.lower()) or _ALIASES.get(key)
        if canonical:
            named[canonical] = value
    if "threshold" not in named and "log_threshold" in named:
        named["threshold"] = np.exp(named.pop("log_threshold"))
    missing = [name for name in PARAM_NAMES if name != "threshold" and name not in named]
    if missing:
        raise ModelLoadError(f"{path} holds {sorted(arrays)[:8]}, not an SAE: it lacks "
                             f"{', '.join(missing)} (Gemma Scope's params.npz has W_enc, "
                             "W_dec, b_enc, b_dec and threshold).")
    if "threshold" not in named:  # a ReLU SAE
        named["threshold"] = np.zeros(np.shape(named["b_enc"]), "float32")
    return {name: named[name] for name in PARAM_NAMES}


def _read_config(folder: Path) -> dict[str, Any]:
    for name in CONFIG_FILES:
        path = folder / name
        if path.is_file():
            try:
                config = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ModelLoadError(f"{path} is not readable JSON ({err}); fix or delete it "
                                     "and pass hook= to load_sae.") from err
            if not isinstance(config, Mapping):
                raise ModelLoadError(f"{path} holds {type(config).__name__}, not a JSON "
                                     "object; fix or delete it and pass hook=.")
            return dict(config)
    return {}


def _config_hook(config: Mapping[str, Any]) -> str | None:
    for key in ("hook", "hook_name", "hook_point"):
        if key in config:
            return hook_from_config(config[key])
    metadata = config.get("metadata")
    if isinstance(metadata, Mapping):
        return _config_hook(metadata)
    return None


def _download(spec: str) -> Path:
    """`hf://owner/repo[/sub/folder]` → a local folder (needs the network)."""
    parts = spec[len("hf://"):].strip("/").split("/")
    if len(parts) < 2:
        raise InputError(f"{spec!r}: write hf://owner/repo/path/to/sae_folder.")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        from huggingface_hub import snapshot_download

        patterns = [f"{sub}/{name}" if sub else name for name in WEIGHT_FILES + CONFIG_FILES]
        root = snapshot_download(repo_id=repo, allow_patterns=patterns)
    except ImportError as err:
        raise ModelLoadError("hf:// SAEs need the huggingface_hub package: pip install "
                             "huggingface_hub, or download the folder and pass its path."
                             ) from err
    except Exception as err:  # offline, unknown repo, no credentials
        raise ModelLoadError(
            f"Could not fetch the SAE {spec!r} ({type(err).__name__}: {err}). hf:// needs "
            "network access (and HF_TOKEN for gated repositories). Offline, download the "
            "folder elsewhere and pass its local path.") from err
    return Path(root) / sub


def load_sae(path: str | os.PathLike[str], hook: str | None = None) -> SAE:
    """Load an SAE: a weights file (`params.npz`, `*.safetensors`), a folder holding one
    (with SAELens' `cfg.json`, Gemma Scope's `config.json` or gemma_lab's own json), or
    `hf://owner/repo/folder`. `hook` (a gemma_lab point such as "blocks.6.resid_post")
    overrides the config's and is required when the files do not name one.

    Example:
        >>> import tempfile
        >>> folder = SAE.identity_like(4, hook="blocks.0.resid_post").save(tempfile.mkdtemp())
        >>> sae = load_sae(folder / "params.npz", hook="blocks.0.resid_post")
        >>> sae.width, sae.d_model
        (8, 4)
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"load_sae() takes a path or hf:// handle, got {type(path).__name__}.")
    spec = os.fspath(path)
    if hook is not None and (not isinstance(hook, str) or hook_from_config(hook) is None):
        raise InputError(f"hook={hook!r} is not a gemma_lab hook point; write e.g. "
                         "'blocks.6.resid_post' (lab.hook_points() lists them).")
    local = _download(spec) if spec.startswith("hf://") else Path(spec).expanduser()
    if local.is_dir():
        weights = next((local / name for name in WEIGHT_FILES if (local / name).is_file()), None)
        if weights is None:
            raise ModelLoadError(f"{local} holds no SAE weights ({', '.join(WEIGHT_FILES)}).")
        folder = local
    elif local.is_file():
        weights, folder = local, local.parent
    else:
        raise ModelLoadError(f"No SAE at {spec!r}: give a params.npz / .safetensors file or "
                             "the folder holding it.")
    arrays = _read_arrays(weights)
    config = _read_config(folder)
    chosen = hook_from_config(hook) if hook is not None else _config_hook(config)
    if chosen is None:
        raise InputError(f"{spec!r} does not say which hook point it reads; pass hook=, e.g. "
                         "load_sae(path, hook='blocks.6.resid_post').")
    flag = config.get("apply_b_dec_to_input", False)
    return SAE(**arrays, hook=chosen, source=spec, apply_b_dec_to_input=bool(flag))


__all__ = ["hook_from_config", "load_sae"]
