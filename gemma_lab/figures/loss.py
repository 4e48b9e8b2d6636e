"""Fine-tuning figures: the loss curve (train per step, validation per epoch) and the
before/after probability of held-out reference responses."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from gemma_lab.figures._labels import plotly_text


def loss_figure(train: Sequence[float], validation: Sequence[float] = (),
                steps_per_epoch: int | None = None,
                title: str = "Fine-tuning loss") -> go.Figure:
    """Train loss per step, and validation loss at the end of each epoch (step axis).

    Example:
        >>> fig = loss_figure([3.0, 2.5, 2.0, 1.8], validation=[2.6, 2.1], steps_per_epoch=2)
        >>> [trace.name for trace in fig.data], list(fig.data[1].x)
        (['train', 'validation'], [2, 4])
    """
    steps = list(range(1, len(train) + 1))
    figure = go.Figure(
        go.Scatter(x=steps, y=[float(v) for v in train], mode="lines+markers", name="train",
                   marker={"size": 4},
                   hovertemplate="step %{x}<br>train loss %{y:.4g}<extra></extra>")
    )
    per_epoch = steps_per_epoch or 1
    figure.add_trace(
        go.Scatter(x=[per_epoch * (epoch + 1) for epoch in range(len(validation))],
                   y=[float(v) for v in validation], mode="lines+markers", name="validation",
                   marker={"size": 8, "symbol": "diamond"},
                   hovertemplate="epoch end, step %{x}<br>validation loss %{y:.4g}"
                                 "<extra></extra>")
    )
    figure.update_layout(
        title={"text": title},
        xaxis={"title": {"text": "step"}},
        yaxis={"title": {"text": "cross-entropy (nats per response token)"}},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"},
    )
    return figure


def before_after_figure(labels: Sequence[str], before: Sequence[float],
                        after: Sequence[float],
                        title: str = "Reference response probability, before vs after",
                        ) -> go.Figure:
    """Per held-out example, the mean per-token probability of its reference response under
    the model before and after fine-tuning (grouped bars).

    Example:
        >>> fig = before_after_figure(["<q1>", "q2"], [0.1, 0.2], [0.4, 0.3])
        >>> [trace.name for trace in fig.data], fig.data[0].x[0]
        (['before', 'after'], '&lt;q1&gt;')
    """
    shown = [plotly_text(label) for label in labels]
    figure = go.Figure()
    for name, values in (("before", before), ("after", after)):
        figure.add_trace(go.Bar(
            x=shown, y=[float(v) for v in values], name=name,
            hovertemplate="%{x}<br>" + name + " mean p %{y:.4g}<extra></extra>",
        ))
    figure.update_layout(
        title={"text": title}, barmode="group",
        yaxis={"title": {"text": "mean token probability"}, "range": [0, 1]},
        xaxis={"title": {"text": "held-out example"}},
    )
    return figure


__all__ = ["before_after_figure", "loss_figure"]
