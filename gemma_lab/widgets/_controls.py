"""Small helpers for the widgets' ipywidgets controls."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as w


def natural_labels(*controls: Any) -> None:
    """Show each control's description at its natural width (ipywidgets cuts it at 80 px).

    Example:
        >>> import ipywidgets as w
        >>> box = w.FloatText(description="temperature")
        >>> natural_labels(box); box.style.description_width
        'initial'
    """
    for control in controls:
        control.style.description_width = "initial"


class StatusText(w.HTML):
    """A status line that wraps instead of being cut off: set `text` (plain text, escaped
    before it reaches the page; error messages may quote what a user typed).

    Example:
        >>> status = StatusText("Tracing <b>")
        >>> status.text, status.value
        ('Tracing <b>', 'Tracing &lt;b&gt;')
    """

    def __init__(self, text: str = ""):
        super().__init__(layout=w.Layout(flex="1 1 auto", width="auto", min_width="0"))
        self.text = text

    @property
    def text(self) -> str:
        return self._text

    @text.setter
    def text(self, text: str) -> None:
        self._text = str(text)
        self.value = html.escape(self._text)


def status_text(text: str = "") -> StatusText:
    """A wrapping status line (`StatusText`) showing `text`."""
    return StatusText(text)


__all__ = ["StatusText", "natural_labels", "status_text"]
