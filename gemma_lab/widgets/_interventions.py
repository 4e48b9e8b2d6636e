"""The Interventions panel: switch attention heads off and steer with a vector, and watch each
token's log-probability of a text change against the unmodified model.

Every change (a head toggled, the steering slider released, a new layer) re-scores the text
once through `lab.compare(text, hooks=...)` on a background thread; changes made while it
runs are picked up when it ends, so the strip always shows the latest settings.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import ipywidgets as w
import numpy as np

from gemma_lab import interventions as iv
from gemma_lab.render_grids import diverging_colour
from gemma_lab.widgets._background import BackgroundJob
from gemma_lab.widgets._token_strip import TokenStrip, token_entry

if TYPE_CHECKING:
    from gemma_lab.comparison import Comparison
    from gemma_lab.interventions import HookSet
    from gemma_lab.session import GemmaLab


class InterventionsPanel(w.VBox):
    """Toggle heads off (zero ablation) and steer (`vector` added to resid_post of a layer,
    times a scale), and see per-token Δ log p of `text` against the plain model.

    Example:
        >>> import numpy as np
        >>> from gemma_lab.testing import tiny_session
        >>> panel = InterventionsPanel(tiny_session(), text="hello world", vector=np.ones(32))
        >>> panel.head_buttons[(0, 1)].value = True; panel.wait()
        >>> panel.comparison.labels, panel.ablated
        (('plain model', 'with interventions'), [(0, 1)])
    """

    def __init__(self, lab: GemmaLab, text: str = "", vector: Any = None, layer: int = 0,
                 scale_range: tuple[float, float] = (-8.0, 8.0)):
        self.lab = lab
        self.comparison: Comparison | None = None
        self._job = BackgroundJob(self._set_busy, self._show_error)
        self._shown: tuple[Any, ...] | None = None
        info = lab.info()
        self.vector = None if vector is None else np.asarray(vector, dtype="float32")

        self.text = w.Textarea(value=text, placeholder="Text to score",
                               layout=w.Layout(width="100%", height="60px"))
        self.score_button = w.Button(description="Score", button_style="primary",
                                     icon="refresh")
        self.status = w.Label(value="Toggle heads off or move the steering slider.")
        self.head_buttons: dict[tuple[int, int], w.ToggleButton] = {}
        rows = []
        for layer_index in range(info.num_layers):
            buttons = []
            for head in range(info.num_query_heads):
                button = w.ToggleButton(value=False, description=f"{head}",
                                        tooltip=f"layer {layer_index} head {head}: off when "
                                                "pressed", layout=w.Layout(width="34px"))
                button.observe(self._on_toggle, names="value")
                self.head_buttons[(layer_index, head)] = button
                buttons.append(button)
            rows.append(w.HBox([w.Label(f"L{layer_index}", layout=w.Layout(width="34px")),
                                *buttons]))
        self.heads_box = w.VBox(rows, layout=w.Layout(max_height="260px", overflow="auto"))
        self.layer = w.Dropdown(options=list(range(info.num_layers)), value=layer,
                                description="steer at")
        self.scale = w.FloatSlider(value=0.0, min=scale_range[0], max=scale_range[1], step=0.5,
                                   description="scale", continuous_update=False)
        steering = [self.layer, self.scale] if self.vector is not None else [
            w.Label("Pass vector=lab.steering_vector(...) to steer.")]
        self.strip = TokenStrip()
        self.legend = w.Label(value="")
        for control in (self.layer, self.scale):
            control.observe(lambda _: self.refresh(), names="value")
        self.score_button.on_click(lambda _: self.refresh(force=True))
        super().__init__([
            self.text, w.HBox([self.score_button, self.status]),
            w.HTML("<b>Heads</b> (pressed = zero-ablated)"), self.heads_box,
            w.HBox(steering), self.strip, self.legend,
        ])
        self.add_class("gemma-lab-interventions")

    def _on_toggle(self, change: Any) -> None:
        change.owner.button_style = "danger" if change.new else ""  # pressed heads stand out
        self.refresh()

    @property
    def ablated(self) -> list[tuple[int, int]]:
        return sorted(key for key, button in self.head_buttons.items() if button.value)

    @property
    def error(self) -> BaseException | None:
        return self._job.error

    def wait(self, timeout: float | None = None) -> None:
        """Block until re-scoring has finished (for scripts and tests)."""
        self._job.wait(timeout)

    def hooks(self) -> HookSet | None:
        """The interventions the controls describe (None: none)."""
        chosen = None
        if self.ablated:
            chosen = iv.ablate_heads(self.ablated)
        if self.vector is not None and self.scale.value != 0.0:
            steer = iv.add(self.vector, layer=self.layer.value, scale=self.scale.value)
            chosen = steer if chosen is None else chosen | steer
        return chosen

    def _settings(self) -> tuple[Any, ...]:
        return (self.text.value, tuple(self.ablated), self.layer.value, self.scale.value)

    def refresh(self, force: bool = False) -> bool:
        """Re-score with the current settings (on a background thread); a running job picks
        up the newest settings when it ends."""
        if force:
            self._shown = None
        return self._job.start(self._rescore)

    def _rescore(self) -> None:
        while self._settings() != self._shown:
            settings = self._settings()
            text = settings[0]
            if not text.strip():
                self.status.value = "Write a text to score."
                self._shown = settings
                return
            hooks = self.hooks()
            self.status.value = "Scoring…"
            if hooks is None:
                score = self.lab.score(text)
                comparison = self.lab.compare(score, score)
            else:
                comparison = self.lab.compare(text, hooks=hooks)
            self.comparison = dataclasses.replace(
                comparison, labels=("plain model", "with interventions"))
            self._draw(self.comparison)
            self._shown = settings

    def _draw(self, comparison: Comparison) -> None:
        diff = comparison.diff
        scale = float(np.max(np.abs(diff))) if len(diff) else 1.0
        self.strip.tokens = [
            token_entry(piece, None, "scored",
                        f"log p {comparison.logprobs_a[i]:.3f} → {comparison.logprobs_b[i]:.3f}"
                        f" (Δ {diff[i]:+.3f})", colour=diverging_colour(float(diff[i]), scale))
            for i, piece in enumerate(comparison.tokens_b)]
        self.status.value = (f"Σ Δ log p = {comparison.total_diff:+.3f} over {len(diff)} "
                             f"tokens · {len(self.ablated)} heads off · steering "
                             f"{self.scale.value:+g} at layer {self.layer.value}")
        self.legend.value = ("blue: likelier with interventions, red: less likely; full colour "
                             f"= |Δ log p| {scale:.3g} · hover a token for both values")

    def _set_busy(self, busy: bool) -> None:
        self.score_button.disabled = busy

    def _show_error(self, message: str) -> None:
        self.status.value = message


def interventions_panel(lab: GemmaLab, **options: Any) -> InterventionsPanel:
    """Open the Interventions panel on `lab` (what `%gemma interventions` shows).

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> interventions_panel(tiny_session()).score_button.description
        'Score'
    """
    return InterventionsPanel(lab, **options)


__all__ = ["InterventionsPanel", "interventions_panel"]
