"""Saved LoRA adapters: `lab.adapters.save / load / unload / list`.

An adapter is a cache entry `<cache root>/adapters/<name>/` holding `lora.npz` (the LoRA
matrices only) and `adapter.json` (base model identity, rank, data hash, hyper-parameters,
final loss, creation time), written atomically: an interrupted save leaves nothing behind.
Loading is all-or-nothing: the files' fingerprints, the metadata and every matrix (name, shape,
dtype, finite values) are checked before the first LoRA variable is assigned.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gemma_lab.errors import CacheError, GemmaLabError, InputError
from gemma_lab.finetune import lora
from gemma_lab.models.cache import MARKER, cache_root, entry_damage, write_entry

if TYPE_CHECKING:
    from gemma_lab.finetune.result import FinetuneResult
    from gemma_lab.runtime import ModelRuntime

FORMAT = "gemma_lab.lora_adapter"
FORMAT_VERSION = 1
WEIGHTS_FILE = "lora.npz"
METADATA_FILE = "adapter.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # fullmatch: no trailing newline
_MATRIX = re.compile(r"[0-9]+/lora_kernel_[ab]")
# Optional metadata fields and the types `list` shows them as.
_OPTIONAL = {"data_sha256": str, "final_loss": (int, float), "created": str}


def adapters_dir() -> Path:
    """Where adapters are saved: `<cache root>/adapters` (set GEMMA_LAB_CACHE to move it)."""
    return cache_root() / "adapters"


def _check_name(name: Any) -> str:
    """`name` if it is a safe folder name: ASCII letters, digits, '.', '_', '-' (no control
    characters, separators, '..', empty or over-long names); else an InputError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InputError(
            f"Adapter name {name!r} is not valid: use letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit, at most 128 characters)."
        )
    return name


def _metadata_damage(metadata: Any) -> str | None:
    """What is wrong with a parsed adapter.json (None: it is an adapter this version loads)."""
    if not isinstance(metadata, dict):
        return f"it holds a JSON {type(metadata).__name__}, not an object"
    if metadata.get("format") != FORMAT or metadata.get("format_version") != FORMAT_VERSION:
        return (f"unknown format {metadata.get('format')!r} version "
                f"{metadata.get('format_version')!r} (this gemma_lab reads {FORMAT} "
                f"version {FORMAT_VERSION})")
    base = metadata.get("base")
    if not (isinstance(base, dict) and isinstance(base.get("model"), str)
            and isinstance(base.get("weights_sha256"), str)):
        return f"'base' is {base!r}, not {{'model': str, 'weights_sha256': str}}"
    rank = metadata.get("rank")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        return f"'rank' is {rank!r}, not a positive integer"
    for key, kind in _OPTIONAL.items():
        value = metadata.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            return f"{key!r} is {value!r} of type {type(value).__name__}"
    return None


def _read_metadata(path: Path) -> dict[str, Any]:
    """The checked adapter.json of the adapter folder `path`; a ValueError saying what is
    wrong with it (its path first) otherwise."""
    file = path / METADATA_FILE
    try:
        metadata = json.loads(file.read_bytes())
    except (OSError, ValueError) as err:
        raise ValueError(f"{file}: {err}") from err
    damage = _metadata_damage(metadata)
    if damage is not None:
        raise ValueError(f"{file}: {damage}")
    return metadata


