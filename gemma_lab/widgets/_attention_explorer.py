"""The Attention explorer: trace a text, pick a layer and head, see the heatmap and the
layer's head grid, and click a token to see what it attends to."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ipywidgets as w
import numpy as np
import plotly.graph_objects as go

from gemma_lab.widgets._background import BackgroundJob
from gemma_lab.widgets._controls import natural_labels
from gemma_lab.widgets._figure_widget import replace_figure
from gemma_lab.widgets._token_strip import TokenStrip, token_entry

if TYPE_CHECKING:
    from gemma_lab.inspect.records import Trace
    from gemma_lab.session import GemmaLab

MEAN_OF_HEADS = -1


class AttentionExplorer(w.VBox):
    """Trace a text (`lab.trace`) and explore its attention.

    Layer and head selectors drive a query × key heatmap (head "mean" averages the heads)
    and a grid of the layer's heads; clicking a token in the strip, or a heatmap row,
    shows how much that token attends to every earlier one (and colours the strip by it).

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

        self.text = w.Textarea(value=text, placeholder="Text to trace",
                               layout=w.Layout(width="100%", height="60px"))
        self.trace_button = w.Button(description="Trace", button_style="primary", icon="eye")
        self.status = w.Label(value=f"Model: {lab.model_id} ({lab.backend})")
        self.layer = w.Dropdown(options=[], description="layer")
        self.head = w.Dropdown(options=[], description="head")
        self.strip = TokenStrip()
        self.heatmap = go.FigureWidget()
        self.head_grid = go.FigureWidget()
        self.token_view = go.FigureWidget()
        natural_labels(self.layer, self.head)

        self.trace_button.on_click(lambda _: self.run_trace())
        self.layer.observe(lambda _: self._redraw(), names="value")
        self.head.observe(lambda _: self._redraw(grid=False), names="value")
        self.strip.observe(lambda _: self._show_query(), names="selected")

        super().__init__([
            self.text, w.HBox([self.trace_button, self.status]),
            w.HBox([self.layer, self.head]),
            self.strip, self.token_view,
            w.HBox([self.heatmap, self.head_grid], layout=w.Layout(flex_flow="row wrap")),
        ])
        self.add_class("gemma-lab-attention-explorer")

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
        self.status.value = "Tracing…"
        trace = self.lab.trace(text)
        self.trace = None  # no redraws while the selectors change
        self.layer.options = list(trace.layers)
        self.head.options = [("mean", MEAN_OF_HEADS), *((str(h), h) for h in trace.heads)]
        self.layer.value, self.head.value = trace.layers[0], MEAN_OF_HEADS
        self.strip.selected = -1
        self.strip.tokens = [token_entry(t, None, "token") for t in trace.tokens]
        self.trace = trace
        self._redraw()
        self.status.value = (f"{len(trace.tokens)} tokens, {trace.num_layers} layers × "
                             f"{len(trace.heads)} heads")

    def _head(self) -> int | None:
        return None if self.head.value in (None, MEAN_OF_HEADS) else self.head.value

    def _redraw(self, grid: bool = True) -> None:
        trace = self.trace
        if trace is None or self.layer.value is None:
            return
        replace_figure(self.heatmap, trace.figure("attention", layer=self.layer.value,
                                            head=self._head()))
        # Clicking a heatmap cell selects its query row, like clicking the token.
        for heatmap in self.heatmap.data:
            heatmap.on_click(self._on_heatmap_click)
        if grid:
            replace_figure(self.head_grid, trace.figure("heads", layer=self.layer.value))
        self._show_query()

    def _on_heatmap_click(self, trace: Any, points: Any, state: Any) -> None:
        if points.ys:
            self.strip.selected = int(points.ys[0])

    def _show_query(self) -> None:
        trace, query = self.trace, self.query
        if trace is None or query is None or self.layer.value is None:
            return
        replace_figure(self.token_view, trace.figure("token", layer=self.layer.value,
                                               head=self._head(), query=query))
        row = np.asarray(trace.attention_matrix(self.layer.value, self._head())[query])
        self.strip.tokens = [token_entry(t, float(row[k]) if k <= query else None, "token",
                                         f"attention from {query}: {row[k]:.4f}")
                             for k, t in enumerate(trace.tokens)]

    def _set_busy(self, busy: bool) -> None:
        self.trace_button.disabled = busy

    def _show_error(self, message: str) -> None:
        self.status.value = message


def attention_explorer(lab: GemmaLab, **options: Any) -> AttentionExplorer:
    """Open the Attention explorer on `lab` (what `%gemma attention` shows).

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> attention_explorer(tiny_session()).trace_button.description
        'Trace'
    """
    return AttentionExplorer(lab, **options)


__all__ = ["AttentionExplorer", "attention_explorer"]
