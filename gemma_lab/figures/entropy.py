"""Uncertainty over positions: entropy (with surprisal) and the rank of the chosen token."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from gemma_lab.figures._labels import position_axis, token_label


def entropy_figure(tokens: Sequence[str], entropy: Sequence[float],
                   logprobs: Sequence[float] | None = None,
                   title: str = "Entropy per position") -> go.Figure:
    """Entropy (nats) of the model's distribution at each position; with `logprobs`, also the
    chosen token's surprisal (−log p), which sits above the entropy where the token surprised.

    Example:
        >>> fig = entropy_figure(["a", "b"], [1.0, 2.0], logprobs=[-0.5, -3.0])
        >>> [trace.name for trace in fig.data]
        ['entropy', 'surprisal −log p']
    """
    labels = [token_label(t) for t in tokens]
    x = list(range(len(labels)))
    figure = go.Figure(
        go.Scatter(x=x, y=[float(e) for e in entropy], mode="lines+markers", name="entropy",
                   hovertext=[f"<b>{label}</b>  entropy {float(e):.4g} nats"
                              for label, e in zip(labels, entropy, strict=True)],
                   hoverinfo="text")
    )
    if logprobs is not None:
        surprisal = [-float(lp) for lp in logprobs]
        figure.add_trace(
            go.Scatter(x=x, y=surprisal, mode="markers", name="surprisal −log p",
                       hovertext=[f"<b>{label}</b>  −log p {s:.4g} nats"
                                  for label, s in zip(labels, surprisal, strict=True)],
                       hoverinfo="text")
        )
    figure.update_layout(title={"text": title}, xaxis=position_axis(labels),
                         yaxis={"title": {"text": "nats"}, "rangemode": "tozero"})
    return figure


def rank_figure(tokens: Sequence[str], ranks: Sequence[int],
                title: str = "Rank of the chosen token") -> go.Figure:
    """Rank (1 = the model's top choice) of each chosen token, on a log axis.

    Example:
        >>> list(rank_figure(["a", "b"], [1, 40]).data[0].y)
        [1, 40]
    """
    labels = [token_label(t) for t in tokens]
    figure = go.Figure(
        go.Scatter(x=list(range(len(labels))), y=[int(r) for r in ranks], mode="lines+markers",
                   name="rank",
                   hovertext=[f"<b>{label}</b>  rank {int(r)}"
                              for label, r in zip(labels, ranks, strict=True)],
                   hoverinfo="text")
    )
    figure.update_layout(title={"text": title}, xaxis=position_axis(labels),
                         yaxis={"title": {"text": "rank"}, "type": "log"})
    return figure
