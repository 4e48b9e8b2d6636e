"""The one place gemma_lab calls IPython's display machinery: results, Markdown, and the live
output a streaming generation updates in place."""

from __future__ import annotations

import time
from typing import Any

from IPython.display import Markdown, display

# Shown after the streamed text while tokens are still arriving.
_CURSOR = "▌"


def show(obj: Any) -> None:
    """Display `obj` with its richest representation (results bring `_repr_mimebundle_`)."""
    display(obj)


def as_markdown(text: str) -> Markdown:
    """`text` as a displayable that renders as Markdown (for `show` or `LiveOutput.finish`)."""
    return Markdown(text)


class _PlainText:
    """Text shown verbatim (text/plain only, so nothing in it is interpreted as HTML)."""

    def __init__(self, text: str):
        self.text = text

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": self.text}

    def __repr__(self) -> str:
        return self.text


class LiveOutput:
    """An output area that grows as tokens are decoded, then is replaced by the final result.

    Updates are throttled to one per `interval` seconds so a fast model does not flood the
    frontend; `finish()` always shows the final state.

    Example:
        >>> live = LiveOutput(interval=0.1)   # doctest: +SKIP
        >>> live.append("Hello"); live.append(" world")   # doctest: +SKIP
        >>> live.finish(generation)   # doctest: +SKIP
    """

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.text = ""
        self.updates = 0
        self._handle: Any = None
        self._last_update = 0.0

    def start(self) -> None:
        """Open the output area (empty cursor) that later updates replace."""
        self._handle = display(_PlainText(_CURSOR), display_id=True)
        self._last_update = time.monotonic()

    def append(self, text: str) -> None:
        """Add decoded text; the output area is refreshed at most once per interval."""
        self.text += text
        now = time.monotonic()
        if now - self._last_update >= self.interval:
            self._update(_PlainText(self.text + _CURSOR))
            self._last_update = now

    def finish(self, obj: Any = None) -> None:
        """Replace the streamed text with `obj` (the result), or with the plain text so far."""
        self._update(obj if obj is not None else _PlainText(self.text))

    def _update(self, obj: Any) -> None:
        if self._handle is None:
            self.start()
        self._handle.update(obj)
        self.updates += 1


__all__ = ["LiveOutput", "as_markdown", "show"]
