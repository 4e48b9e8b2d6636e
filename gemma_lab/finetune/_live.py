"""Live feedback while training: a step progress bar and a loss curve redrawn in place.

In a Jupyter kernel both are plain outputs (a `ProgressDisplay` and a plotly figure output
updated through its display id), not widgets, so a saved notebook shows them as the run ended,
with or without a kernel; in a terminal the bar is tqdm's text bar and there is no figure.
"""

from __future__ import annotations

import time
from typing import Any

from gemma_lab.ipython_display import FigureOutput, in_kernel, progress


class LiveFeedback:
    """Progress bar (always, unless disabled) and optional live loss figure.

    `figure`: None shows the live curve inside a Jupyter kernel (with the progress bar); True
    always, False never; or an object to draw into: a sink with `update(figure)` (each redraw)
    and `show(figure)` (the final one), e.g. a widget's figure slot, or a plotly FigureWidget.
    Redraws are throttled to one per `interval` seconds; `close()` draws the final state.

    Example:
        >>> feedback = LiveFeedback(2, 2, progress=False, figure=False)
        >>> feedback.step(2.5); feedback.step(2.0); feedback.epoch(2.2); feedback.close()
        >>> feedback.figure().data[0].y, feedback.figure().data[1].y
        ((2.5, 2.0), (2.2,))
    """

    def __init__(self, total_steps: int, steps_per_epoch: int, *, progress: bool,
                 figure: Any, interval: float = 0.5):
        self.steps_per_epoch = steps_per_epoch
        self.interval = interval
        self.bar = _progress(total_steps, progress)
        self.widget: Any = None  # what the curve is drawn into
        if hasattr(figure, "batch_update") or (hasattr(figure, "update")
                                               and hasattr(figure, "show")):
            self.widget = figure
        elif figure is True or (figure is None and progress and in_kernel()):
            self.widget = _figure_widget(steps_per_epoch)
        self._last_draw = 0.0
        self._train: list[float] = []
        self._validation: list[float] = []

    def step(self, loss: float) -> None:
        self._train.append(loss)
        self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        self.bar.update(1)
        if self.widget is not None and time.monotonic() - self._last_draw >= self.interval:
            self._draw()

    def epoch(self, validation_loss: float | None) -> None:
        if validation_loss is not None:
            self._validation.append(validation_loss)
            self.bar.set_postfix(loss=f"{self._train[-1]:.4f}" if self._train else "n/a",
                                 val_loss=f"{validation_loss:.4f}", refresh=False)
        if self.widget is not None:
            self._draw()

    def close(self) -> None:
        self.bar.close()
        if self.widget is not None:
            self._draw(final=True)

    def figure(self) -> Any:
        """The loss figure of the steps so far."""
        from gemma_lab.figures.loss import loss_figure

        return loss_figure(self._train, self._validation, self.steps_per_epoch)

    def _draw(self, final: bool = False) -> None:
        figure = self.figure()
        if hasattr(self.widget, "batch_update"):  # a plotly FigureWidget: its traces in place
            with self.widget.batch_update():
                for target, source in zip(self.widget.data, figure.data, strict=False):
                    target.x, target.y = source.x, source.y
        elif final:
            self.widget.show(figure)
        else:
            self.widget.update(figure)
        self._last_draw = time.monotonic()


def _progress(total_steps: int, shown: bool) -> Any:
    return progress(total_steps, desc="Fine-tuning", unit="step", disable=not shown)


def _figure_widget(steps_per_epoch: int) -> Any:
    """What a notebook run draws its curve into: one plain output, redrawn in place."""
    return FigureOutput()
