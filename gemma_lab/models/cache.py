"""The on-disk model cache: converted presets keyed by the source GGUF's sha256.

Entries are written into a temporary sibling directory and renamed into place, so a killed
conversion never leaves an entry that loads. An entry is valid only with its marker file,
which also fingerprints every file of the entry (size and sha256, `"files"`): `entry_damage`
tells whether a file changed after it was written (truncated, overwritten, edited).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
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
    if not isinstance(marker, dict) or marker.get("converter_version") != CONVERTER_VERSION:
        return None
    return marker


# --- fingerprints -------------------------------------------------------------------------
_HASH_BLOCK = 1 << 23  # 8 MiB: one reused buffer, hashlib releases the GIL on each block


def fingerprint(path: Path) -> dict[str, Any]:
    """Size, sha256 and modification time of the file at `path` (~1 GB/s: about a second
    for the default model's weights). A load trusts a file whose size and modification time
    are as recorded (nothing wrote to it since) and hashes it again otherwise.

    Example:
        >>> import tempfile, pathlib
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "x"; _ = file.write_bytes(b"abc")
        >>> fingerprint(file)["size"], fingerprint(file)["sha256"][:8]
        (3, 'ba7816bf')
    """
    digest, buffer = hashlib.sha256(), bytearray(_HASH_BLOCK)
    view, size = memoryview(buffer), 0
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
            size += count
    return {"size": size, "sha256": digest.hexdigest(), "mtime_ns": path.stat().st_mtime_ns}


def entry_files(directory: Path) -> list[str]:
    """The regular files of an entry directory (relative POSIX paths; no marker, no links:
    a linked file belongs to its source, not to the cache)."""
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                  if p.is_file() and not p.is_symlink() and p.name != MARKER)


def _fingerprints(directory: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    return {name: fingerprint(directory / name) for name in names}


def damaged_files(path: Path, names: Iterable[str] | None = None) -> dict[str, str]:
    """{file: what is wrong} for every file of the complete cache entry at `path` (names
    relative to it) that its marker fingerprints (of `names` only, when given) and that
    changed since: missing, another size, another sha256; the marker itself when it is
    missing or its file list unreadable. A file without a fingerprint (written before
    fingerprints existed) is not checked."""
    marker = read_marker(path)
    if marker is None:
        return {MARKER: f"{MARKER} is missing or unreadable"}
    recorded = marker.get("files", {})
    if not isinstance(recorded, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("size"), int) for v in recorded.values()):
        return {MARKER: f"{MARKER} has an unreadable file list"}
    damaged = {}
    for name in recorded if names is None else [n for n in names if n in recorded]:
        reason = _file_damage(path, name, recorded[name])
        if reason is not None:
            damaged[name] = reason
    return damaged


def _file_damage(path: Path, name: str, expected: dict[str, Any]) -> str | None:
    file = path / name
    if not file.is_file():
        return f"{name} is missing"
    stat = file.stat()
    if stat.st_size != expected["size"]:
        return f"{name} has {stat.st_size} bytes, {expected['size']} when written"
    if stat.st_mtime_ns == expected.get("mtime_ns"):
        return None  # not written since it was fingerprinted (size and time as then)
    if fingerprint(file)["sha256"] != expected.get("sha256"):
        return f"{name} changed after it was written (sha256 differs)"
    return None


def entry_damage(path: Path, names: Iterable[str] | None = None) -> str | None:
    """What is wrong with the complete cache entry at `path` (`damaged_files`, in one line),
    or None when every fingerprinted file is as written.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "entry"
        >>> _ = write_entry(target, lambda d: (d / "w.txt").write_text("x"), {"k": 1})
        >>> entry_damage(target) is None
        True
        >>> _ = (target / "w.txt").write_text("y")
        >>> entry_damage(target).endswith("w.txt changed after it was written (sha256 differs)")
        True
    """
    return "; ".join(damaged_files(path, names).values()) or None


def recorded_files(path: Path) -> set[str]:
    """The files the marker of entry `path` fingerprints."""
    files = (read_marker(path) or {}).get("files")
    return set(files) if isinstance(files, dict) else set()


def record_files(path: Path, add: Iterable[str] = (), drop: Iterable[str] = ()) -> None:
    """Fingerprint the files `add` of entry `path` in its marker (files written into the
    entry after it was created, or by a gemma_lab without fingerprints) and forget `drop`;
    the marker is replaced atomically. A no-op for an incomplete entry."""
    marker = read_marker(path)
    if marker is None:
        return
    add, drop = list(add), list(drop)
    if not add and not drop:
        return
    files = marker.get("files")
    files = dict(files) if isinstance(files, dict) else {}
    for name in drop:
        files.pop(name, None)
    files.update(_fingerprints(path, add))
    text = json.dumps({**marker, "files": files})

    def fill(tmp: Path) -> None:
        tmp.write_text(text)
        os.chmod(tmp, 0o644)  # as the marker write_entry made (mkstemp's file is owner-only)

    write_file_atomically(path / MARKER, fill)


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
        files = _fingerprints(tmp, entry_files(tmp))
        (tmp / MARKER).write_text(json.dumps({**marker, "converter_version": CONVERTER_VERSION,
                                              "files": files}))
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


@contextmanager
def entry_lock(path: Path) -> Iterator[None]:
    """Hold the build lock of cache entry `path` (an exclusive `flock` on a file in the
    cache's `locks/` folder):
    a second process building the same entry (two kernels loading one model for the first
    time) waits here, then finds the entry complete instead of converting it again and
    racing the first one's rename. A no-op where `fcntl` does not exist (Windows).

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "presets" / "entry"
        >>> with entry_lock(target):
        ...     _ = write_entry(target, lambda d: (d / "w.txt").write_text("x"), {"k": 1})
        >>> read_marker(target)["k"]
        1
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        # beside the cache kinds, not among the entries: <root>/locks/<kind>.<key>.lock
        locks = path.parent.parent / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        handle = open(locks / f"{path.parent.name}.{path.name}.lock", "w")
    except OSError as err:
        raise CacheError(
            f"Cannot write the model cache at {path.parent} ({err.strerror}). Point "
            "GEMMA_LAB_CACHE at a writable directory with a few GB free."
        ) from err
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
