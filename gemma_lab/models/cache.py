"""The on-disk model cache: converted presets keyed by the source GGUF's sha256.

Entries are written into a temporary sibling directory and renamed into place, so a killed
conversion never leaves an entry that loads. An entry is valid only with its marker file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gemma_lab.errors import CacheError

MARKER = "gemma_lab_cache.json"
# Bump when the conversion changes so old entries are rebuilt rather than trusted.
CONVERTER_VERSION = 1


def cache_root() -> Path:
    """The cache directory: $GEMMA_LAB_CACHE, else the platform user cache dir.

    Example:
        >>> cache_root().name
        'gemma_lab'
    """
    override = os.environ.get("GEMMA_LAB_CACHE")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("gemma_lab", appauthor=False))


def entry_path(kind: str, key: str) -> Path:
    """Where the cache entry `kind/key` lives (whether or not it exists yet)."""
    return cache_root() / kind / key


def read_marker(path: Path) -> dict[str, Any] | None:
    """The marker of a complete cache entry at `path`, or None if the entry is not usable."""
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if marker.get("converter_version") != CONVERTER_VERSION:
        return None
    return marker


def write_entry(path: Path, fill: Callable[[Path], None], marker: dict[str, Any]) -> Path:
    """Create the cache entry at `path` atomically: `fill(tmp_dir)`, marker, then rename.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "entry"
        >>> _ = write_entry(target, lambda d: (d / "w.txt").write_text("x"), {"k": 1})
        >>> read_marker(target)["k"]
        1
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    except OSError as err:
        raise CacheError(
            f"Cannot write the model cache at {path.parent} ({err.strerror}). Point "
            "GEMMA_LAB_CACHE at a writable directory with a few GB free."
        ) from err
    try:
        fill(tmp)
        (tmp / MARKER).write_text(json.dumps({**marker, "converter_version": CONVERTER_VERSION}))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as err:
        raise CacheError(
            f"Writing the cache entry {path} failed ({err.strerror or err}); nothing was kept. "
            "Free disk space or set GEMMA_LAB_CACHE to another directory, then retry."
        ) from err
    finally:
        # Covers KeyboardInterrupt too: the half-written directory never stays behind.
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def write_file_atomically(path: Path, fill: Callable[[Path], None]) -> Path:
    """Create a single file atomically: `fill(tmp_path)` then rename onto `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        os.close(handle)
    except OSError as err:
        raise CacheError(
            f"Cannot write to {path.parent} ({err.strerror}). Set GEMMA_LAB_CACHE to a "
            "writable directory."
        ) from err
    tmp = Path(tmp_name)
    try:
        fill(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise CacheError(
            f"Writing {path} failed ({err.strerror or err}); nothing was kept."
        ) from err
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
