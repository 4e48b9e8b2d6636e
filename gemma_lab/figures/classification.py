"""The safety-classification figure: P(violation) per policy, grouped by text."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from gemma_lab.figures._labels import plotly_text


def classification_bars(texts: Sequence[str], policies: Sequence[str],
                        probabilities: np.ndarray) -> go.Figure:
    """One bar per (text, policy): P(violation) on a 0..1 axis, a dashed line at 0.5.

    Example:
        >>> fig = classification_bars(["<b>"], ["hate"], np.array([[0.25]]))
        >>> fig.data[0].name, fig.layout.yaxis.range
        ('&lt;b&gt;', (0.0, 1.0))
    """
    figure = go.Figure()
    for row, text in enumerate(texts):
        short = text if len(text) <= 40 else text[:39] + "…"
        figure.add_trace(go.Bar(
            x=[plotly_text(p) for p in policies], y=[float(v) for v in probabilities[row]],
            name=plotly_text(short),
            hovertemplate="%{x}: P(violation) = %{y:.3f}<extra>" + plotly_text(short)
                          + "</extra>"))
    figure.add_hline(y=0.5, line_dash="dash", line_color="grey")
    figure.update_layout(
        title={"text": "P(violation) per policy (ShieldGemma prompt)"},
        xaxis={"title": {"text": "policy"}, "type": "category"},
        yaxis={"title": {"text": "P(violation)"}, "range": [0.0, 1.0]},
        barmode="group", showlegend=len(texts) > 1)
    return figure
