"""Attention figures: one head's query × key heatmap, a layer's grid of heads, and one query
token's attention over the keys."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gemma_lab.figures._labels import position_axis, token_label

_COLORSCALE = "Viridis"
_MAX_GRID_LABELLED = 24


def _hover(labels: Sequence[str]) -> list[list[str]]:
    return [[f"query {q} <b>{labels[q]}</b><br>key {k} <b>{labels[k]}</b>"
             for k in range(len(labels))] for q in range(len(labels))]


def attention_heatmap(matrix: np.ndarray, tokens: Sequence[str],
                      title: str = "Attention") -> go.Figure:
    """Query (rows, top to bottom) × key (columns) attention probabilities of one head.

    Example:
        >>> fig = attention_heatmap(np.array([[1.0, 0.0], [0.3, 0.7]]), ["<bos>", "<b>"])
        >>> fig.data[0].z.shape, fig.layout.yaxis.ticktext[1]
        ((2, 2), '&lt;b&gt;')
    """
    matrix = np.asarray(matrix, dtype="float64")
    labels = [token_label(t) for t in tokens]
    figure = go.Figure(
        go.Heatmap(
            z=matrix,
            x=list(range(matrix.shape[1])),
            y=list(range(matrix.shape[0])),
            customdata=_hover(labels),
            hovertemplate="%{customdata}<br>p %{z:.4f}<extra></extra>",
            colorscale=_COLORSCALE,
            zmin=0.0,
            colorbar={"title": {"text": "p"}},
        )
    )
    y_axis = position_axis(labels)
    y_axis.update(title={"text": "query"}, autorange="reversed", tickangle=0)
    x_axis = position_axis(labels)
    x_axis["title"] = {"text": "key"}
    figure.update_layout(title={"text": title}, xaxis=x_axis, yaxis=y_axis)
    return figure


def head_grid(layer_attention: np.ndarray, tokens: Sequence[str], heads: Sequence[int],
              title: str = "Attention heads") -> go.Figure:
    """One small heatmap per head of a layer ([head, query, key]), on a shared colour scale.

    Example:
        >>> fig = head_grid(np.full((3, 2, 2), 0.5), ["a", "b"], heads=[0, 1, 2])
        >>> len(fig.data), fig.layout.annotations[2].text
        (3, 'head 2')
    """
    layer_attention = np.asarray(layer_attention, dtype="float64")
    count = len(heads)
    cols = min(count, 4) or 1
    rows = max(1, math.ceil(count / cols))
    figure = make_subplots(rows=rows, cols=cols, subplot_titles=[f"head {h}" for h in heads],
                           horizontal_spacing=0.04, vertical_spacing=0.08)
    labels = [token_label(t) for t in tokens]
    hover = _hover(labels)
    for index, head in enumerate(heads):
        figure.add_trace(
            go.Heatmap(
                z=layer_attention[index],
                customdata=hover,
                hovertemplate=f"head {head}<br>%{{customdata}}<br>p %{{z:.4f}}<extra></extra>",
                coloraxis="coloraxis",
            ),
            row=index // cols + 1,
            col=index % cols + 1,
        )
    labelled = len(labels) <= _MAX_GRID_LABELLED
    ticks = ({"tickmode": "array", "tickvals": list(range(len(labels))), "ticktext": labels}
             if labelled else {"showticklabels": False})
    figure.update_xaxes(**ticks)
    figure.update_yaxes(autorange="reversed", **ticks)
    figure.update_layout(title={"text": title},
                         coloraxis={"colorscale": _COLORSCALE, "cmin": 0.0,
                                    "colorbar": {"title": {"text": "p"}}},
                         height=max(320, 260 * rows))
    return figure


def token_attention(row: np.ndarray, tokens: Sequence[str], query: int,
                    title: str = "Attention from one token") -> go.Figure:
    """Bars: how much the token at position `query` attends to each key position.

    Example:
        >>> fig = token_attention(np.array([0.25, 0.75, 0.0]), ["a", "b", "c"], query=1)
        >>> list(fig.data[0].y), fig.data[0].marker.color[1]
        ([0.25, 0.75, 0.0], 'crimson')
    """
    labels = [token_label(t) for t in tokens]
    values = [float(v) for v in np.asarray(row)]
    colours = ["crimson" if k == query else "steelblue" for k in range(len(values))]
    figure = go.Figure(
        go.Bar(
            x=list(range(len(values))),
            y=values,
            marker={"color": colours},
            hovertext=[f"key {k} <b>{labels[k]}</b>  p {v:.4f}" for k, v in enumerate(values)],
            hoverinfo="text",
            name="attention",
        )
    )
    figure.update_layout(title={"text": f"{title}: {labels[query]}"},
                         xaxis=position_axis(labels),
                         yaxis={"title": {"text": "attention probability"}, "rangemode": "tozero"},
                         bargap=0.15)
    return figure
