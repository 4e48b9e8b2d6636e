"""Result records → MIME bundles: the versioned JSON payload, a script-free HTML fallback, text.

Every gemma_lab result renders through `mimebundle()`:

- `application/vnd.gemma-lab.v1+json`: `record.to_dict()`, a payload valid against
  `gemma_lab.schema.JSON_SCHEMA` (capped, JSON-safe floats rounded to 6 significant digits);
- `text/html`: built from that same payload with inline styles only (no script, no CDN), every
  model or user string HTML-escaped, so classic Notebook, VS Code and nbviewer show it;
- `text/plain`: the payload's `text`.

render knows no record type: each record builds its own payload with `payload()`, its
tokens with `token_entry` (or `TokenStats.to_dict`) and its arrays as `payload()` extras
(`attention`, `lens`, `attribution`, `loss`):

    def to_dict(self):
        from gemma_lab import render
        tokens = [render.token_entry("prompt", text, token_id) for ...]
        return render.payload("trace", self.text, tokens, self.metadata, attention={...})

    def _repr_mimebundle_(self, include=None, exclude=None):
        from gemma_lab import render
        return render.mimebundle(self, include, exclude)

The HTML fallback colours tokens by `prob` when present, otherwise by `attribution.scores`
(blue for, red against: `ATTRIBUTION_FOR` / `ATTRIBUTION_AGAINST`, the colours of the plotly
bars and the labextension), with a legend for either. Hovering a token with alternatives
shows them in a CSS-only pop-up at the bottom of the result, in room the result reserves
while it is shown, so output areas that clip overflow never hide it. Token labels in the
pop-up use `figures._labels.token_display` (byte tokens, whitespace made visible).

Example:
    >>> from gemma_lab.testing import tiny_session
    >>> g = tiny_session().generate("hello", max_new_tokens=3)
    >>> sorted(mimebundle(g))
    ['application/vnd.gemma-lab.v1+json', 'text/html', 'text/plain']
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gemma_lab import render_grids
from gemma_lab._markup import Html, escape, join, tag
from gemma_lab.figures._labels import token_display
from gemma_lab.schema import MAX_TOKENS, MAX_TOP_K, MIME_TYPE, SCHEMA_VERSION

if TYPE_CHECKING:
    from gemma_lab.tokenizer import Tokenizer

SIGNIFICANT_DIGITS = 6
# Attribution (and every signed effect on the target): blue for, red against — the colours of
# the plotly bars (figures/attribution.py) and of the labextension (colors.ts gainColor).
ATTRIBUTION_FOR_RGB = render_grids.FOR_RGB
ATTRIBUTION_AGAINST_RGB = render_grids.AGAINST_RGB
ATTRIBUTION_FOR = f"rgb({ATTRIBUTION_FOR_RGB})"
ATTRIBUTION_AGAINST = f"rgb({ATTRIBUTION_AGAINST_RGB})"
_EXTRAS = ("prompt", "summary", "attention", "lens", "attribution", "loss", "cache",
           "patching", "logit_attribution", "comparison", "classification", "features")
_CSS_PREFIX = "gemma-lab"


# --- the payload ---------------------------------------------------------------------------
def payload(kind: str, text: str, tokens: Sequence[Mapping[str, Any]],
            metadata: Mapping[str, Any] | None = None, **extras: Any) -> dict[str, Any]:
    """The payload (schema version `SCHEMA_VERSION`): caps tokens (MAX_TOKENS) and
    alternatives (MAX_TOP_K), makes it JSON-safe.

    `extras` are the optional top-level fields (`prompt`, `summary`, `attention`, `lens`,
    `attribution`, `loss`, `cache`, `patching`, `logit_attribution`, `comparison`); None
    values are left out. Arrays in extras are not capped here:
    the record that builds them knows which axis to cut, and sets their own `truncated`.

    Example:
        >>> p = payload("score", "hi", [token_entry("scored", "hi", 7, prob=0.5)])
        >>> p["version"], p["tokens"][0]["prob"], p["truncated"]
        (3, 0.5, False)
    """
    unknown = set(extras) - set(_EXTRAS)
    if unknown:
        raise TypeError(f"payload() got unknown fields {sorted(unknown)}; known: {list(_EXTRAS)}")
    truncated = len(tokens) > MAX_TOKENS
    capped = []
    for token in tokens[:MAX_TOKENS]:
        entry = dict(token)
        alternatives = entry.get("top_k")
        if alternatives is not None:
            truncated = truncated or len(alternatives) > MAX_TOP_K
            entry["top_k"] = [[str(piece), _finite_or_zero(prob)]
                              for piece, prob in list(alternatives)[:MAX_TOP_K]]
        capped.append(entry)
    result: dict[str, Any] = {
        "version": SCHEMA_VERSION,
        "kind": kind,
        "text": text,
        "tokens": capped,
        "truncated": truncated,
        "metadata": dict(metadata or {}),
    }
    result.update({key: value for key, value in extras.items() if value is not None})
    return json_safe(result)


def token_entry(role: str, text: str, token_id: int, *, piece: str | None = None,
                prob: float | None = None, logprob: float | None = None,
                rank: int | None = None, entropy: float | None = None,
                top_k: Iterable[tuple[str, float]] | None = None) -> dict[str, Any]:
    """One token of the payload; statistics left None are omitted (e.g. prompt tokens).

    Example:
        >>> token_entry("prompt", "hello", 42)
        {'text': 'hello', 'id': 42, 'role': 'prompt'}
    """
    entry: dict[str, Any] = {"text": text, "id": int(token_id), "role": role}
    optional = {"piece": piece, "prob": prob, "logprob": logprob, "rank": rank,
                "entropy": entropy}
    entry.update({key: value for key, value in optional.items() if value is not None})
    if top_k is not None:
        entry["top_k"] = [[piece_, prob_] for piece_, prob_ in top_k]
    return entry


def with_speakers(tokens: list[dict[str, Any]], speakers: Sequence[str]
                  ) -> list[dict[str, Any]]:
    """`tokens` with each one's chat speaker ("system", "user", "model", "markup") added,
    when `speakers` are given (a transcript); unchanged otherwise.

    Example:
        >>> with_speakers([token_entry("scored", "hi", 7)], ["user"])[0]["speaker"]
        'user'
    """
    if not speakers:
        return tokens
    return [{**token, "speaker": speaker} for token, speaker in zip(tokens, speakers,
                                                                      strict=True)]


def prompt_entries(tokenizer: Tokenizer, token_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Prompt tokens (text and piece per id) for `Generation.to_dict(prompt_tokens=...)`."""
    from gemma_lab.tokenizer import IncrementalDecoder

    decoder = IncrementalDecoder(tokenizer)
    return [token_entry("prompt", decoder.push(i), i, piece=tokenizer.piece(i))
            for i in token_ids]


