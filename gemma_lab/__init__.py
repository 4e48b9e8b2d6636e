"""gemma_lab: research Gemma models from Jupyter notebooks.

    >>> import gemma_lab
    >>> lab = gemma_lab.load()                     # embedded Gemma 3 270M
    >>> g = lab.generate("The capital of France is", max_new_tokens=8)
    >>> g.text, g.top_k[0]

Importing this package imports no Keras: choose a backend first with `set_backend`.
`%load_ext gemma_lab` registers the `%gemma` / `%%gemma` magics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gemma_lab.backend import set_backend
from gemma_lab.errors import (
    BackendError,
    CacheError,
    GemmaLabError,
    GGUFError,
    InputError,
    ModelBusyError,
    ModelLoadError,
    NoModelError,
)

if TYPE_CHECKING:
    from gemma_lab.generation import Generation, GenerationStream
    from gemma_lab.scoring import Score
    from gemma_lab.session import GemmaLab, ModelInfo

__version__ = "0.1.0"

_LAZY = {
    "load": "gemma_lab.session",
    "GemmaLab": "gemma_lab.session",
    "ModelInfo": "gemma_lab.session",
    "Generation": "gemma_lab.generation",
    "GenerationStream": "gemma_lab.generation",
    "Score": "gemma_lab.scoring",
    "load_sae": "gemma_lab.sae",
    "SAE": "gemma_lab.sae",
}


def __getattr__(name: str) -> Any:
    # Lazy so that `import gemma_lab` stays free of Keras until a model is loaded.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gemma_lab' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext gemma_lab`: register the %gemma magics."""
    from gemma_lab.magics import register

    register(ipython)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where Jupyter finds the prebuilt MIME renderer (for `jupyter labextension develop`)."""
    return [{"src": "labextension", "dest": "gemma-lab"}]


__all__ = [
    "SAE",
    "BackendError",
    "CacheError",
    "GGUFError",
    "GemmaLab",
    "GemmaLabError",
    "Generation",
    "GenerationStream",
    "InputError",
    "ModelBusyError",
    "ModelInfo",
    "ModelLoadError",
    "NoModelError",
    "Score",
    "load",
    "load_sae",
    "set_backend",
]
