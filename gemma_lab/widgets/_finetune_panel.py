"""The Fine-tune panel: data preview, hyper-parameters, Start / Stop, live loss curve and
progress, before/after comparison on held-out examples, and saving the adapter."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from gemma_lab._markup import Html, join, tag
from gemma_lab.backend import import_keras
from gemma_lab.defaults import FINETUNE
from gemma_lab.errors import GemmaLabError, InputError
from gemma_lab.finetune import Example, load_examples
from gemma_lab.finetune.lora import lora_rank
from gemma_lab.widgets import _static
from gemma_lab.widgets._background import BackgroundJob
from gemma_lab.widgets._controls import natural_labels, status_text
from gemma_lab.widgets._figure_widget import FigureSlot
from gemma_lab.widgets._snapshot import LIVE_CLASS, Snapshot, SnapshotDisplay, status_line

if TYPE_CHECKING:
    from gemma_lab.finetune import FinetuneResult, FinetuneRun
    from gemma_lab.session import GemmaLab

PREVIEW_ROWS = 5
COMPARISON_ROWS = 20
_CELL_CHARS = 120


class FinetunePanel(SnapshotDisplay, w.VBox):
    """LoRA fine-tune `lab` from a panel (`FinetuneRun` on a background thread).

    Data comes from `data=` (anything `lab.finetune` accepts) or the data box: a .jsonl /
    .csv path or the name of a notebook variable. Stop ends training at the next step
    boundary; "if stopped" (read when Stop is pressed) keeps or discards the partial adapter.
    A saved notebook keeps the last state (`snapshot`: status, data preview, loss curve and
    before/after table) as static HTML.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> panel = FinetunePanel(tiny_session(), data=["hello world"] * 8, held_out=0.25)
        >>> panel.batch_size.value = 2
        >>> panel.start_button.click(); panel.wait()
        >>> panel.result.steps, panel.progress.value
        (3, 3)
    """

    def __init__(self, lab: GemmaLab, data: Any = None, held_out: float = 0.2):
        self.lab = lab
        self.examples: list[Example] = []
        self.run: FinetuneRun | None = None
        self.result: FinetuneResult | None = None
        self._job = BackgroundJob(self._set_busy, self._show_error)
        self._origin = "the base model"  # what the last run started from, in words
        self.snapshot = Snapshot("Fine-tune panel")

        self.data_source = w.Text(placeholder="path to .jsonl / .csv, or a notebook variable",
                                  description="data", layout=w.Layout(width="70%"))
        self.load_button = w.Button(description="Load data", icon="table")
        self.preview = w.HTML()
        self.rank = w.BoundedIntText(value=FINETUNE["rank"], min=1, max=1024,
                                     description="rank")
        self.epochs = w.BoundedIntText(value=FINETUNE["epochs"], min=1, max=10_000,
                                       description="epochs")
        self.learning_rate = w.BoundedFloatText(value=FINETUNE["learning_rate"], min=1e-8,
                                                max=1.0, step=1e-4, description="learning rate")
        self.batch_size = w.BoundedIntText(value=FINETUNE["batch_size"], min=1, max=4096,
                                           description="batch size")
        self.max_length = w.BoundedIntText(value=FINETUNE["max_length"], min=4,
                                           max=lab.context_length, description="max length")
        self.held_out = w.BoundedFloatText(value=held_out, min=0.0, max=0.9, step=0.05,
                                           description="held out",
                                           tooltip="fraction kept for validation and the "
                                                   "before/after comparison (0: none)")
        self.on_stop = w.ToggleButtons(options=[("keep partial adapter", True),
                                                ("discard partial adapter", False)],
                                       description="if stopped")
        self.start_from = w.ToggleButtons(options=[("base model", "base"),
                                                   ("adapter in use", "adapter")],
                                          description="start from",
                                          tooltip="base model: a fresh adapter (the one in "
                                                  "use must be saved first); adapter in use: "
                                                  "continue training it")
        self.start_button = w.Button(description="Start", button_style="primary", icon="play")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop",
                                    disabled=True)
        self.progress = w.IntProgress(value=0, min=0, max=1, description="steps")
        self.status = status_text(f"Model: {lab.model_id} ({lab.backend})")
        # Plain plotly outputs in Output widgets (a reloaded page redraws the data), hidden
        # until there is something to draw.
        self.loss = FigureSlot()
        self.comparison = FigureSlot()
        self.comparison_table = w.HTML()
        self.adapter_name = w.Text(placeholder="adapter name", description="adapter")
        self.save_button = w.Button(description="Save adapter", icon="save", disabled=True)
        natural_labels(self.data_source, self.rank, self.epochs, self.learning_rate,
                       self.batch_size, self.max_length, self.held_out, self.on_stop,
                       self.start_from, self.progress, self.adapter_name)

        self.load_button.on_click(lambda _: self._load_from_box())
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.save_button.on_click(lambda _: self.save())

        hyper = w.HBox([self.rank, self.epochs, self.learning_rate, self.batch_size,
                        self.max_length, self.held_out], layout=w.Layout(flex_flow="row wrap"))
        super().__init__([
            w.HBox([self.data_source, self.load_button]), self.preview, hyper,
            w.HBox([self.start_from, self.on_stop], layout=w.Layout(flex_flow="row wrap")),
            w.HBox([self.start_button, self.stop_button, self.progress]), self.status,
            self.loss, self.comparison, self.comparison_table,
            w.HBox([self.adapter_name, self.save_button]),
        ])
        self.add_class("gemma-lab-finetune-panel")
        self.add_class(LIVE_CLASS)
        if data is not None:
            self.set_data(data)
        self._fix_rank()
        self._save_snapshot()

    @property
    def busy(self) -> bool:
        return self._job.busy

    @property
    def error(self) -> BaseException | None:
        return self._job.error

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running fine-tuning has finished (for scripts and tests)."""
        self._job.wait(timeout)

    # --- data --------------------------------------------------------------------------
    def set_data(self, data: Any) -> list[Example]:
        """Use `data` (any form `lab.finetune` accepts) and preview its first rows."""
        self.examples = load_examples(data)
        self.preview.value = _preview_html(self.examples)
        self._save_snapshot()
        return self.examples

    def _load_from_box(self) -> None:
        try:
            self.set_data(_resolve(self.data_source.value.strip()))
        except GemmaLabError as error:
            self._show_error(str(error))

    # --- training ----------------------------------------------------------------------
    def start(self) -> bool:
        """Start fine-tuning on a background thread; False if it cannot start (busy, no
        data, bad hyper-parameters: the reason is in `status`)."""
        if self.busy:
            return False
        try:
            run = self._make_run()
            origin = self._set_start()
        except GemmaLabError as error:
            self._show_error(str(error))
            return False
        self.run, self.result = run, None
        total = run.epochs * run.steps_per_epoch
        self.progress.max, self.progress.value = total, 0
        self.loss.clear()
        self.comparison.clear()
        self.comparison_table.value = ""
        self.status.text = f"Training from {origin}: 0/{total} steps…"
        self._origin = origin
        self._save_snapshot()
        return self._job.start(lambda: self._train(run))

    def _set_start(self) -> str:
        """Put the model where "start from" says; what training starts from, in words."""
        name = self.lab.adapter_name
        if self.start_from.value == "adapter" or name is None:
            return "the base model" if name is None else f"adapter {name!r}"
        if name.startswith("unsaved-"):
            raise InputError(f"The adapter in use ({name}) is not saved, and starting from "
                             "the base model would drop it: save it first (adapter name, "
                             "Save adapter), or choose start from: adapter in use.")
        self.lab.adapters.unload()  # saved: lab.adapters.load(name) brings it back
        return f"the base model (adapter {name!r} set aside, still saved)"

    def _fix_rank(self) -> None:
        """Once LoRA is on, its rank is fixed for the session (keras-hub cannot re-rank)."""
        rank = lora_rank(self.lab.backbone)
        if rank is not None:
            self.rank.value, self.rank.disabled = rank, True
            self.rank.tooltip = (f"LoRA is enabled with rank {rank} on this session's model; "
                                 "a different rank needs a fresh gemma_lab.load()")

    def stop(self) -> None:
        """End training at the next step boundary, keeping or discarding the partial adapter
        as "if stopped" says now."""
        if self.run is not None and self.busy:
            self.run.keep_partial = self.on_stop.value
            self.run.stop()
            self.status.text = "Stopping after this step…"

    def save(self) -> Path | None:
        """Save the session's adapter under the name in the adapter box."""
        try:
            path = self.lab.adapters.save(self.adapter_name.value.strip())
        except GemmaLabError as error:
            self._show_error(str(error))
            return None
        self.status.text = f"Saved adapter {self.adapter_name.value.strip()!r} to {path}"
        self._save_snapshot()
        return path

    def _make_run(self) -> FinetuneRun:
        if not self.examples:
            raise InputError("Load data first: a .jsonl / .csv path or a notebook variable "
                             "in the data box, or FinetunePanel(lab, data=...).")
        keras = import_keras()
        held_out = self.held_out.value
        return self.lab.finetune_run(
            self.examples, rank=self.rank.value, epochs=self.epochs.value,
            learning_rate=self.learning_rate.value, batch_size=self.batch_size.value,
            max_length=self.max_length.value, validation=held_out if held_out > 0 else None,
            callbacks=[_step_counter(keras, self._on_step)], progress=False,
            keep_partial=self.on_stop.value, live_figure=self.loss,
        )

    def _train(self, run: FinetuneRun) -> None:
        try:
            result = run.run()
        finally:
            self._fix_rank()
        self.result = result
        self.status.text = f"{result} (from {self._origin})"
        if result.comparison is not None:
            self.comparison.show(result.comparison.figure())
            self.comparison_table.value = _comparison_html(result.comparison.rows())
        self._save_snapshot()

    def _on_step(self) -> None:
        self.progress.value += 1
        # (the saved view is redrawn when the run ends, not at every step)
        self.status.text = (f"Training from {self._origin}: {self.progress.value}/"
                            f"{self.progress.max} steps…")

    def _set_busy(self, busy: bool) -> None:
        self.start_button.disabled = busy
        self.load_button.disabled = busy
        self.stop_button.disabled = not busy
        self.save_button.disabled = busy or self.lab.adapters.active is None

    def _show_error(self, message: str) -> None:
        self.status.text = message
        self._save_snapshot()

    def _save_snapshot(self) -> None:
        """Redraw the saved view: status, data preview, loss curve, before / after."""
        parts = [status_line(self.status.text)]
        if self.preview.value:
            parts.append(Html(self.preview.value))  # _preview_html: every cell escaped
        result, summary = self.result, "not trained yet"
        if result is not None:
            per_epoch = max(result.steps_per_epoch, 1)
            series = {"train": (list(range(1, len(result.train_loss) + 1)),
                                [float(v) for v in result.train_loss])}
            if result.validation_loss:
                series["validation"] = (
                    [per_epoch * (epoch + 1) for epoch in range(len(result.validation_loss))],
                    [float(v) for v in result.validation_loss])
            parts.append(_static.lines(series, "Fine-tuning loss", "step",
                                       "cross-entropy (nats per response token)"))
            if result.comparison is not None:
                parts.append(_before_after_svg(result.comparison))
                parts.append(Html(self.comparison_table.value))  # escaped cells
            summary = f"{result.steps}/{result.total_steps} steps, {result.stop_reason}"
        self.snapshot.update(parts, summary)


