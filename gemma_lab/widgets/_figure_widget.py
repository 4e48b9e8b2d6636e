"""Showing a pure figure builder's output in a live plotly FigureWidget."""

from __future__ import annotations

import plotly.graph_objects as go


def replace_figure(widget: go.FigureWidget, figure: go.Figure) -> None:
    """Show `figure` in `widget` in place (its traces and layout replace the old ones).

    Example:
        >>> widget = go.FigureWidget()
        >>> replace_figure(widget, go.Figure(go.Bar(y=[1, 2]), layout={"title": "t"}))
        >>> widget.data[0].type, widget.layout.title.text
        ('bar', 't')
    """
    widget.data = ()
    widget.layout = figure.layout
    widget.add_traces(list(figure.data))


__all__ = ["replace_figure"]
