"""A clickable strip of tokens coloured by probability (an anywidget; text reaches the DOM
only as textContent / title, never as HTML)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anywidget
import traitlets

from gemma_lab.token_stats import TokenStats

_ESM = r"""
function colour(token) {
  if (token.colour) { return token.colour; }
  if (token.prob === null || token.prob === undefined) { return "#e8e8e8"; }
  const p = Math.max(0, Math.min(1, token.prob));
  return `hsl(${Math.round(120 * p)}, 75%, 82%)`;
}
function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "gemma-lab-token-strip";
  root.style.cssText = "font-family: monospace; white-space: pre-wrap; line-height: 1.8;"
    + "padding: 4px; border: 1px solid #ddd; min-height: 1.8em;";
  el.appendChild(root);
  const draw = () => {
    root.replaceChildren();
    const selected = model.get("selected");
    model.get("tokens").forEach((token, index) => {
      const span = document.createElement("span");
      span.className = "gemma-lab-token gemma-lab-token-" + token.role;
      span.dataset.index = String(index);
      span.textContent = token.text === "" ? "\u2205" : token.text;
      span.title = token.title || "";
      span.style.background = colour(token);
      span.style.cursor = token.role === "prompt" ? "default" : "pointer";
      span.style.borderRadius = "3px";
      // a hairline between tokens, so neighbours of one colour stay two tokens
      span.style.boxShadow = "inset -1px 0 0 rgba(0, 0, 0, 0.18)";
      if (token.prob !== null && token.prob !== undefined) {
        span.dataset.prob = token.prob.toFixed(4);
      }
      if (index === selected) {
        span.style.outline = "2px solid #1f5fbf";
        span.classList.add("gemma-lab-token-selected");
      }
      if (token.role !== "prompt") {
        span.addEventListener("click", () => {
          model.set("selected", index);
          model.save_changes();
        });
      }
      root.appendChild(span);
    });
  };
  model.on("change:tokens", draw);
  model.on("change:selected", draw);
  draw();
}
export default { render };
"""


class TokenStrip(anywidget.AnyWidget):
    """Tokens as coloured spans (green: likely, red: unlikely, grey: prompt / no probability);
    clicking a non-prompt token sets `selected` to its index.

    Example:
        >>> strip = TokenStrip()
        >>> strip.tokens = [token_entry("Hi", prob=None, role="prompt")]
        >>> strip.selected
        -1
    """

    _esm = _ESM
    tokens = traitlets.List(traitlets.Dict()).tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)


def token_entry(text: str, prob: float | None, role: str, title: str = "",
                colour: str | None = None) -> dict[str, Any]:
    """One token of a `TokenStrip`: its text, probability (None: uncoloured), role, tooltip,
    and an explicit CSS colour that overrides the probability colour."""
    entry = {"text": text, "prob": None if prob is None else float(prob), "role": role,
             "title": title}
    if colour is not None:
        entry["colour"] = colour
    return entry


def step_entry(step: TokenStats, role: str = "generated") -> dict[str, Any]:
    """The strip entry of a decoded token, its tooltip listing the top-k alternatives."""
    lines = [f"p {step.prob:.4f}  rank {step.rank}"]
    lines += [f"{piece!r}  {prob:.4f}" for piece, prob in step.top_k]
    return token_entry(step.text or step.piece, step.prob, role, "\n".join(lines))


def prompt_entries(texts: Sequence[str]) -> list[dict[str, Any]]:
    """Strip entries of prompt tokens (no probability); the empty <bos> is left out."""
    return [token_entry(text, None, "prompt") for text in texts if text]


__all__ = ["TokenStrip", "prompt_entries", "step_entry", "token_entry"]
