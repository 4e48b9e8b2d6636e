"""The attribution figure: one bar per prompt token, its contribution to log p(target)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from gemma_lab.figures._labels import plotly_text, position_axis, token_label


def attribution_bars(scores: np.ndarray, tokens: Sequence[str], target: str,
                     method: str) -> go.Figure:
    """Bars of per-token scores, positive (supports the target) blue, negative red.

    Example:
        >>> fig = attribution_bars(np.array([0.5, -0.2]), ["a", "<i>"], " b", "grad_x_input")
        >>> fig.data[0].marker.color, fig.layout.xaxis.ticktext[1]
        (('royalblue', 'indianred'), '&lt;i&gt;')
    """
    labels = [token_label(t) for t in tokens]
    values = [float(v) for v in np.asarray(scores)]
    figure = go.Figure(
        go.Bar(
            x=list(range(len(values))),
            y=values,
            marker={"color": ["royalblue" if v >= 0 else "indianred" for v in values]},
            hovertext=[f"<b>{label}</b>  {value:+.4g}"
                       for label, value in zip(labels, values, strict=True)],
            hoverinfo="text",
            name=method,
        )
    )
    figure.update_layout(
        title={"text": f"Attribution of {plotly_text(repr(target))} ({plotly_text(method)})"},
        xaxis=position_axis(labels),
        yaxis={"title": {"text": "contribution to log p(target)"}, "zeroline": True},
        bargap=0.15,
    )
    return figure
