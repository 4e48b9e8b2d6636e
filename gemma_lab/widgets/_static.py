"""Script-free pictures for the widgets' saved snapshots: a token strip, a heatmap, bars and
line charts as inline SVG, and colour bars. Every label passes through `_markup` (escaped)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gemma_lab import render
from gemma_lab._markup import Html, join, tag
from gemma_lab.figures._labels import token_displays

_FONT = "font-family:var(--jp-ui-font-family,system-ui,sans-serif);font-size:10px"


def probability_colour(prob: float | None) -> str:
    """The token strip's probability colour (`render.probability_colour`), grey without one.

    Example:
        >>> probability_colour(1.0), probability_colour(None)
        ('hsl(120,75%,82%)', '#e8e8e8')
    """
    return "#e8e8e8" if prob is None else render.probability_colour(prob)


def attention_colour(weight: float, high: float = 1.0) -> str:
    """Sequential blue for an attention weight (white at 0, dark blue at `high`).

    Example:
        >>> attention_colour(0.0), attention_colour(1.0)
        ('hsl(215, 70%, 97%)', 'hsl(215, 70%, 35%)')
    """
    share = min(max(weight / high, 0.0), 1.0) if high > 0 else 0.0
    return f"hsl(215, 70%, {97 - 62 * share:.0f}%)"


def colour_bar(label: str, low: str, high: str, colour: Callable[[float], str]) -> Html:
    """A small horizontal colour bar with its end labels, e.g. for attention weights.

    Example:
        >>> "attention" in colour_bar("attention", "0", "1", attention_colour)
        True
    """
    stops = ", ".join(colour(i / 8) for i in range(9))
    return tag("span", tag("span", label), tag("span", low, style="margin-left:6px"),
               tag("span", "", style=f"display:inline-block;width:90px;height:9px;"
                                     f"margin:0 4px;vertical-align:middle;"
                                     f"background:linear-gradient(to right, {stops})"),
               tag("span", high), class_="gemma-lab-colour-bar",
               style="font-size:11px;color:#555")


def strip(entries: Sequence[Mapping[str, Any]]) -> Html:
    """Token strip entries (`token_entry` dicts) as coloured spans with their tooltips.

    Example:
        >>> html = strip([{"text": "<b>", "prob": 0.5, "role": "generated", "title": "p"}])
        >>> "&lt;b&gt;" in html and "<b>" not in html
        True
    """
    spans = [tag("span", entry["text"] or "\u2205",
                 class_=f"gemma-lab-token gemma-lab-token-{entry['role']}",
                 title=entry.get("title") or None,
                 data_prob=None if entry.get("prob") is None else f"{entry['prob']:.4f}",
                 style=f"background:{entry.get('colour') or probability_colour(entry.get('prob'))};"
                       "border-radius:3px;box-shadow:inset -1px 0 0 rgba(0,0,0,.18)")
             for entry in entries]
    return tag("div", join(spans), class_="gemma-lab-static-strip",
               style="font-family:var(--jp-code-font-family,monospace);white-space:pre-wrap;"
                     "line-height:1.8;padding:4px;border:1px solid #ddd")


def _short(label: str, limit: int = 8) -> str:
    """A readable label (`token_displays` already applied) cut to `limit` characters."""
    return label if len(label) <= limit else label[:limit - 1] + "…"


def heatmap(matrix: Sequence[Sequence[float]], labels: Sequence[str], title: str,
            colour: Callable[[float], str] = attention_colour, cell: int = 14,
            show_labels: bool = True) -> Html:
    """A query (rows) × key (columns) heatmap as SVG; each cell's tooltip gives its value.

    Example:
        >>> svg = heatmap([[1.0, 0.0], [0.3, 0.7]], ["<bos>", "a"], "layer 0")
        >>> svg.count("<rect"), "&lt;bos&gt;" in svg
        (4, True)
    """
    rows = len(matrix)
    shown = token_displays(labels)  # the tooltips keep the exact text
    margin = 60 if show_labels else 4
    size = margin + cell * max(rows, 1)
    parts = []
    for q, row in enumerate(matrix):
        for k, value in enumerate(row):
            parts.append(tag("rect", tag("title", f"query {q} {labels[q]!r} → key {k} "
                                                  f"{labels[k]!r}: {value:.4f}"),
                             x=margin + k * cell, y=18 + margin + q * cell, width=cell,
                             height=cell, fill=colour(float(value))))
    if show_labels:
        for i, label in enumerate(shown):
            middle = margin + i * cell + cell / 2
            parts.append(tag("text", _short(label), x=margin - 3, y=18 + middle + 3,
                             text_anchor="end"))
            parts.append(tag("text", _short(label), x=middle, y=18 + margin - 3,
                             transform=f"rotate(-60 {middle} {18 + margin - 3})"))
    parts.insert(0, tag("text", title, x=0, y=11, style="font-weight:bold"))
    return tag("svg", join(parts), xmlns="http://www.w3.org/2000/svg", width=size,
               height=size + 18, style=_FONT, class_="gemma-lab-static-heatmap")


def bars(values: Sequence[float], labels: Sequence[str], title: str,
         colours: Sequence[str] | None = None, top: float | None = None, width: int = 560,
         height: int = 140, what: str = "p") -> Html:
    """A bar per value (0 .. `top`, default the largest), labelled below when there is room.

    Example:
        >>> svg = bars([0.2, 0.8], ["a", "<b>"], "probability")
        >>> svg.count("<rect"), "&lt;b&gt;" in svg
        (2, True)
    """
    top = top if top is not None else max([*values, 1e-9])
    count = max(len(values), 1)
    slot = (width - 40) / count
    colours = colours or ["#4c78a8"] * len(values)
    parts = [tag("text", title, x=0, y=11, style="font-weight:bold"),
             tag("line", x1=36, x2=width, y1=height, y2=height, stroke="#999"),
             tag("text", f"{top:.3g}", x=32, y=24, text_anchor="end"),
             tag("text", "0", x=32, y=height, text_anchor="end")]
    shown = token_displays(labels)  # the tooltips keep the exact text
    for i, (value, label, display) in enumerate(zip(values, labels, shown, strict=True)):
        bar = (height - 20) * min(max(value / top, 0.0), 1.0) if top > 0 else 0.0
        x = 40 + i * slot
        parts.append(tag("rect", tag("title", f"{label!r}: {what} {value:.4f}"), x=f"{x:.1f}",
                         y=f"{height - bar:.1f}", width=f"{max(slot - 2, 1):.1f}",
                         height=f"{bar:.1f}", fill=colours[i]))
        if slot >= 14:
            parts.append(tag("text", _short(display, max(int(slot / 6), 2)),
                             x=f"{x + slot / 2:.1f}", y=height + 12, text_anchor="middle"))
    return tag("svg", join(parts), xmlns="http://www.w3.org/2000/svg", width=width,
               height=height + 18, style=_FONT, class_="gemma-lab-static-bars")


def lines(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str,
          x_label: str, y_label: str, width: int = 560, height: int = 200) -> Html:
    """Named (x, y) series as SVG polylines on shared axes, with a legend.

    Example:
        >>> svg = lines({"train": ([1, 2, 3], [3.0, 2.0, 1.5])}, "loss", "step", "nats")
        >>> svg.count("<polyline"), "train" in svg
        (1, True)
    """
    xs = [x for x_values, _ in series.values() for x in x_values]
    ys = [y for _, y_values in series.values() for y in y_values if math.isfinite(y)]
    if not xs or not ys:
        return tag("div", f"{title}: no data yet", style="color:#666;font-size:11px")
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(ys), max(ys)
    if y_high == y_low:
        y_low, y_high = y_low - 0.5, y_high + 0.5
    left, top_, bottom = 50, 22, height - 24
    right = width - 10

    def point(x: float, y: float) -> str:
        px = left + (right - left) * ((x - x_low) / (x_high - x_low) if x_high > x_low else 0.5)
        py = bottom - (bottom - top_) * (y - y_low) / (y_high - y_low)
        return f"{px:.1f},{py:.1f}"

    palette = ("#4c78a8", "#e45756", "#54a24b", "#b279a2")
    parts = [tag("text", title, x=0, y=11, style="font-weight:bold"),
             tag("line", x1=left, x2=right, y1=bottom, y2=bottom, stroke="#999"),
             tag("line", x1=left, x2=left, y1=top_, y2=bottom, stroke="#999"),
             tag("text", f"{y_high:.4g}", x=left - 3, y=top_ + 4, text_anchor="end"),
             tag("text", f"{y_low:.4g}", x=left - 3, y=bottom, text_anchor="end"),
             tag("text", f"{x_low:g}", x=left, y=bottom + 12, text_anchor="middle"),
             tag("text", f"{x_high:g}", x=right, y=bottom + 12, text_anchor="middle"),
             tag("text", f"{x_label} · {y_label}", x=(left + right) / 2, y=height - 2,
                 text_anchor="middle", fill="#555")]
    for index, (name, (x_values, y_values)) in enumerate(series.items()):
        colour = palette[index % len(palette)]
        points = " ".join(point(x, y) for x, y in zip(x_values, y_values, strict=True)
                          if math.isfinite(y))
        if not points:
            continue
        parts.append(tag("polyline", tag("title", name), points=points, fill="none",
                         stroke=colour, stroke_width=2))
        for x, y in zip(x_values, y_values, strict=True):
            if math.isfinite(y):
                cx, cy = point(x, y).split(",")
                parts.append(tag("circle", tag("title", f"{name} at {x:g}: {y:.4f}"), cx=cx,
                                 cy=cy, r=2.5, fill=colour))
        parts.append(tag("text", f"— {name}", x=right - 90 * (len(series) - index), y=11,
                         fill=colour))
    return tag("svg", join(parts), xmlns="http://www.w3.org/2000/svg", width=width,
               height=height, style=_FONT, class_="gemma-lab-static-lines")


__all__ = ["attention_colour", "bars", "colour_bar", "heatmap", "lines", "probability_colour",
           "strip"]
