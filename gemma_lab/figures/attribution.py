"""The attribution figure: one bar per prompt token, its contribution to log p(target)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from gemma_lab.figures._labels import plotly_text, position_axis, token_labels

# Blue for (raises the target), red against: the colours of the HTML fallback
# (render.ATTRIBUTION_FOR / _AGAINST) and of the labextension (colors.ts gainColor).
FOR_COLOUR = "rgb(31,119,180)"
AGAINST_COLOUR = "rgb(214,39,40)"


def signed_marker(values: Sequence[float], what: str = "log p(target)") -> dict:
    """Bar marker settings: each bar blue (for, ≥ 0) or red (against), with a colour bar that
    names the two colours — the legend of every signed-contribution bar chart.

    Example:
        >>> signed_marker([0.5, -1.0])["color"], signed_marker([1.0])["colorbar"]["ticktext"]
        ([1.0, -1.0], ['against (lowers log p(target))', 'for (raises log p(target))'])
    """
    return {
        "color": [1.0 if v >= 0 else -1.0 for v in values],
        "colorscale": [[0.0, AGAINST_COLOUR], [0.5, AGAINST_COLOUR], [0.5, FOR_COLOUR],
                       [1.0, FOR_COLOUR]],
        "cmin": -1.0, "cmax": 1.0, "showscale": True,
        "colorbar": {"title": {"text": "effect"}, "tickmode": "array", "tickvals": [-0.5, 0.5],
                     "ticktext": [f"against (lowers {what})", f"for (raises {what})"],
                     "len": 0.5, "thickness": 14, "tickfont": {"size": 12}},
    }


def attribution_bars(scores: np.ndarray, tokens: Sequence[str], target: str,
                     method: str) -> go.Figure:
    """Bars of per-token scores, positive (for the target) blue, negative (against) red, with a
    colour bar naming both.

    Example:
        >>> fig = attribution_bars(np.array([0.5, -0.2]), ["a", "<i>"], " b", "grad_x_input")
        >>> fig.data[0].marker.color, fig.layout.xaxis.ticktext[1]
        ((1.0, -1.0), '&lt;i&gt;')
    """
    labels = token_labels(tokens)
    values = [float(v) for v in np.asarray(scores)]
    figure = go.Figure(
        go.Bar(
            x=list(range(len(values))),
            y=values,
            marker=signed_marker(values),
            hovertext=[f"<b>{label}</b>  {value:+.4g} ({'for' if value >= 0 else 'against'})"
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