def json_safe(value: Any) -> Any:
    """Plain JSON types only: NaN/inf → None, floats rounded to SIGNIFICANT_DIGITS, numpy and
    tuples unwrapped, anything else as its `str`.

    Example:
        >>> json_safe({"a": (float("nan"), 1 / 3), "b": True})
        {'a': [None, 0.333333], 'b': True}
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _round(value)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, without importing numpy
        return json_safe(value.tolist())
    return str(value)


def _round(value: float) -> float | None:
    if not math.isfinite(value):
        return None
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _finite_or_zero(value: Any) -> float:
    number = float(value)
    return number if math.isfinite(number) else 0.0


def probability_colour(prob: float) -> str:
    """A token's probability colour, red (p 0) to green (p 1): the renderer's, the HTML
    fallback's and the widgets' saved views'.

    Example:
        >>> probability_colour(1.0), probability_colour(0.0)
        ('hsl(120,75%,82%)', 'hsl(0,75%,82%)')
    """
    return f"hsl({120 * min(max(prob, 0.0), 1.0):.0f},75%,82%)"


# --- the bundle ----------------------------------------------------------------------------
def mimebundle(result: Any, include: Iterable[str] | None = None,
               exclude: Iterable[str] | None = None) -> dict[str, Any]:
    """The MIME bundle of a result record (anything with `to_dict()`) or of a payload dict.

    `include` / `exclude` follow IPython's `_repr_mimebundle_` contract.
    """
    data = result if isinstance(result, Mapping) else result.to_dict()
    wanted = [MIME_TYPE, "text/html", "text/plain"]
    if include is not None:
        wanted = [mime for mime in wanted if mime in set(include)]
    if exclude is not None:
        wanted = [mime for mime in wanted if mime not in set(exclude)]
    builders = {MIME_TYPE: lambda: data, "text/html": lambda: to_html(data),
                "text/plain": lambda: data["text"]}
    return {mime: builders[mime]() for mime in wanted}


# --- the HTML fallback ---------------------------------------------------------------------
_STYLE = Html(f"""
.{_CSS_PREFIX}-result {{ font-family: var(--jp-content-font-family, system-ui, sans-serif);
  font-size: 13px; line-height: 1.5; position: relative; }}
