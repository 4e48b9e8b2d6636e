"""The comparison figure: per-token log-probability difference of two runs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from gemma_lab.figures._labels import plotly_text, position_axis, token_label


def comparison_figure(tokens: Sequence[str], logprobs_a: np.ndarray, logprobs_b: np.ndarray,
                      labels: Sequence[str], diverged_at: int | None,
                      kind: str = "diff") -> go.Figure:
    """"diff": bars of log p_b − log p_a per shared token (blue: b likelier, red: a likelier);
    "logprobs": both runs' log p per token as lines.

    Example:
        >>> fig = comparison_figure(["a", "b"], np.array([-1.0, -2.0]), np.array([-0.5, -3.0]),
        ...                         ("base", "tuned"), None)
        >>> [round(v, 2) for v in fig.data[0].y], fig.data[0].marker.color
        ([0.5, -1.0], ('royalblue', 'indianred'))
    """
    shared = len(tokens) if diverged_at is None else diverged_at
    shown = [token_label(t) for t in tokens]
    name_a, name_b = (plotly_text(label) for label in labels)
    if kind == "logprobs":
        figure = go.Figure([
            go.Scatter(x=list(range(len(logprobs_a))), y=list(map(float, logprobs_a)),
                       mode="lines+markers", name=name_a),
            go.Scatter(x=list(range(len(logprobs_b))), y=list(map(float, logprobs_b)),
                       mode="lines+markers", name=name_b,
                       hovertext=shown, hoverinfo="text+y"),
        ])
        y_title = "log p(token)"
    else:
        diff = [float(v) for v in (np.asarray(logprobs_b[:shared]) - logprobs_a[:shared])]
        figure = go.Figure(go.Bar(
            x=list(range(shared)), y=diff,
            marker={"color": ["royalblue" if v >= 0 else "indianred" for v in diff]},
            hovertext=[f"<b>{label}</b>  {value:+.4f}"
                       for label, value in zip(shown[:shared], diff, strict=True)],
            hoverinfo="text", name="Δ log p"))
        y_title = f"log p({name_b}) − log p({name_a})"
    diverged = "" if diverged_at is None else f" (tokens differ from position {diverged_at})"
    figure.update_layout(
        title={"text": f"{name_b} vs {name_a}{diverged}"},
        xaxis=position_axis(shown if kind == "logprobs" else shown[:shared]),
        yaxis={"title": {"text": y_title}, "zeroline": True}, bargap=0.15)
    return figure
