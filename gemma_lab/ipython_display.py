"""The one place gemma_lab calls IPython's display machinery: results, Markdown, the live
output a streaming generation updates in place, progress bars and figures that are plain
outputs (a saved notebook keeps them; a widget's would need its kernel), and raw MIME bundles
(the widgets' static snapshots)."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from typing import Any

from IPython.display import Markdown, display, update_display

# Shown after the streamed text while tokens are still arriving.
_CURSOR = "▌"


def show(obj: Any) -> None:
    """Display `obj` with its richest representation (results bring `_repr_mimebundle_`)."""
    display(obj)


def as_markdown(text: str) -> Markdown:
    """`text` as a displayable that renders as Markdown (for `show` or `LiveOutput.finish`)."""
    return Markdown(text)


class _PlainText:
    """Text shown verbatim (text/plain only, so nothing in it is interpreted as HTML)."""

    def __init__(self, text: str):
        self.text = text

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": self.text}

    def __repr__(self) -> str:
        return self.text


class LiveOutput:
    """An output area that grows as tokens are decoded, then is replaced by the final result.

    Updates are throttled to one per `interval` seconds so a fast model does not flood the
    frontend; `finish()` always shows the final state.

    Example:
        >>> live = LiveOutput(interval=0.1)   # doctest: +SKIP
        >>> live.append("Hello"); live.append(" world")   # doctest: +SKIP
        >>> live.finish(generation)   # doctest: +SKIP
    """

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.text = ""
        self.updates = 0
        self._handle: Any = None
        self._last_update = 0.0

    def start(self) -> None:
        """Open the output area (empty cursor) that later updates replace."""
        self._handle = display(_PlainText(_CURSOR), display_id=True)
        self._last_update = time.monotonic()

    def append(self, text: str) -> None:
        """Add decoded text; the output area is refreshed at most once per interval."""
        self.text += text
        now = time.monotonic()
        if now - self._last_update >= self.interval:
            self._update(_PlainText(self.text + _CURSOR))
            self._last_update = now

    def finish(self, obj: Any = None) -> None:
        """Replace the streamed text with `obj` (the result), or with the plain text so far."""
        self._update(obj if obj is not None else _PlainText(self.text))

    def _update(self, obj: Any) -> None:
        if self._handle is None:
            self.start()
        self._handle.update(obj)
        self.updates += 1


PLOTLY_MIME = "application/vnd.plotly.v1+json"
# No plotly logo; the figure follows its output's width.
_PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


def figure_bundle(figure: Any) -> dict[str, Any]:
    """A plotly figure as a MIME bundle: plotly's own JSON (arrays as lists), drawn by the
    jupyterlab-plotly renderer, and a one-line text. Nothing else: no image export, no
    embedded plotly.js.

    Example:
        >>> import plotly.graph_objects as go
        >>> bundle = figure_bundle(go.Figure(go.Bar(y=[1, 2]), layout={"title": "t"}))
        >>> bundle["application/vnd.plotly.v1+json"]["data"][0]["y"], bundle["text/plain"]
        ([1, 2], 'Figure: t (1 trace)')
    """
    import json

    import plotly.io as pio

    spec = json.loads(pio.to_json(figure, validate=False))
    spec["config"] = dict(_PLOTLY_CONFIG)
    title = figure.layout.title.text or "plotly figure"
    traces = len(figure.data)
    text = f"Figure: {title} ({traces} trace{'' if traces == 1 else 's'})"
    return {PLOTLY_MIME: spec, "text/plain": text}


def show_bundle(bundle: Mapping[str, Any], display_id: str | None = None) -> None:
    """Display a raw MIME bundle (`{mime: data}`), as an output `update_bundle` can replace
    when `display_id` is given."""
    display(dict(bundle), raw=True, display_id=display_id)


def update_bundle(bundle: Mapping[str, Any], display_id: str) -> None:
    """Replace every output shown with `display_id` by `bundle`."""
    update_display(dict(bundle), raw=True, display_id=display_id)


class FigureOutput:
    """One notebook output that shows the latest plotly figure given to `update` (plotly's
    MIME type, see `figure_bundle`), opened on the first update and replaced in place after.

    Example:
        >>> out = FigureOutput()   # doctest: +SKIP
        >>> out.update(figure); out.update(new_figure)   # doctest: +SKIP
    """

    def __init__(self) -> None:
        import uuid

        self._display_id = f"gemma-lab-figure-{uuid.uuid4().hex}"
        self._shown = False

    def update(self, figure: Any) -> None:
        if self._shown:
            update_bundle(figure_bundle(figure), self._display_id)
        else:
            show_bundle(figure_bundle(figure), self._display_id)
            self._shown = True

    show = update  # the final draw is one more update (what LiveFeedback calls at the end)


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


class ProgressDisplay:
    """A progress bar that is a plain output (an HTML `<progress>` and a text line) updated in
    place, not a widget: a saved notebook shows it as it ended, with or without a kernel.

    The subset of tqdm's interface gemma_lab uses: `update(n)`, `set_postfix(**values)`,
    `close()`, `n`, `total`. Redraws are throttled to one per `interval` seconds; the finished
    line leaves out timings, so re-running a notebook gives the same output.

    Example:
        >>> bar = ProgressDisplay(3, desc="Fine-tuning", unit="step", disable=True)
        >>> bar.update(2); bar.set_postfix(loss="1.5000"); bar.close(); bar.text()
        'Fine-tuning:  67% 2/3 steps, loss=1.5000'
        >>> bar = ProgressDisplay(1, desc="Loading", disable=True); bar.update(1); bar.close()
        >>> bar.text()
        'Loading: 100% 1/1 it'
    """

    def __init__(self, total: int | None, desc: str = "", unit: str = "it",
                 disable: bool = False, interval: float = 0.2):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = 0
        self.postfix = ""
        self.interval = interval
        self.disable = disable
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._closed = False
        self._display_id: str | None = None
        if not disable:
            import uuid

            self._display_id = f"gemma-lab-progress-{uuid.uuid4().hex}"
            show_bundle(self._bundle(), self._display_id)

    def update(self, n: int = 1) -> None:
        self.n += n
        self._draw()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())
        if refresh:
            self._draw()

    def close(self) -> None:
        """Draw the final state (a run stopped early shows where it stopped)."""
        if not self._closed:
            self._closed = True
            self._draw(force=True)

    def text(self) -> str:
        """The line shown (with timings only while running)."""
        total, done = self.total, self.n
        units = self.unit if (total or done) == 1 else f"{self.unit}s"
        count = f"{done}/{total} {units}" if total else f"{done} {units}"
        share = f"{100 * done / total:3.0f}% " if total else ""
        line = f"{self.desc}: {share}{count}" if self.desc else f"{share}{count}"
        if not self._closed:
            elapsed = time.monotonic() - self._started
            eta = (f"<{_clock(elapsed / done * (total - done))}"
                   if total and 0 < done < total else "")
            line += f" [{_clock(elapsed)}{eta}]"
        return line + (f", {self.postfix}" if self.postfix else "")

    def _bundle(self) -> dict[str, str]:
        text = self.text()
        value = "" if not self.total else (f' value="{min(self.n, self.total)}" '
                                           f'max="{self.total}"')
        markup = (f'<div class="gemma-lab-progress" style="display:flex;align-items:center;'
                  f'gap:8px;font-family:var(--jp-code-font-family,monospace);font-size:12px">'
                  f'<progress{value} style="width:240px;height:12px"></progress>'
                  f'<span>{html.escape(text)}</span></div>')
        return {"text/html": markup, "text/plain": text}

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._display_id is None or (not force and now - self._last_draw < self.interval):
            return
        self._last_draw = now
        update_bundle(self._bundle(), self._display_id)

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def in_kernel() -> bool:
    """Whether this runs inside a Jupyter kernel (where outputs are shown, not printed)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def progress(total: int | None, desc: str = "", unit: str = "it", disable: bool = False
             ) -> Any:
    """A manual progress bar (`update`, `set_postfix`, `close`): a `ProgressDisplay` in a
    Jupyter kernel, tqdm's text bar elsewhere.

    Example:
        >>> bar = progress(2, desc="work", disable=True); bar.update(2); bar.close()
    """
    if in_kernel():
        return ProgressDisplay(total, desc=desc, unit=unit, disable=disable)
    from tqdm.std import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=disable)


__all__ = ["PLOTLY_MIME", "FigureOutput", "LiveOutput", "ProgressDisplay", "as_markdown",
           "figure_bundle", "in_kernel", "progress", "show", "show_bundle", "update_bundle"]
