"""Script-free HTML for the grid-shaped results: an activation-patching heatmap, direct logit
attribution bars with a head table, an activation-cache summary. `render.to_html` calls these
for their kinds; every label and value passes through `_markup` (escaped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gemma_lab._markup import Html, join, tag

PREFIX = "gemma-lab"

STYLE = Html(f"""
.{PREFIX}-grid {{ border-collapse: collapse; font-size: 11px; margin: 4px 0; }}
.{PREFIX}-grid th {{ font-weight: normal; color: #555; padding: 1px 4px; white-space: pre; }}
.{PREFIX}-grid td {{ padding: 1px 4px; min-width: 34px; text-align: right; color: #111; }}
.{PREFIX}-bar {{ display: inline-block; height: 10px; vertical-align: middle; }}
""")


# Signed effects on the target (attribution, logit attribution): blue for (raises it), red
# against — the colours of the plotly bars (figures/attribution.py) and of the labextension
# (colors.ts gainColor).
FOR_RGB = "31,119,180"
AGAINST_RGB = "214,39,40"


def diverging_colour(value: float, scale: float) -> str:
    """Blue for positive, red for negative, alpha by |value| / scale (capped at 1).

    Example:
        >>> diverging_colour(1.0, 1.0), diverging_colour(-0.5, 1.0)
        ('hsla(210,80%,55%,1.000)', 'hsla(0,80%,55%,0.500)')
    """
    hue = 210 if value >= 0 else 0
    return f"hsla({hue},80%,55%,{min(abs(value) / (scale or 1.0), 1.0):.3f})"


def _diverging(value: float | None, scale: float) -> str | None:
    return None if value is None else f"background:{diverging_colour(value, scale)}"


def _sequential(value: float | None, low: float, high: float) -> str | None:
    """Light (low) to dark blue (high), dark cells with white text."""
    if value is None:
        return None
    share = (value - low) / (high - low) if high > low else 0.5
    lightness = 95 - 55 * min(max(share, 0.0), 1.0)
    text = "#fff" if lightness < 60 else "#111"
    return f"background:hsl(220,70%,{lightness:.0f}%);color:{text}"


def heatmap_table(rows: Sequence[str], columns: Sequence[str],
                  values: Sequence[Sequence[float | None]], what: str,
                  diverging: bool = False) -> Html:
    """A table whose cells are coloured by value; each cell's title names row, column, value.

    Example:
        >>> "&lt;b&gt;" in heatmap_table(["L0"], ["<b>"], [[1.0]], "log p")
        True
    """
    numbers = [v for row in values for v in row if v is not None]
    low, high = (min(numbers), max(numbers)) if numbers else (0.0, 1.0)
    scale = max((abs(v) for v in numbers), default=1.0)
    head = tag("tr", tag("th", ""), join(tag("th", column) for column in columns))
    body = []
    for label, row in zip(rows, values, strict=True):
        cells = [tag("td", "" if v is None else f"{v:.2f}",
                     style=_diverging(v, scale) if diverging else _sequential(v, low, high),
                     title=f"{label} · {column}: {what} = {'n/a' if v is None else f'{v:.4f}'}")
                 for column, v in zip(columns, row, strict=True)]
        body.append(tag("tr", tag("th", label), join(cells)))
    return tag("table", head, join(body), class_=f"{PREFIX}-grid")


def patching_html(data: Mapping[str, Any]) -> Html:
    """The patching heatmap with its baselines."""
    patching = data["patching"]
    caption = (f"Patching {patching['over']}: log p({patching['target']!r}) with one "
               f"activation from the clean prompt · clean {_number(patching.get('clean'))} · "
               f"corrupted {_number(patching.get('corrupted'))} · hover a cell for its value")
    prompts = (f"clean: {patching.get('clean_prompt', '')!r} · corrupted: "
               f"{patching.get('corrupted_prompt', '')!r}")
    return join([tag("div", caption, class_=f"{PREFIX}-legend"),
                 tag("div", prompts, class_=f"{PREFIX}-legend"),
                 heatmap_table(patching["rows"], patching["columns"], patching["scores"],
                               "log p(target)")])


def logit_attribution_html(data: Mapping[str, Any]) -> Html:
    """Bars per component (blue raises the target's logit, red lowers it) and a head table."""
    la = data["logit_attribution"]
    values = [v or 0.0 for v in la["values"]]
    scale = max((abs(v) for v in values), default=1.0) or 1.0
    rows = []
    for label, value in zip(la["labels"], values, strict=True):
        width = 120 * abs(value) / scale
        colour = f"rgb({FOR_RGB if value >= 0 else AGAINST_RGB})"
        rows.append(tag("tr", tag("th", label), tag("td", f"{value:+.3f}"),
                        tag("td", tag("span", "", class_=f"{PREFIX}-bar",
                                      style=f"width:{width:.1f}px;background:{colour}"),
                            style="text-align:left")))
    heads = la.get("heads") or []
    columns = [f"H{h}" for h in range(len(heads[0]))] if heads else []
    caption = (f"Direct logit attribution of {la['target']!r} at position "
               f"{la.get('position')} · logit {_number(la.get('logit'))} · "
               f"sum of contributions {_number(la.get('direct_sum'))} · blue bars raise "
               "the logit, red bars lower it")
    parts = [tag("div", caption, class_=f"{PREFIX}-legend"),
             tag("table", join(rows), class_=f"{PREFIX}-grid")]
    if heads:
        parts += [tag("div", "per head (blue raises, red lowers the logit)",
                      class_=f"{PREFIX}-legend"),
                  heatmap_table([f"L{layer}" for layer in range(len(heads))], columns, heads,
                                "logit contribution", diverging=True)]
    return join(parts)


def cache_html(data: Mapping[str, Any]) -> Html:
    """One row per cached point: shape, mean and max |value|."""
    points = data["cache"]["points"]
    rows = [tag("tr", tag("th", p["name"], style="text-align:left"),
                tag("td", "×".join(str(d) for d in p["shape"])),
                tag("td", _number(p.get("mean_abs"))), tag("td", _number(p.get("max_abs"))))
            for p in points]
    head = tag("tr", join(tag("th", h) for h in ("point", "shape", "mean |x|", "max |x|")))
    caption = (f"Activation cache: {len(points)} points over {len(data.get('tokens', []))} "
               "positions (<bos> first); cache[name] is a NumPy array")
    return join([tag("div", caption, class_=f"{PREFIX}-legend"),
                 tag("table", head, join(rows), class_=f"{PREFIX}-grid")])


def classification_html(data: Mapping[str, Any]) -> Html:
    """P(violation) per text (rows) and policy (columns), darker = likelier a violation."""
    result = data["classification"]
    rows = [text if len(text) <= 60 else text[:59] + "…" for text in result["texts"]]
    caption = ("P(violation) under each policy (ShieldGemma's prompt: softmax of the 'Yes' / "
               "'No' logits; meaningful with a shieldgemma model)")
    return join([tag("div", caption, class_=f"{PREFIX}-legend"),
                 heatmap_table(rows, result["policies"], result["probabilities"],
                               "P(violation)")])


def features_html(data: Mapping[str, Any]) -> Html:
    """SAE features: the strongest features (rows) over the tokens (columns), darker =
    stronger, and the reconstruction numbers."""
    features = data["features"]
    tokens = [t.get("piece") or t.get("text", "") for t in data.get("tokens", [])]
    top = features.get("top", [])[:16]
    # <bos> left out: its outsized activations would wash out the text's own tokens.
    columns = [f"{i}:{piece}" for i, piece in enumerate(tokens)][1:]
    values = [[(v if v else None) for v in row["acts"][1:len(columns) + 1]] for row in top]
    caption = (f"SAE features at {features['hook']} ({features['width']:,} features) · "
               f"variance explained {_percent(features.get('variance_explained'))} · "
               f"L0 {_number(features.get('l0'))} · loss added by splicing "
               f"{_number(features.get('loss_added'))} nats · empty cell: inactive · "
               "<bos> not shown")
    parts = [tag("div", caption, class_=f"{PREFIX}-legend")]
    if top:
        parts.append(heatmap_table([f"f{row['feature']}" for row in top], columns, values,
                                   "activation"))
    return join(parts)


def _percent(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4g}"


VIEWS = {"patching": patching_html, "logit_attribution": logit_attribution_html,
         "cache": cache_html, "classification": classification_html,
         "features": features_html}

__all__ = ["STYLE", "VIEWS", "diverging_colour", "heatmap_table"]
