"""Token text made safe and readable for plotly, whose labels and hover text are parsed as HTML."""

from __future__ import annotations

import html
from collections.abc import Sequence

_VISIBLE_WHITESPACE = {"\n": "↵", "\t": "⇥", "\r": "␍"}


def plotly_text(text: str) -> str:
    """Escape the characters plotly would read as markup; quotes stay as they are because
    plotly decodes only &amp; &lt; &gt; (and numeric entities), not &quot;.

    Example:
        >>> plotly_text("<b>&")
        '&lt;b&gt;&amp;'
    """
    return html.escape(str(text), quote=False)


def token_label(text: str) -> str:
    """An axis label for a token: whitespace made visible, empty shown as "∅", escaped.

    Example:
        >>> token_label("<br>\\n"), token_label(""), token_label("  ")
        ('&lt;br&gt;↵', '∅', '␣␣')
    """
    if not text:
        return "∅"
    if not text.strip(" "):
        return "␣" * len(text)
    for raw, shown in _VISIBLE_WHITESPACE.items():
        text = text.replace(raw, shown)
    return plotly_text(text)


def alternatives_hover(alternatives: Sequence[tuple[str, float]]) -> str:
    """Hover lines "token  prob" for top-k alternatives, joined with <br> (plotly's newline)."""
    return "<br>".join(f"{token_label(piece)}  {float(prob):.4g}" for piece, prob in alternatives)


def position_axis(labels: Sequence[str], max_labelled: int = 80) -> dict:
    """x-axis settings: positions as ticks labelled by token (readable up to `max_labelled`).

    Positions rather than token categories, because a repeated token would otherwise merge
    into one category.
    """
    axis = {"title": {"text": "token"}}
    if len(labels) <= max_labelled:
        axis.update(tickmode="array", tickvals=list(range(len(labels))), ticktext=list(labels),
                    tickangle=-45 if len(labels) > 12 else 0)
    else:
        axis["title"] = {"text": "position (hover for the token)"}
    return axis
