"""Live feedback while training: tqdm's step bar and, in a notebook kernel with ipywidgets,
a plotly FigureWidget loss curve updated in place."""

from __future__ import annotations

import time
from typing import Any

from gemma_lab._progress import progress_counter


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class LiveFeedback:
    """Progress bar (always, unless disabled) and optional live loss figure.

    `figure=None` shows the live curve only inside a Jupyter kernel with ipywidgets; a plotly
    FigureWidget of `loss_figure` (a panel's own) is drawn into instead of a new one.
    Figure updates are throttled to one per `interval` seconds; `close()` draws the final state.
    """

    def __init__(self, total_steps: int, steps_per_epoch: int, *, progress: bool,
                 figure: Any, interval: float = 0.5):
        self.steps_per_epoch = steps_per_epoch
        self.interval = interval
        self.bar = progress_counter(total_steps, desc="Fine-tuning", unit="step",
                                    disable=not progress)
        self.widget: Any = None
        if hasattr(figure, "batch_update"):
            self.widget = figure
        elif figure or (figure is None and progress and _in_kernel()):
            self.widget = _figure_widget(steps_per_epoch)
        self._last_draw = 0.0
        self._train: list[float] = []
        self._validation: list[float] = []

    def step(self, loss: float) -> None:
        self._train.append(loss)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        if self.widget is not None and time.monotonic() - self._last_draw >= self.interval:
            self._draw()

    def epoch(self, validation_loss: float | None) -> None:
        if validation_loss is not None:
            self._validation.append(validation_loss)
            self.bar.set_postfix(val_loss=f"{validation_loss:.4f}", refresh=False)
        if self.widget is not None:
            self._draw()

    def close(self) -> None:
        self.bar.close()
        if self.widget is not None:
            self._draw()

    def _draw(self) -> None:
        train, validation = self.widget.data[0], self.widget.data[1]
        with self.widget.batch_update():
            train.x = list(range(1, len(self._train) + 1))
            train.y = list(self._train)
            validation.x = [self.steps_per_epoch * (i + 1) for i in range(len(self._validation))]
            validation.y = list(self._validation)
        self._last_draw = time.monotonic()


def _figure_widget(steps_per_epoch: int) -> Any:
    try:
        import ipywidgets  # noqa: F401  (FigureWidget needs it)
        import plotly.graph_objects as go
    except ImportError:
        return None
    from gemma_lab.figures.loss import loss_figure
    from gemma_lab.ipython_display import show

    try:
        widget = go.FigureWidget(loss_figure([], [], steps_per_epoch))
    except ImportError:
        return None  # plotly ≥ 6 needs anywidget for FigureWidget; the progress bar remains
    show(widget)
    return widget
