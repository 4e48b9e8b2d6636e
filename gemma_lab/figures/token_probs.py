"""Per-token probability plots: the chosen token's probability, and the top-k alternatives."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from gemma_lab.figures._labels import alternatives_hover, position_axis, token_label, token_labels


def token_probability_figure(tokens: Sequence[str], probs: Sequence[float],
                             top_k: Sequence[Sequence[tuple[str, float]]],
                             ranks: Sequence[int] | None = None,
                             title: str = "Token probability") -> go.Figure:
    """A bar per token: the probability of the chosen token, coloured red (unlikely) to green;
    hovering shows its rank and the model's top-k alternatives at that position.

    Example:
        >>> fig = token_probability_figure(["a", "b"], [0.9, 0.2], [[("a", 0.9)], [("c", 0.5)]])
        >>> len(fig.data), list(fig.data[0].y)
        (1, [0.9, 0.2])
    """
    labels = token_labels(tokens)
    hover = []
    for position, (label, prob, alternatives) in enumerate(zip(labels, probs, top_k, strict=True)):
        rank = f"  rank {ranks[position]}" if ranks is not None else ""
        hover.append(f"<b>{label}</b>  p {float(prob):.4g}{rank}<br>top-k:<br>"
                     + alternatives_hover(alternatives))
    figure = go.Figure(
        go.Bar(
            x=list(range(len(labels))),
            y=[float(p) for p in probs],
            # Colours as strings: plotly.js 3 logs "Invalid color specifier" for each bar
            # given a number on a colour scale (bar rounding reads marker colours as colours).
            marker={"color": sample_colorscale("RdYlGn", [min(max(float(p), 0.0), 1.0)
                                                          for p in probs])},
            hovertext=hover,
            hoverinfo="text",
            name="chosen token",
        )
    )
    figure.update_layout(title={"text": title}, xaxis=position_axis(labels),
                         yaxis={"title": {"text": "probability"}, "range": [0, 1]},
                         bargap=0.15)
    return figure


def top_k_heatmap(tokens: Sequence[str], top_k: Sequence[Sequence[tuple[str, float]]],
                  title: str = "Top-k alternatives") -> go.Figure:
    """Positions × alternative rank, heat = probability; hover names each alternative.

    Example:
        >>> fig = top_k_heatmap(["a", "b"], [[("a", 0.9), ("b", 0.1)], [("c", 0.5)]])
        >>> fig.data[0].z
        ([0.9, 0.5], [0.1, None])
    """
    labels = token_labels(tokens)
    depth = max((len(row) for row in top_k), default=0)
    z: list[list[float | None]] = [[None] * len(labels) for _ in range(depth)]
    text: list[list[str]] = [[""] * len(labels) for _ in range(depth)]
    for position, alternatives in enumerate(top_k):
        for k, (piece, prob) in enumerate(alternatives):
            z[k][position] = float(prob)
            text[k][position] = (f"<b>{token_label(piece)}</b>  p {float(prob):.4g}<br>"
                                 f"alternative {k + 1} at {labels[position]}")
    figure = go.Figure(
        go.Heatmap(
            z=z,
            x=list(range(len(labels))),
            y=list(range(1, depth + 1)),
            text=text,
            hoverinfo="text",
            colorscale="Viridis",
            zmin=0.0,
            zmax=1.0,
            colorbar={"title": {"text": "p"}},
        )
    )
    figure.update_layout(title={"text": title}, xaxis=position_axis(labels),
                         yaxis={"title": {"text": "alternative rank"}, "autorange": "reversed",
                                "dtick": 1})
    return figure
