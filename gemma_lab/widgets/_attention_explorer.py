"""The Attention explorer: trace a text, pick a layer and head, see the heatmap and the
layer's head grid, and click a token to see what it attends to."""

from __future__ import annotations

import colorsys
from typing import TYPE_CHECKING, Any

import ipywidgets as w
import numpy as np

from gemma_lab._markup import Html, join, tag
from gemma_lab.widgets import _static
from gemma_lab.widgets._background import BackgroundJob
from gemma_lab.widgets._controls import natural_labels, status_text
from gemma_lab.widgets._figure_widget import FigureSlot
from gemma_lab.widgets._snapshot import LIVE_CLASS, Snapshot, SnapshotDisplay, status_line
from gemma_lab.widgets._token_strip import TokenStrip, token_entry

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from gemma_lab.inspect.records import Trace
    from gemma_lab.session import GemmaLab

MEAN_OF_HEADS = -1
# Token labels on the head grid's small heatmaps only while they can be read.
GRID_LABELLED_TOKENS = 12
SNAPSHOT_TOKENS = 64  # the saved view draws at most this many positions


def _hex(weight: float) -> str:
    """`_static.attention_colour` as #rrggbb (what plotly's colour scales take)."""
    share = min(max(weight, 0.0), 1.0)
    red, green, blue = colorsys.hls_to_rgb(215 / 360, (97 - 62 * share) / 100, 0.70)
    return f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}"


# Attention weights: a sequential blue scale (not the red-to-green of token probabilities),
# the same on the heatmaps, the head grid, the token strip and the saved view.
ATTENTION_SCALE = [[i / 4, _hex(i / 4)] for i in range(5)]


