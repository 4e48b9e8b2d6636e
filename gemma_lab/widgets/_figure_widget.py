"""Showing a pure figure builder's output inside a widget, as a plain plotly output.

A plotly `FigureWidget` (plotly ≥ 6: an anywidget) carries the whole plotly.js bundle, about
5 MB, in its state. Every new one sends it to the page again, and a reloaded page asks the
kernel for all widget states at once: with a few figures the reply outgrows ipywidgets'
4-second restore deadline and every widget of the notebook shows "model not found".
A `FigureSlot` is an `ipywidgets.Output` holding the figure as one output of plotly's own
MIME type (drawn by the jupyterlab-plotly renderer, which loads plotly.js once): its state is
the figure's JSON (kilobytes), so a reloaded page redraws it with its data. It is hidden
while it has no figure (no empty axes before the first run).
"""

from __future__ import annotations

from typing import Any

import ipywidgets as w
import plotly.graph_objects as go

from gemma_lab.ipython_display import figure_bundle


class FigureSlot(w.Output):
    """A place for one plotly figure: `show(figure)` (or `update`, the same) replaces what is
    shown, `clear()` empties and hides it; `figure` is the figure shown (None when none).

    Safe to call from a background thread: the figure reaches the page as the Output's
    `outputs` state, set in one assignment.

    Example:
        >>> slot = FigureSlot()
        >>> slot.layout.display, slot.figure is None
        ('none', True)
        >>> _ = slot.show(go.Figure(go.Bar(y=[1, 2]))); slot.layout.display, slot.data[0].type
        (None, 'bar')
        >>> output = slot.outputs[0]
        >>> output["output_type"], "application/vnd.plotly.v1+json" in output["data"]
        ('display_data', True)
    """

    def __init__(self, width: str = "100%", **kwargs: Any):
        super().__init__(layout=w.Layout(width=width, display="none", **kwargs))
        self.figure: go.Figure | None = None

    @property
    def data(self) -> Any:
        """The shown figure's traces (() when none)."""
        return () if self.figure is None else self.figure.data

    @property
    def figure_layout(self) -> Any:
        """The shown figure's plotly layout (None when none)."""
        return None if self.figure is None else self.figure.layout

    def show(self, figure: go.Figure) -> go.Figure:
        self.figure = figure
        self.outputs = ({"output_type": "display_data", "data": figure_bundle(figure),
                         "metadata": {}},)
        self.layout.display = None
        return figure

    update = show

    def clear(self) -> None:
        self.figure = None
        self.outputs = ()
        self.layout.display = "none"


__all__ = ["FigureSlot"]
