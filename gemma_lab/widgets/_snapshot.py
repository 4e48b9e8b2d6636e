"""A widget's saved snapshot: a plain HTML output shown right after the widget and redrawn
whenever the widget's state changes (a run finished, another layer picked).

A widget output needs its kernel: once the kernel is gone, JupyterLab shows "Error displaying
widget: model not found" for it. The snapshot is an ordinary output (text/html, no script), so
a saved notebook keeps it and every viewer shows it (JupyterLab, classic Notebook, VS Code,
nbviewer, GitHub). Two CSS rules travel inside it (trusted outputs keep them; JupyterLab trusts
the notebooks it saved itself): while the live widget is shown its snapshot stays hidden, and
once the widget cannot be shown any more the snapshot replaces its error line.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from gemma_lab._markup import Html, join, tag

LIVE_CLASS = "gemma-lab-widget"  # on every live widget's root box
SNAPSHOT_CLASS = "gemma-lab-snapshot"
_WIDGET_OUTPUT = ('.jp-OutputArea-output[data-mime-type='
                  '"application/vnd.jupyter.widget-view+json"]')
_CHILD = ".jp-OutputArea-child"
STYLE = Html(
    # The live widget is on the page: its snapshot (in a later output of the cell) hides.
    f"{_CHILD}:has(.{LIVE_CLASS}) ~ {_CHILD}:has(.{SNAPSHOT_CLASS}) {{ display: none; }}\n"
    # A widget output without a live gemma_lab widget in it (still loading, or its model is
    # gone with the kernel: "Error displaying widget") gives way to the snapshot after it.
    # (`:has()` cannot nest inside `:has()`: browsers drop such a rule.)
    f"{_CHILD}:has(> {_WIDGET_OUTPUT}):not(:has(.{LIVE_CLASS}))"
    f":has(~ {_CHILD} .{SNAPSHOT_CLASS}) {{ display: none; }}\n"
    f".{SNAPSHOT_CLASS} {{ font-family: var(--jp-ui-font-family, system-ui, sans-serif); "
    "font-size: 12px; border-left: 3px solid #9fb4d0; padding: 2px 8px; }\n"
    f".{SNAPSHOT_CLASS} table {{ border-collapse: collapse; font-size: 11px; }}\n"
    f".{SNAPSHOT_CLASS} td, .{SNAPSHOT_CLASS} th {{ padding: 1px 6px; text-align: left; }}\n"
)


class Snapshot:
    """The static copy of one widget: `show()` displays it (after the widget), `update()`
    redraws it in place; before `show()` updates are only kept (`html`, `text`).

    Example:
        >>> snapshot = Snapshot("Playground")
        >>> snapshot.update([tag("p", "3 tokens")], "3 tokens")
        >>> "3 tokens" in snapshot.html and snapshot.text
        'Playground (saved view): 3 tokens'
    """

    def __init__(self, title: str):
        self.title = title
        self.display_id = f"gemma-lab-snapshot-{uuid.uuid4().hex}"
        self.body: list[Html] = []
        self.summary = ""
        self._shown = False
        self._lock = threading.Lock()  # updates come from the widget's thread and the kernel's

    @property
    def text(self) -> str:
        return f"{self.title} (saved view)" + (f": {self.summary}" if self.summary else "")

    @property
    def html(self) -> str:
        note = tag("div", f"{self.title}: the view saved with the notebook (static); run the "
                          "cell again for the live widget.",
                   class_="gemma-lab-snapshot-note", style="color:#666;font-size:11px")
        return tag("div", tag("style", STYLE), note, join(self.body), class_=SNAPSHOT_CLASS,
                   data_widget=self.title)

    def bundle(self) -> dict[str, str]:
        return {"text/html": self.html, "text/plain": self.text}

    def show(self) -> None:
        """Display the snapshot as an output of the running cell."""
        from gemma_lab.ipython_display import show_bundle

        with self._lock:
            show_bundle(self.bundle(), self.display_id)
            self._shown = True

    def update(self, body: list[Html], summary: str = "") -> None:
        """Replace the snapshot's content (and every output showing it)."""
        from gemma_lab.ipython_display import update_bundle

        with self._lock:
            self.body, self.summary = list(body), summary
            if self._shown:
                update_bundle(self.bundle(), self.display_id)


class SnapshotDisplay:
    """Mixed into a widget (an ipywidgets box with a `snapshot`): displaying it shows the
    widget, then its snapshot."""

    snapshot: Snapshot

    def _ipython_display_(self) -> None:
        from gemma_lab.ipython_display import show_bundle

        bundle: Any = self._repr_mimebundle_()  # ipywidgets' widget-view bundle
        show_bundle(bundle)
        self.snapshot.show()


def status_line(text: str) -> Html:
    return tag("div", text, class_="gemma-lab-snapshot-status", style="margin:2px 0")


__all__ = ["LIVE_CLASS", "SNAPSHOT_CLASS", "Snapshot", "SnapshotDisplay", "status_line"]
