"""The activation-patching heatmap: layers down, positions (or heads) across."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from gemma_lab.figures._labels import plotly_text, token_label


def patching_heatmap(values: np.ndarray, columns: Sequence[str], over: str, target: str,
                     clean: float, corrupted: float, kind: str = "logprob") -> go.Figure:
    """Heatmap of patched log p(target) (or the recovered fraction) per [layer, column];
    hover shows layer, token or head, and value.

    Example:
        >>> fig = patching_heatmap(np.zeros((2, 3)), ["<bos>", "a", "<b>"], "resid_pre",
        ...                        " x", -1.0, -5.0)
        >>> fig.data[0].x[2], fig.layout.yaxis.autorange
        ('2 &lt;b&gt;', 'reversed')
    """
    # Positions are numbered (a token may repeat); heads are already unique labels.
    labels = (list(columns) if over == "heads"
              else [f"{i} {token_label(c)}" for i, c in enumerate(columns)])
    rows = [f"L{layer}" for layer in range(values.shape[0])]
    if kind == "recovered":
        colour = {"colorscale": "RdBu", "zmid": 0.0, "colorbar": {"title": {"text": "recovered"}}}
        what = "fraction of the clean − corrupted gap recovered"
    else:
        colour = {"colorscale": "Viridis", "colorbar": {"title": {"text": "log p"}}}
        what = "log p(target)"
    figure = go.Figure(go.Heatmap(
        z=np.asarray(values, dtype="float64"), x=labels, y=rows,
        hovertemplate="%{y} · %{x}<br>" + what + " = %{z:.4f}<extra></extra>", **colour))
    axis = "head" if over == "heads" else "position"
    figure.update_layout(
        title={"text": (f"Patching {plotly_text(over)}: {what} of {plotly_text(repr(target))}"
                        f"<br><sup>clean {clean:.3f} · corrupted {corrupted:.3f}</sup>")},
        xaxis={"title": {"text": axis}, "type": "category"},
        yaxis={"title": {"text": "layer"}, "autorange": "reversed", "type": "category"},
    )
    return figure
