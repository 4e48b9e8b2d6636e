"""The one current session the magics work on: set by `%gemma load` or `use(lab)`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gemma_lab.errors import NoModelError

if TYPE_CHECKING:
    from gemma_lab.session import GemmaLab

_current: GemmaLab | None = None


def use(lab: GemmaLab | None) -> GemmaLab | None:
    """Make `lab` the session `%%gemma` works on (None forgets it); returns it.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> lab = use(tiny_session())
        >>> current() is lab
        True
    """
    global _current
    _current = lab
    return lab


def current() -> GemmaLab:
    """The session loaded by `%gemma load` (or set with `use`).

    Raises `NoModelError` when there is none.
    """
    if _current is None:
        raise NoModelError(
            "No model loaded: run %gemma load first (or gemma_lab.magics.use(lab) from Python)."
        )
    return _current


__all__ = ["current", "use"]