.{_CSS_PREFIX}-pop {{ display: none; position: absolute; left: 0; bottom: 0; z-index: 10;
  max-width: calc(100% - 2px); box-sizing: border-box; padding: 4px 8px; font-size: 12px;
  white-space: normal; color: #111; background: #fff; border: 1px solid #999;
  border-radius: 3px; box-shadow: 0 2px 6px rgba(0,0,0,.25); }}
.{_CSS_PREFIX}-token:hover + .{_CSS_PREFIX}-pop {{ display: block; }}
.{_CSS_PREFIX}-result:has(.{_CSS_PREFIX}-token:hover + .{_CSS_PREFIX}-pop) {{
  padding-bottom: var(--gemma-lab-pop-room, 14em); }}
.{_CSS_PREFIX}-pop table {{ border-collapse: collapse; font: 12px/1.4 system-ui, sans-serif; }}
.{_CSS_PREFIX}-pop td, .{_CSS_PREFIX}-pop th {{ padding: 0 10px 0 0; text-align: left;
  font-weight: normal; white-space: nowrap; }}
.{_CSS_PREFIX}-pop th {{ color: #666; }}
.{_CSS_PREFIX}-pop code {{ font-family: var(--jp-code-font-family, ui-monospace, monospace); }}
.{_CSS_PREFIX}-pop .{_CSS_PREFIX}-actual td {{ font-weight: 600; }}
.{_CSS_PREFIX}-text {{ white-space: pre-wrap; word-break: break-word;
  font-family: var(--jp-code-font-family, ui-monospace, monospace); }}
.{_CSS_PREFIX}-token {{ border-radius: 2px; color: #111; }}
.{_CSS_PREFIX}-token:hover {{ outline: 1px solid #555; }}
.{_CSS_PREFIX}-prompt {{ opacity: 0.55; }}
.{_CSS_PREFIX}-markup {{ opacity: 0.45; font-size: 0.85em; }}
.{_CSS_PREFIX}-speaker {{ display: inline-block; margin: 0 4px 0 8px; padding: 0 5px;
  border-radius: 3px; font: 600 0.75em sans-serif; text-transform: uppercase;
  color: #fff; background: #546e7a; }}
.{_CSS_PREFIX}-speaker-user {{ background: #1565c0; }}
.{_CSS_PREFIX}-speaker-model {{ background: #2e7d32; }}
.{_CSS_PREFIX}-speaker-system {{ background: #6a1b9a; }}
.{_CSS_PREFIX}-legend, .{_CSS_PREFIX}-meta {{ font-size: 11px; color: #666; margin-top: 4px; }}
.{_CSS_PREFIX}-swatch {{ display: inline-block; width: 80px; height: 8px; vertical-align: middle;
  margin: 0 4px; background: linear-gradient(to right, hsl(0,75%,82%), hsl(60,75%,82%),
  hsl(120,75%,82%)); }}
.{_CSS_PREFIX}-swatch-attribution {{ background: linear-gradient(to right,
  {ATTRIBUTION_AGAINST}, rgba(255,255,255,0), {ATTRIBUTION_FOR}); }}
""")


def to_html(data: Mapping[str, Any]) -> str:
    """Self-contained HTML for a payload: coloured tokens with hover details, legend, metadata.

    Example:
        >>> p = payload("score", "<b>", [token_entry("scored", "<b>", 1, prob=0.9)])
        >>> "&lt;b&gt;" in to_html(p) and "<b>" not in to_html(p)
        True
    """
    tokens = data.get("tokens", [])
    kind = str(data.get("kind", "result"))
    scores = _attribution_scores(data)
    colour_by = "attribution" if scores else "probability"
    diffs = _comparison_diffs(data)
    if diffs is not None:
        scores, colour_by = diffs, "comparison"
    elif kind in render_grids.VIEWS:
        scores, colour_by = [0.0] * len(tokens), "none"  # the grid below carries the numbers
    spans = []
    if data.get("prompt") and not any(t.get("role") == "prompt" for t in tokens) and (
            kind != "comparison"):
        spans.append(tag("span", data["prompt"], class_=f"{_CSS_PREFIX}-prompt",
                         title="prompt"))
    speaker = None
    for position, token in enumerate(tokens):
        if token.get("speaker") not in (None, "markup", speaker):
            speaker = token["speaker"]  # a new turn: say whose
            spans.append(tag("span", speaker, class_=f"{_CSS_PREFIX}-speaker "
                             f"{_CSS_PREFIX}-speaker-{speaker}"))
        spans.append(_token_span(token, scores[position] if scores else None))
        spans.append(_token_pop(token))
    if not tokens:
        spans.append(escape(data.get("text", "")))
    parts = [
        tag("style", _join_styles()),
        tag("div", join(spans), class_=f"{_CSS_PREFIX}-text"),
    ]
    if kind in render_grids.VIEWS:
        parts.append(render_grids.VIEWS[kind](data))
    parts += [_legend(data, colour_by=colour_by), _metadata_footer(data)]
    rows = max((len(t.get("top_k") or []) for t in tokens), default=0)
    room = f"--gemma-lab-pop-room:{1.3 * (rows + 3):.1f}em" if rows else None
    return tag("div", join(parts), class_=f"{_CSS_PREFIX}-result {_CSS_PREFIX}-{kind}",
               style=room)


def _token_pop(token: Mapping[str, Any]) -> Html:
    """The pop-up of a token with alternatives, shown while the token is hovered (CSS only:
    no script in the fallback). It sits at the bottom of the result, in room the result
    reserves while it is shown, so an output area that clips overflow never hides it."""
    alternatives = token.get("top_k") or []
    if not alternatives:
        return Html("")
    header = [tag("code", token_display(token.get("piece", token.get("text", ""))))]
    if token.get("prob") is not None:
        header.append(escape(f"  p {float(token['prob']):.3g}"))
    if token.get("rank") is not None:
        header.append(escape(f" · rank {token['rank']}"))
    if token.get("entropy") is not None:
        header.append(escape(f" · entropy {float(token['entropy']):.3g} nats"))
    actual = token.get("text")
    rows = [tag("tr", tag("th", "rank"), tag("th", "alternative"), tag("th", "p"))]
    for rank, (piece, prob) in enumerate(alternatives, start=1):
        rows.append(tag("tr", tag("td", str(rank)), tag("td", tag("code", token_display(piece))),
                        tag("td", f"{float(prob):.3g}"),
                        class_=f"{_CSS_PREFIX}-actual" if piece == actual else None))
    return tag("span", tag("div", join(header)), tag("table", join(rows)),
               class_=f"{_CSS_PREFIX}-pop")


def _join_styles() -> Html:
    return Html(_STYLE + render_grids.STYLE)


def _comparison_diffs(data: Mapping[str, Any]) -> list[float] | None:
    """Per-token log p_b − log p_a scaled to [-1, 1] (0 past the shared tokens)."""
    comparison = data.get("comparison")
    if not comparison:
        return None
    return _scaled_per_token(comparison.get("diff", []), len(data.get("tokens", [])))


def _attribution_scores(data: Mapping[str, Any]) -> list[float] | None:
    attribution = data.get("attribution")
    if not attribution or any(t.get("prob") is not None for t in data.get("tokens", [])):
        return None
    return _scaled_per_token(attribution.get("scores", []), len(data.get("tokens", [])))


def _scaled_per_token(values: Sequence[float | None], tokens: int) -> list[float]:
    """`values` divided by their largest |value| (missing as 0), padded with 0 to `tokens`."""
    numbers = [float(v or 0.0) for v in values]
    scale = max((abs(v) for v in numbers), default=0.0) or 1.0
    return [v / scale for v in numbers] + [0.0] * (tokens - len(numbers))


def _token_span(token: Mapping[str, Any], attribution: float | None) -> Html:
    role = token.get("role", "")
    prob = token.get("prob")
    if attribution is not None:
        rgb = ATTRIBUTION_FOR_RGB if attribution >= 0 else ATTRIBUTION_AGAINST_RGB
        alpha = 0.0 if attribution == 0 else 0.08 + 0.67 * min(abs(attribution), 1.0)
        background = f"rgba({rgb},{alpha:.3f})"
    elif prob is not None:
        background = probability_colour(float(prob))
    else:
        background = None
    classes = f"{_CSS_PREFIX}-token" + (f" {_CSS_PREFIX}-prompt" if role == "prompt" else "")
    if token.get("speaker") == "markup":
        classes += f" {_CSS_PREFIX}-markup"
    style = f"background:{background}" if background else None
    return tag("span", token.get("text", ""), class_=classes, style=style,
                title=_token_title(token, attribution))


def _token_title(token: Mapping[str, Any], attribution: float | None) -> str:
    # Plain text: `_tag` escapes it as an attribute value, and browsers show "\n" as a new line.
    shown = token.get("piece", token.get("text", ""))
    heading = f"{json.dumps(shown, ensure_ascii=False)}  id {token.get('id')}"
    lines = [f"{heading}  ({token.get('role')})"]
    stats = []
    if token.get("prob") is not None:
        stats.append(f"p {token['prob']:.4g}")
    if token.get("logprob") is not None:
        stats.append(f"logprob {token['logprob']:.4g}")
    if token.get("rank") is not None:
        stats.append(f"rank {token['rank']}")
    if token.get("entropy") is not None:
        stats.append(f"entropy {token['entropy']:.4g} nats")
    if attribution is not None and attribution != 0.0:
        stats.append(f"{'Δ log p' if token.get('role') == 'scored' else 'attribution'} "
                     f"{attribution:+.3f} (of max |value|, "
                     f"{'for' if attribution > 0 else 'against'})")
    if stats:
        lines.append(" · ".join(stats))
    alternatives = token.get("top_k") or []
    if alternatives:
        lines.append("top-k:")
        lines.extend(f"  {json.dumps(str(piece), ensure_ascii=False)}  {float(prob):.4g}"
                     for piece, prob in alternatives)
    return "\n".join(lines)


def _legend(data: Mapping[str, Any], colour_by: str) -> Html:
    comparison = data.get("comparison") or {}
    if colour_by == "comparison":
        label_a, label_b = (comparison.get("labels") or ["a", "b"])[:2]
        text = escape(f"colour: log p({label_b}) − log p({label_a}) per token, blue: "
                      f"{label_b} likelier, red: {label_a} likelier (scaled to the largest "
                      "|difference|) · hover for values")
        diverged = comparison.get("diverged_at")
        if diverged is not None:
            text = join([text, escape(f" · the runs' tokens differ from token {diverged}")])
    elif colour_by == "none":
        text = escape("hover a cell for its value")
    elif colour_by == "attribution":
        text = join([escape("attribution: against"),
                     tag("span", "", class_=f"{_CSS_PREFIX}-swatch "
                         f"{_CSS_PREFIX}-swatch-attribution"),
                     escape("for (blue raises log p(target), red lowers it; scaled to the "
                            "largest |score|) · hover for details")])
    else:
        text = join([escape("probability 0"), tag("span", "", class_=f"{_CSS_PREFIX}-swatch"),
                      escape("1 · hover a token for rank, entropy and alternatives")])
    if data.get("truncated"):
        text = join([text, escape(f" · truncated to {MAX_TOKENS} tokens / "
                                    f"{MAX_TOP_K} alternatives")])
    return tag("div", text, class_=f"{_CSS_PREFIX}-legend")


def _metadata_footer(data: Mapping[str, Any]) -> Html:
    metadata = data.get("metadata", {})
    fields = []
    for key in ("model", "backend", "dtype"):
        if metadata.get(key) is not None:
            fields.append(f"{key} {metadata[key]}")
    sampler = metadata.get("sampler")
    if isinstance(sampler, Mapping):
        settings = ", ".join(f"{k}={_short(v)}" for k, v in sampler.items()
                             if k != "name" and v is not None and k != "seed")
        fields.append(f"sampler {sampler.get('name', '')}" + (f" ({settings})" if settings else ""))
    seed = metadata.get("seed", sampler.get("seed") if isinstance(sampler, Mapping) else None)
    if "seed" in metadata or seed is not None:
        fields.append(f"seed {seed}")
    if "adapter" in metadata:
        fields.append(f"adapter {metadata['adapter'] or 'none'}")
    if metadata.get("mesh"):
        fields.append(str(metadata["mesh"]))
    for key, value in (data.get("summary") or {}).items():
        fields.append(f"{key.replace('_', ' ')} {_short(value)}")
    return tag("div", " · ".join(fields), class_=f"{_CSS_PREFIX}-meta")


def _short(value: Any) -> Any:
    """A float with 3 significant digits (0.800000011920929 → 0.8), anything else as it is.

    Example:
        >>> _short(0.800000011920929), _short(1.2451734), _short(7), _short("x")
        (0.8, 1.25, 7, 'x')
    """
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.3g}")
    return value


__all__ = [
    "MIME_TYPE",
    "json_safe",
    "mimebundle",
    "payload",
    "prompt_entries",
    "to_html",
    "token_entry",
]