def _read_matrices(file: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz `file`, read into memory (no pickles); a ValueError saying
    why it is unreadable otherwise."""
    try:
        archive = np.load(file, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an .npz archive of LoRA matrices")
        with archive:
            return {key: np.array(archive[key]) for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as err:
        raise ValueError(f"{file} is unreadable ({type(err).__name__}: {err})") from err


def _checked_matrix(key: str, value: np.ndarray, rank: int) -> np.ndarray:
    """Adapter matrix `key` as a new float32 array, after checking its name, dtype, rank
    dimension and values; a ValueError naming what is wrong otherwise."""
    if not _MATRIX.fullmatch(key):
        raise ValueError(f"{key!r} is not a LoRA matrix name (<layer>/lora_kernel_a|b)")
    if not np.issubdtype(value.dtype, np.floating):
        raise ValueError(f"matrix {key} has dtype {value.dtype}, not a float type")
    rank_axis = -1 if key.endswith("_a") else 0
    if value.ndim < 2 or value.shape[rank_axis] != rank:
        raise ValueError(f"matrix {key} has shape {value.shape}, which does not hold the "
                         f"adapter's rank {rank}")
    matrix = value.astype("float32")
    if not np.isfinite(matrix).all():
        raise ValueError(f"matrix {key} holds NaN or infinite values")
    return matrix


def _fit_damage(weights: lora.LoraWeights, backbone: Any) -> str | None:
    """Why `weights` do not fit the LoRA variables of `backbone` (None: they do)."""
    targets = {f"{index}/{name}": getattr(layer, name)
               for index, layer in lora.lora_layers(backbone)
               for name in ("lora_kernel_a", "lora_kernel_b")}
    if set(targets) != set(weights):
        return (f"it has {len(weights)} LoRA matrices, this model {len(targets)} "
                f"({sorted(set(weights) ^ set(targets))[:4]} differ)")
    for key, variable in targets.items():
        if tuple(variable.shape) != weights[key].shape:
            return (f"matrix {key} has shape {weights[key].shape}, this model's "
                    f"{tuple(variable.shape)}")
    return None


def base_identity(runtime: ModelRuntime) -> dict[str, Any]:
    """The base model an adapter belongs to: model id and weights sha256.

    Models loaded from a GGUF carry its sha256; others (preset directories, remote presets,
    test models) get a sha256 over their base (non-LoRA) weights.
    """
    sha = runtime.loaded.weights_sha256
    if sha is None:
        digest = hashlib.sha256()
        for weight in runtime.backbone.weights:
            if "lora_kernel" not in weight.path:
                digest.update(weight.path.encode())
                digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
        sha = "weights:" + digest.hexdigest()
    return {"model": runtime.model_id, "weights_sha256": sha}


class Adapters:
    """Save, load, unload and list LoRA adapters of one session (`lab.adapters`).

    Example:
        >>> from gemma_lab.testing import tiny_causal_lm
        >>> from gemma_lab.session import GemmaLab
        >>> from gemma_lab.models.loading import LoadedModel
        >>> lab = GemmaLab(LoadedModel(tiny_causal_lm(), "tiny", "test", None, "float32"))
        >>> _ = lab.finetune(["hello world"] * 4, rank=2, progress=False)
        >>> lab.adapter_name.startswith("unsaved-")
        True
        >>> lab.adapters.unload(); lab.adapter_name is None
        True
    """

    def __init__(self, runtime: ModelRuntime):
        self._runtime = runtime
        self._base: dict[str, Any] | None = None

    @property
    def last_result(self) -> FinetuneResult | None:
        """The fine-tune that produced the unsaved adapter in use (recorded by `save`)."""
        return self._runtime.adapter_provenance

    @property
    def active(self) -> str | None:
        """The name of the adapter in use (None: the base model)."""
        return self._runtime.adapter_name

    def base(self) -> dict[str, Any]:
        # Hashing weights is slow for large models and the base weights never change.
        if self._base is None:
            self._base = base_identity(self._runtime)
        return self._base

    def path(self, name: str) -> Path:
        return adapters_dir() / _check_name(name)

    def save(self, name: str) -> Path:
        """Write the active LoRA weights and their provenance as adapter `name` (replacing
        one of that name); the session's adapter is then called `name`."""
        self._runtime.ensure_idle("save an adapter")
        path = self.path(name)
        backbone = self._runtime.backbone
        rank = lora.lora_rank(backbone)
        if rank is None:
            raise GemmaLabError("There is no adapter to save: fine-tune first "
                                "(lab.finetune(data)) or load one (lab.adapters.load(name)).")
        weights = lora.lora_weights(backbone)
        result = self.last_result
        metadata = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name,
            "base": self.base(),
            "rank": rank,
            "layers": lora.lora_paths(backbone),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "data_sha256": result.data_sha256 if result else None,
            "hyperparameters": dict(result.hyperparameters) if result else None,
            "final_loss": result.final_loss if result else None,
            "final_validation_loss": (result.validation_loss[-1]
                                      if result and result.validation_loss else None),
            "steps": result.steps if result else None,
            "trained_from": self._runtime.adapter_name,
        }

        def fill(directory: Path) -> None:
            with open(directory / WEIGHTS_FILE, "wb") as handle:
                np.savez(handle, **weights)
            (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2))

        write_entry(path, fill, {"kind": "adapter", "name": name})
        self._runtime.adapter_name = name
        return path

    def _damaged(self, name: str, reason: str) -> CacheError:
        path = adapters_dir() / name
        return CacheError(f"Adapter {name!r} is damaged ({reason}): save it again from the "
                          f"session that trained it, or delete the folder {path}.")

    def _existing(self, name: str) -> Path:
        path = self.path(name)
        if not (path / MARKER).is_file():
            known = ", ".join(self.names()) or "none saved yet"
            raise InputError(f"No adapter named {name!r} in {adapters_dir()} (known: {known}). "
                             "Save one with lab.adapters.save(name).")
        return path

    def metadata(self, name: str) -> dict[str, Any]:
        """The saved metadata of adapter `name` (checked: a CacheError if it is damaged)."""
        path = self._existing(name)
        try:
            return _read_metadata(path)
        except ValueError as err:
            raise self._damaged(name, str(err)) from None

    def _read(self, name: str) -> tuple[dict[str, Any], lora.LoraWeights]:
        """Adapter `name`'s metadata and matrices, each one checked, read into new arrays;
        nothing of the session is touched."""
        path = self._existing(name)
        damage = entry_damage(path)
        if damage is not None:
            raise self._damaged(name, damage)
        metadata = self.metadata(name)
        saved, here = metadata["base"], self.base()
        if saved != here:
            raise GemmaLabError(
                f"Adapter {name!r} was trained on {saved['model']} (weights "
                f"{str(saved['weights_sha256'])[:19]}…), but this session runs {here['model']} "
                f"(weights {str(here['weights_sha256'])[:19]}…). Load it into a session of "
                "that base model."
            )
        rank = metadata["rank"]
        try:
            weights = {key: _checked_matrix(key, value, rank)
                       for key, value in _read_matrices(path / WEIGHTS_FILE).items()}
        except ValueError as err:
            raise self._damaged(name, f"{path / WEIGHTS_FILE}: {err}") from None
        return metadata, weights

    def load(self, name: str) -> dict[str, Any]:
        """Make adapter `name` active; refuses one trained on a different base model.

        All or nothing: a damaged or foreign adapter raises before any LoRA matrix changes,
        and the session keeps its adapter, name and scores. (On a session without LoRA,
        LoRA may be enabled before the shapes can be compared; B stays 0, the base function.)
        """
        self._runtime.ensure_idle("load an adapter")
        metadata, weights = self._read(name)
        backbone = self._runtime.backbone
        lora.ensure_lora(self._runtime, metadata["rank"])
        misfit = _fit_damage(weights, backbone)
        if misfit is not None:
            raise self._damaged(name, f"{self.path(name) / WEIGHTS_FILE}: {misfit}; it was "
                                      "saved from another architecture or LoRA layer "
                                      "selection, or the file changed")
        previous = lora.lora_weights(backbone)
        try:
            lora.assign_lora(backbone, weights)
        except BaseException:  # even Ctrl-C: the matrices in use come back whole
            lora.assign_lora(backbone, previous)
            raise
        self._runtime.adapter_name = name
        self._runtime.adapter_provenance = None
        return metadata

    def unload(self) -> None:
        """Back to the base model: every LoRA update set to zero (logits equal the base's)."""
        self._runtime.ensure_idle("unload the adapter")
        lora.zero_lora(self._runtime.backbone)
        self._runtime.adapter_name = None
        self._runtime.adapter_provenance = None

    @contextmanager
    def using(self, name: str | None) -> Iterator[None]:
        """Run the block on adapter `name` (None: the base model), then put back exactly the
        adapter that was in use (its LoRA weights, name and provenance), even on error.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> lab = tiny_session()
            >>> _ = lab.finetune(["hello world"] * 4, rank=2, progress=False)
            >>> tuned = lab.score("hello").total_logprob
            >>> with lab.adapters.using(None):
            ...     base = lab.score("hello").total_logprob
            >>> base != tuned == lab.score("hello").total_logprob
            True
        """
        runtime = self._runtime
        runtime.ensure_idle("switch adapters")
        backbone = runtime.backbone
        saved_name, saved_provenance = runtime.adapter_name, runtime.adapter_provenance
        saved = lora.lora_weights(backbone) if lora.lora_rank(backbone) is not None else None
        try:
            if name is None:
                if saved is not None:
                    lora.zero_lora(backbone)
                runtime.adapter_name = runtime.adapter_provenance = None
            elif name != saved_name:
                self.load(name)
            yield
        finally:
            if saved is not None:
                lora.assign_lora(backbone, saved)
            elif lora.lora_rank(backbone) is not None:
                lora.zero_lora(backbone)  # LoRA was enabled for the block: base function again
            runtime.adapter_name, runtime.adapter_provenance = saved_name, saved_provenance

    def names(self) -> list[str]:
        root = adapters_dir()
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and (p / MARKER).is_file())

    def list(self) -> list[dict[str, Any]]:
        """Every saved adapter: name, base model, rank, data hash, final loss, created,
        whether it fits this session's base model, and `damaged`: None, or why the adapter
        cannot be loaded (its adapter.json is unreadable or has wrong types)."""
        here = self.base()
        return [self._row(name, here) for name in self.names()]

    def _row(self, name: str, here: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {"name": name, "model": None, "compatible": False, "rank": None,
                               "data_sha256": None, "final_loss": None, "created": None,
                               "active": name == self._runtime.adapter_name, "damaged": None}
        try:
            metadata = _read_metadata(adapters_dir() / name)
        except ValueError as err:
            return {**row, "damaged": str(err)}
        return {**row, "model": metadata["base"]["model"],
                "compatible": metadata["base"] == here, "rank": metadata["rank"],
                **{key: metadata.get(key) for key in _OPTIONAL}}

    def __repr__(self) -> str:
        return f"<Adapters active={self.active!r} saved={self.names()}>"


__all__ = ["Adapters", "adapters_dir", "base_identity"]
