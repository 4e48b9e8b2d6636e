"""Saved LoRA adapters: `lab.adapters.save / load / unload / list`.

An adapter is a cache entry `<cache root>/adapters/<name>/` holding `lora.npz` (the LoRA
matrices only) and `adapter.json` (base model identity, rank, data hash, hyper-parameters,
final loss, creation time), written atomically: an interrupted save leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gemma_lab.errors import CacheError, GemmaLabError, InputError
from gemma_lab.finetune import lora
from gemma_lab.models.cache import MARKER, cache_root, write_entry

if TYPE_CHECKING:
    from gemma_lab.finetune.result import FinetuneResult
    from gemma_lab.runtime import ModelRuntime

FORMAT = "gemma_lab.lora_adapter"
FORMAT_VERSION = 1
WEIGHTS_FILE = "lora.npz"
METADATA_FILE = "adapter.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def adapters_dir() -> Path:
    """Where adapters are saved: `<cache root>/adapters` (set GEMMA_LAB_CACHE to move it)."""
    return cache_root() / "adapters"


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(
            f"Adapter name {name!r} is not valid: use letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit, at most 128 characters)."
        )
    return name


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

    def metadata(self, name: str) -> dict[str, Any]:
        """The saved metadata of adapter `name`."""
        path = self.path(name)
        if not (path / MARKER).is_file():
            known = ", ".join(self.names()) or "none saved yet"
            raise InputError(f"No adapter named {name!r} in {adapters_dir()} (known: {known}). "
                             "Save one with lab.adapters.save(name).")
        try:
            metadata = json.loads((path / METADATA_FILE).read_text())
        except (OSError, ValueError) as err:
            raise CacheError(f"Adapter {name!r} at {path} is unreadable ({err}); save it "
                             "again or delete the directory.") from err
        if metadata.get("format") != FORMAT or metadata.get("format_version") != FORMAT_VERSION:
            raise CacheError(f"Adapter {name!r} at {path} has an unknown format "
                             f"({metadata.get('format')} v{metadata.get('format_version')}).")
        return metadata

    def load(self, name: str) -> dict[str, Any]:
        """Make adapter `name` active; refuses one trained on a different base model."""
        self._runtime.ensure_idle("load an adapter")
        metadata = self.metadata(name)
        saved, here = metadata["base"], self.base()
        if saved != here:
            raise GemmaLabError(
                f"Adapter {name!r} was trained on {saved['model']} (weights "
                f"{str(saved['weights_sha256'])[:19]}…), but this session runs {here['model']} "
                f"(weights {str(here['weights_sha256'])[:19]}…). Load it into a session of "
                "that base model."
            )
        with np.load(self.path(name) / WEIGHTS_FILE) as archive:
            weights = {key: archive[key] for key in archive.files}
        lora.ensure_lora(self._runtime, int(metadata["rank"]))
        lora.assign_lora(self._runtime.backbone, weights)
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
        """Every saved adapter: name, base model, rank, data hash, final loss, created, and
        whether it fits this session's base model."""
        rows = []
        here = self.base()
        for name in self.names():
            try:
                metadata = self.metadata(name)
            except GemmaLabError:
                continue  # unreadable or foreign entries are not adapters one can load
            rows.append({
                "name": name,
                "model": metadata["base"]["model"],
                "compatible": metadata["base"] == here,
                "rank": metadata["rank"],
                "data_sha256": metadata.get("data_sha256"),
                "final_loss": metadata.get("final_loss"),
                "created": metadata.get("created"),
                "active": name == self._runtime.adapter_name,
            })
        return rows

    def __repr__(self) -> str:
        return f"<Adapters active={self.active!r} saved={self.names()}>"


__all__ = ["Adapters", "adapters_dir", "base_identity"]
