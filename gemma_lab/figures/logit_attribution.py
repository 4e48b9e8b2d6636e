"""Direct logit attribution figures: bars per component, and a [layer, head] heatmap."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from gemma_lab.figures._labels import plotly_text
from gemma_lab.figures.attribution import signed_marker


def layer_bars(labels: Sequence[str], values: np.ndarray, target: str) -> go.Figure:
    """One bar per component (embed, L0 attn, L0 mlp, ...): blue raises the target's logit,
    red lowers it (the attribution colours, with a colour bar naming them).

    Example:
        >>> fig = layer_bars(["embed", "L0 attn"], np.array([0.5, -1.0]), "<x>")
        >>> fig.data[0].marker.color
        (1.0, -1.0)
    """
    values = [float(v) for v in values]
    figure = go.Figure(go.Bar(
        x=list(labels), y=values,
        marker=signed_marker(values, "the logit"),
        hovertemplate="%{x}: %{y:+.4f}<extra></extra>"))
    figure.update_layout(
        title={"text": f"Direct logit attribution of {plotly_text(repr(target))}"},
        xaxis={"title": {"text": "component"}, "type": "category"},
        yaxis={"title": {"text": "contribution to the logit"}, "zeroline": True},
        bargap=0.15)
    return figure


def head_heatmap(heads: np.ndarray, target: str) -> go.Figure:
    """[layer, head] heatmap of each head's direct contribution (diverging, centred at 0).

    Example:
        >>> head_heatmap(np.zeros((2, 4)), "x").data[0].zmid
        0.0
    """
    figure = go.Figure(go.Heatmap(
        z=np.asarray(heads, dtype="float64"),
        x=[f"H{h}" for h in range(heads.shape[1])],
        y=[f"L{layer}" for layer in range(heads.shape[0])],
        colorscale="RdBu", zmid=0.0,
        colorbar={"title": {"text": "logit<br>blue raises<br>red lowers"}},
        hovertemplate="%{y} %{x}: %{z:+.4f}<extra></extra>"))
    figure.update_layout(
        title={"text": f"Per-head direct logit attribution of {plotly_text(repr(target))}"},
        xaxis={"title": {"text": "head"}, "type": "category"},
        yaxis={"title": {"text": "layer"}, "autorange": "reversed", "type": "category"})
    return figure