def _before_after_svg(comparison: Any) -> Html:
    """Per held-out example, mean reference-token probability before and after."""
    pictures = []
    for name, rows, colour in (("before", comparison.before, "#9fb4d0"),
                               ("after", comparison.after, "#4c78a8")):
        labels = [str(index) for index in range(len(rows))]
        values = [float(sum(row.probs) / max(len(row.probs), 1)) for row in rows]
        pictures.append(_static.bars(values, labels, f"Reference response probability, {name}",
                                     colours=[colour] * len(values), top=1.0, width=360,
                                     height=110))
    return tag("div", join(pictures), style="display:flex;flex-wrap:wrap;gap:16px")


def _step_counter(keras: Any, on_step: Any) -> Any:
    class StepCounter(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            on_step()

    return StepCounter()


def _resolve(source: str) -> Any:
    """A notebook variable of that name, else the path."""
    if not source:
        raise InputError("The data box is empty: give a .jsonl / .csv path or the name of a "
                         "notebook variable holding the examples.")
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None and source.isidentifier() and source in shell.user_ns:
        return shell.user_ns[source]
    if not Path(source).expanduser().is_file():
        raise InputError(f"{source!r} is neither a notebook variable nor a file; give a "
                         ".jsonl / .csv path or a variable holding the examples.")
    return str(Path(source).expanduser())


def _cell(text: str) -> str:
    text = text if len(text) <= _CELL_CHARS else text[:_CELL_CHARS - 1] + "…"
    return f"<td style='text-align:left'>{html.escape(text)}</td>"


def _preview_html(examples: list[Example]) -> str:
    rows = "".join(f"<tr><td>{i}</td>{_cell(e.prompt)}{_cell(e.response)}</tr>"
                   for i, e in enumerate(examples[:PREVIEW_ROWS]))
    return (f"<div class='gemma-lab-data-preview'><b>{len(examples)} examples</b>"
            f" (first {min(len(examples), PREVIEW_ROWS)} shown)<table>"
            f"<tr><th>#</th><th>prompt</th><th>response</th></tr>{rows}</table></div>")


def _comparison_html(rows: list[dict[str, Any]]) -> str:
    body = "".join(
        f"<tr><td>{row['example']}</td>{_cell(repr(row['token']))}"
        f"<td>{row['prob_before']:.4f}</td><td>{row['prob_after']:.4f}</td>"
        f"<td>{row['change']:+.4f}</td></tr>" for row in rows[:COMPARISON_ROWS])
    return ("<table class='gemma-lab-comparison'><tr><th>example</th><th>token</th>"
            f"<th>p before</th><th>p after</th><th>change</th></tr>{body}</table>")


def finetune_panel(lab: GemmaLab, **options: Any) -> FinetunePanel:
    """Open the Fine-tune panel on `lab` (what `%gemma finetune-panel` shows).

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> finetune_panel(tiny_session()).start_button.description
        'Start'
    """
    return FinetunePanel(lab, **options)


__all__ = ["FinetunePanel", "finetune_panel"]
