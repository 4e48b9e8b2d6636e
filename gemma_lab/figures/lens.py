"""The logit-lens figure: depth × position, coloured by the probability each depth's
residual stream gives the actual next token, with the top-k in the hover."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from gemma_lab.figures._labels import (
    LABEL_FONT_PX,
    plotly_text,
    position_axis,
    token_display,
    token_label,
    token_labels,
)

_MAX_CELL_TEXT = 40
_CELL_CHARS = 8  # longer top tokens are cut in the cell (hover has them whole)
_ROW_PX = 28


def lens_heatmap(target_probs: np.ndarray, top_tokens: np.ndarray, top_probs: np.ndarray,
                 tokens: Sequence[str], title: str = "Logit lens") -> go.Figure:
    """Rows are depths (0 = embeddings, d = after block d - 1), columns positions.

    `target_probs` is [depth, position] (NaN where there is no next token); `top_tokens` /
    `top_probs` are [depth, position, k]. Cells show the top-1 token when there are few
    positions; hover lists the top-k.

    Example:
        >>> fig = lens_heatmap(np.array([[0.1, np.nan]]), np.array([[["a"], ["<b>"]]]),
        ...                    np.array([[[0.5], [0.9]]]), ["x", "y"])
        >>> fig.data[0].text[0][1]
        '&lt;b&gt;'
    """
    target_probs = np.asarray(target_probs, dtype="float64")
    depths, positions = target_probs.shape
    labels = token_labels(tokens)
    z = [[None if np.isnan(v) else float(v) for v in row] for row in target_probs]
    cell_text = [[_cell(top_tokens[d, p, 0]) if top_tokens.shape[-1] else ""
                  for p in range(positions)] for d in range(depths)]
    hover = []
    for d in range(depths):
        row = []
        for p in range(positions):
            pairs = zip(top_tokens[d, p], top_probs[d, p], strict=True)
            top = "<br>".join(f"{token_label(piece)}  {float(prob):.4g}" for piece, prob in pairs)
            target = z[d][p]
            next_token = (f"next token {labels[p + 1]}  p {target:.4g}" if target is not None
                          else "no next token")
            row.append(f"depth {d}, position {p} <b>{labels[p]}</b><br>{next_token}"
                       f"<br>top-k:<br>{top}")
        hover.append(row)
    figure = go.Figure(
        go.Heatmap(
            z=z,
            x=list(range(positions)),
            y=list(range(depths)),
            text=cell_text,
            texttemplate="%{text}" if positions <= _MAX_CELL_TEXT else None,
            textfont={"size": LABEL_FONT_PX},
            customdata=hover,
            hovertemplate="%{customdata}<extra></extra>",
            colorscale="Viridis",
            zmin=0.0,
            zmax=1.0,
            colorbar={"title": {"text": "p(next)"}},
        )
    )
    y_ticks = ["0 embed", *(str(d) for d in range(1, depths))]
    figure.update_layout(
        title={"text": title},
        xaxis=position_axis(labels),
        yaxis={"title": {"text": "blocks applied"}, "tickmode": "array",
               "tickvals": list(range(depths)), "ticktext": y_ticks, "automargin": True,
               "tickfont": {"size": LABEL_FONT_PX}},
        height=max(360, _ROW_PX * depths + 200),
        font={"size": LABEL_FONT_PX},
    )
    return figure


def _cell(piece: str) -> str:
    """A heatmap cell's top token: readable, cut to `_CELL_CHARS` characters, escaped.

    Example:
        >>> _cell("<0xEE>"), _cell("international"), _cell("<b>")
        ('\\\\xEE', 'internat…', '&lt;b&gt;')
    """
    shown = token_display(piece)
    if len(shown) > _CELL_CHARS:
        shown = shown[:_CELL_CHARS] + "…"
    return plotly_text(shown)