class AttentionExplorer(SnapshotDisplay, w.VBox):
    """Trace a text (`lab.trace`) and explore its attention.

    Layer and head selectors drive a query × key heatmap (head "mean" averages the heads)
    and a grid of the layer's heads; clicking a token in the strip
    shows how much that token attends to every earlier one (and shades the strip by it, on
    the attention colour bar shown under it). A saved notebook keeps the last view
    (`snapshot`) as static HTML.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> explorer = AttentionExplorer(tiny_session(), text="hello world")
        >>> explorer.trace_button.click(); explorer.wait()
        >>> explorer.trace.tokens[0], explorer.layer.value
        ('<bos>', 0)
    """

    def __init__(self, lab: GemmaLab, text: str = ""):
        self.lab = lab
        self.trace: Trace | None = None
        self._job = BackgroundJob(self._set_busy, self._show_error)
        self.snapshot = Snapshot("Attention explorer")

        self.text = w.Textarea(value=text, placeholder="Text to trace",
                               layout=w.Layout(width="100%", height="60px"))
        self.trace_button = w.Button(description="Trace", button_style="primary", icon="eye")
        self.status = status_text(f"Model: {lab.model_id} ({lab.backend}). Write a text and "
                                  "press Trace.")
        self.layer = w.Dropdown(options=[], description="layer",
                                layout=w.Layout(width="auto"))
        self.head = w.Dropdown(options=[], description="head", layout=w.Layout(width="auto"))
        self.strip = TokenStrip()
        self.legend = w.HTML(layout=w.Layout(width="100%"))
        self.heatmap = FigureSlot(width="50%", min_width="360px")
        self.token_view = FigureSlot(width="50%", min_width="360px")
        self.head_grid = FigureSlot()
        natural_labels(self.layer, self.head)

        self.trace_button.on_click(lambda _: self.run_trace())
        self.layer.observe(lambda _: self._redraw(), names="value")
        self.head.observe(lambda _: self._redraw(grid=False), names="value")
        self.strip.observe(lambda _: self._show_query(), names="selected")

        super().__init__([
            self.text, w.HBox([self.trace_button, self.status]),
            w.HBox([self.layer, self.head]),
            self.strip, self.legend,
            w.HBox([self.heatmap, self.token_view],
                   layout=w.Layout(flex_flow="row wrap", width="100%")),
            self.head_grid,
        ])
        self.add_class("gemma-lab-attention-explorer")
        self.add_class(LIVE_CLASS)
        self._save_snapshot()

    @property
    def busy(self) -> bool:
        return self._job.busy

    @property
    def error(self) -> BaseException | None:
        return self._job.error

    @property
    def query(self) -> int | None:
        """The clicked token's position (None: none clicked yet)."""
        return self.strip.selected if self.strip.selected >= 0 else None

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running trace has finished (for scripts and tests)."""
        self._job.wait(timeout)

    def run_trace(self) -> bool:
        """Trace the text box on a background thread; False if a trace is running."""
        text = self.text.value
        return self._job.start(lambda: self._trace(text))

    def _trace(self, text: str) -> None:
        self.status.text = "Tracing… (the first trace of a length compiles it)"
        trace = self.lab.trace(text)
        self.trace = None  # no redraws while the selectors change
        self.layer.options = list(trace.layers)
        self.head.options = [("mean", MEAN_OF_HEADS), *((str(h), h) for h in trace.heads)]
        self.layer.value, self.head.value = trace.layers[0], MEAN_OF_HEADS
        self.strip.selected = -1
        self.strip.tokens = [token_entry(t, None, "token") for t in trace.tokens]
        self.token_view.clear()
        self.trace = trace
        self.status.text = (f"{len(trace.tokens)} tokens, {trace.num_layers} layers × "
                             f"{len(trace.heads)} heads. Click a token to see what it "
                             "attends to.")
        self._redraw()

    def _head(self) -> int | None:
        return None if self.head.value in (None, MEAN_OF_HEADS) else self.head.value

    def _redraw(self, grid: bool = True) -> None:
        trace = self.trace
        if trace is None or self.layer.value is None:
            return
        self.heatmap.show(_attention_look(
            trace.figure("attention", layer=self.layer.value, head=self._head())))
        if grid:
            self.head_grid.show(_grid_look(trace.figure("heads", layer=self.layer.value),
                                           len(trace.tokens), len(trace.heads)))
        self._show_query()

    def _show_query(self) -> None:
        trace, query = self.trace, self.query
        if trace is None or self.layer.value is None:
            return
        if query is None:
            self.legend.value = ""
            self._save_snapshot()
            return
        self.token_view.show(trace.figure("token", layer=self.layer.value, head=self._head(),
                                          query=query))
        row = np.asarray(trace.attention_matrix(self.layer.value, self._head())[query])
        high = float(row[:query + 1].max()) or 1.0
        self.strip.tokens = [
            token_entry(t, float(row[k]) if k <= query else None, "token",
                        f"attention from {query}: {row[k]:.4f}" if k <= query
                        else "after the query: not attended (causal)",
                        colour=_static.attention_colour(float(row[k]), high) if k <= query
                        else None)
            for k, t in enumerate(trace.tokens)]
        self.legend.value = _legend(query, trace.tokens[query], high)
        self._save_snapshot()

    def _save_snapshot(self) -> None:
        trace = self.trace
        if trace is None:
            self.snapshot.update([status_line(self.status.text)], "not traced yet")
            return
        layer, head = self.layer.value, self._head()
        where = f"layer {layer}, " + ("mean of heads" if head is None else f"head {head}")
        shown = min(len(trace.tokens), SNAPSHOT_TOKENS)
        labels = list(trace.tokens[:shown])
        matrix = np.asarray(trace.attention_matrix(layer, head))[:shown, :shown]
        high = float(matrix.max()) or 1.0
        parts = [status_line(self.status.text), _static.strip(self.strip.tokens)]
        if self.legend.value:
            parts.append(Html(self.legend.value))
        parts.append(_static.colour_bar("heatmaps: attention weight", "0", f"{high:.2f}",
                                        _static.attention_colour))
        pictures = [_static.heatmap(matrix.tolist(), labels, f"Attention, {where}",
                                    colour=lambda v: _static.attention_colour(v, high))]
        if self.query is not None and self.query < shown:
            row = matrix[self.query]
            pictures.append(_static.bars(
                row[:self.query + 1].tolist(), labels[:self.query + 1],
                f"Attention from position {self.query} {labels[self.query]!r}", width=360,
                colours=[_static.attention_colour(float(v), high)
                         for v in row[:self.query + 1]], what="attention"))
        parts.append(tag("div", join(pictures), style="display:flex;flex-wrap:wrap;gap:16px"))
        per_head = np.asarray(trace.attention[trace.layers.index(layer)])[:, :shown, :shown]
        grid_high = float(per_head.max()) or 1.0
        parts.append(tag("div", join(
            _static.heatmap(m.tolist(), labels, f"head {h}", cell=max(3, 160 // shown),
                            show_labels=False,
                            colour=lambda v: _static.attention_colour(v, grid_high))
            for h, m in zip(trace.heads, per_head, strict=True)),
            style="display:flex;flex-wrap:wrap;gap:12px"))
        if shown < len(trace.tokens):
            parts.append(status_line(f"(first {shown} of {len(trace.tokens)} positions)"))
        self.snapshot.update(parts, f"{len(trace.tokens)} tokens, {where}")

    def _set_busy(self, busy: bool) -> None:
        self.trace_button.disabled = busy

    def _show_error(self, message: str) -> None:
        self.status.text = message
        self._save_snapshot()


def _legend(query: int, token: str, high: float) -> str:
    return tag("div", _static.colour_bar(f"token colour: attention from position {query} "
                                         f"{token!r}", "0", f"{high:.2f}",
                                         _static.attention_colour),
               class_="gemma-lab-attention-legend")


def _attention_look(figure: go.Figure) -> go.Figure:
    """The heatmap on the attention scale, sized for half the widget's width."""
    figure.update_traces(colorscale=ATTENTION_SCALE,
                         colorbar={"title": {"text": "attention"}})
    figure.update_layout(height=440, margin={"l": 70, "r": 20, "t": 50, "b": 70})
    return figure


def _grid_look(figure: go.Figure, tokens: int, heads: int) -> go.Figure:
    """The head grid full width, on the attention scale, labelled only while legible."""
    rows = max(1, -(-heads // 4))
    figure.update_layout(coloraxis_colorscale=ATTENTION_SCALE,
                         coloraxis_colorbar={"title": {"text": "attention"}},
                         height=120 + 280 * rows, margin={"l": 60, "r": 20, "t": 70, "b": 50})
    if tokens > GRID_LABELLED_TOKENS:
        figure.update_xaxes(showticklabels=False)
        figure.update_yaxes(showticklabels=False)
    else:
        figure.update_xaxes(tickangle=-60, tickfont={"size": 9})
        figure.update_yaxes(tickfont={"size": 9})
    return figure


def attention_explorer(lab: GemmaLab, **options: Any) -> AttentionExplorer:
    """Open the Attention explorer on `lab` (what `%gemma attention` shows).

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> attention_explorer(tiny_session()).trace_button.description
        'Trace'
    """
    return AttentionExplorer(lab, **options)


__all__ = ["AttentionExplorer", "attention_explorer"]
