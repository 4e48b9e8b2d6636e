"""Dataset evaluation figure: the distribution of one metric over the examples, and the
examples where the model does worst."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gemma_lab.figures._labels import plotly_text


def evaluation_figure(values: Sequence[float], labels: Sequence[str], metric: str,
                      worst: Sequence[int], higher_is_better: bool) -> go.Figure:
    """A histogram of `metric` over the examples (left) and the `worst` examples' values as
    bars labelled by their text (right).

    Example:
        >>> fig = evaluation_figure([1.5, 3.0, 9.0], ["a", "b", "c"], "perplexity", [2, 1],
        ...                         higher_is_better=False)
        >>> [t.type for t in fig.data], list(fig.data[1].y)
        (['histogram', 'bar'], ['#2 c', '#1 b'])
    """
    direction = "higher is better" if higher_is_better else "lower is better"
    figure = make_subplots(rows=1, cols=2, column_widths=[0.5, 0.5], horizontal_spacing=0.28,
                           subplot_titles=(f"{metric} over {len(values)} examples ({direction})",
                                           f"worst {len(worst)}"))
    figure.add_trace(go.Histogram(x=[float(v) for v in values], name=metric,
                                  marker={"color": "#4c78a8"},
                                  hovertemplate=f"{metric} %{{x}}<br>%{{y}} examples"
                                                "<extra></extra>"), row=1, col=1)
    names = [f"#{i} {plotly_text(_short(labels[i]))}" for i in worst]
    figure.add_trace(go.Bar(x=[float(values[i]) for i in worst], y=names, orientation="h",
                            name="worst", marker={"color": "#e45756"},
                            hovertemplate=f"%{{y}}<br>{metric} %{{x:.4g}}<extra></extra>"),
                     row=1, col=2)
    figure.update_xaxes(title_text=metric, row=1, col=1)
    figure.update_yaxes(title_text="examples", row=1, col=1)
    figure.update_xaxes(title_text=metric, row=1, col=2)
    figure.update_yaxes(autorange="reversed", automargin=True, row=1, col=2)
    figure.update_layout(showlegend=False, height=max(320, 40 + 28 * len(worst)),
                         margin={"l": 60, "r": 20, "t": 60, "b": 50})
    return figure


def _short(text: str, width: int = 32) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


__all__ = ["evaluation_figure"]
