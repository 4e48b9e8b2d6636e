"""Small helpers for the widgets' ipywidgets controls."""

from __future__ import annotations

from typing import Any


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


__all__ = ["natural_labels"]
