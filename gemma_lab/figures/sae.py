"""SAE figures: feature activations over a text (heatmap with the reconstruction error
under it) and a trained SAE's loss curve."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gemma_lab.figures._labels import position_axis, token_label

# Feature activations are non-negative: one sequential palette, distinct from the
# probability palette of the token views.
FEATURE_COLORSCALE = "Purples"


def features_figure(tokens: Sequence[str], features: Sequence[int], acts: np.ndarray,
                    relative_error: Sequence[float], title: str = "SAE features"
                    ) -> go.Figure:
    """Rows: `features`; columns: positions; `acts` is [position, len(features)]. Below it,
    each position's reconstruction error ‖x - x̂‖² / ‖x‖².

    Example:
        >>> fig = features_figure(["<bos>", "<b>"], [7], np.array([[0.0], [2.0]]), [0.1, 0.2])
        >>> fig.data[0].y[0], fig.data[0].customdata[0][1]
        ('f7', '&lt;b&gt;')
    """
    acts = np.asarray(acts, dtype="float64").reshape(len(tokens), len(features))
    labels = [token_label(t) for t in tokens]
    # Colour range from the positions after <bos>, whose outsized activations saturate.
    body = acts[1:] if len(acts) > 1 else acts
    top = float(body.max()) if body.size and body.max() > 0 else None
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.8, 0.2],
                           vertical_spacing=0.04)
    figure.add_trace(go.Heatmap(
        z=acts.T.tolist(), x=list(range(len(tokens))), y=[f"f{f}" for f in features],
        customdata=[[labels[p] for p in range(len(tokens))] for _ in features],
        hovertemplate="feature %{y} at %{x} <b>%{customdata}</b>: %{z:.4g}<extra></extra>",
        colorscale=FEATURE_COLORSCALE, zmin=0.0, zmax=top,
        colorbar={"title": {"text": "activation<br>(&lt;bos&gt; saturates)"}, "len": 0.75,
                  "y": 0.6}), row=1, col=1)
    figure.add_trace(go.Bar(
        x=list(range(len(tokens))), y=[float(v) for v in relative_error],
        marker={"color": "#888"}, customdata=labels, name="reconstruction error",
        hovertemplate="%{customdata}: ‖x−x̂‖²/‖x‖² %{y:.3g}<extra></extra>",
        showlegend=False), row=2, col=1)
    axis = position_axis(labels)
    figure.update_xaxes(**{k: v for k, v in axis.items() if k != "title"}, row=2, col=1)
    figure.update_xaxes(showticklabels=False, row=1, col=1)
    figure.update_yaxes(title={"text": "feature"}, autorange="reversed", row=1, col=1)
    figure.update_yaxes(title={"text": "rel. error"}, row=2, col=1)
    figure.update_layout(title={"text": title}, height=max(360, 22 * len(features) + 220),
                         margin={"l": 70, "r": 20, "t": 50, "b": 60})
    return figure


def sae_loss_figure(losses: Sequence[float], reconstruction: Sequence[float],
                    title: str = "SAE training") -> go.Figure:
    """Training loss and its reconstruction part per step.

    Example:
        >>> len(sae_loss_figure([2.0, 1.0], [1.5, 0.8]).data)
        2
    """
    steps = list(range(1, len(losses) + 1))
    figure = go.Figure([
        go.Scatter(x=steps, y=[float(v) for v in losses], name="loss (reconstruction + L1)"),
        go.Scatter(x=steps, y=[float(v) for v in reconstruction], name="reconstruction"),
    ])
    figure.update_layout(title={"text": title}, xaxis={"title": {"text": "step"}},
                         yaxis={"title": {"text": "per-token loss (normalised x)"},
                                "type": "log"}, height=320)
    return figure


__all__ = ["FEATURE_COLORSCALE", "features_figure", "sae_loss_figure"]
