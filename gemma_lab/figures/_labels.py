"""Token text made readable and safe wherever a token is labelled.

`token_display` is the one rule for showing a token as a label (figure axes and cells, the HTML
fallback's pop-up, the renderer's grids); labextension/src/dom.ts `tokenLabel` is the same rule
in TypeScript. `token_displays` labels a whole sequence, merging consecutive byte-fallback
pieces (`<0xE2><0x86><0x92>`) into the character they make. `token_label` adds the escaping
plotly needs, since its labels and hover text are parsed as HTML.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence

_VISIBLE_WHITESPACE = {"\n": "↵", "\t": "⇥", "\r": "␍"}
_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_BYTES = re.compile(r"(?:<0x[0-9A-Fa-f]{2}>)+")
EMPTY = "∅"


def _byte_values(piece: str) -> list[int] | None:
    """The bytes of a piece made only of byte-fallback tokens, else None."""
    if not piece or not _BYTES.fullmatch(piece):
        return None
    return [int(value, 16) for value in _BYTE.findall(piece)]


def _decode_bytes(values: Sequence[int]) -> str:
    """Bytes as the characters they make, or `\\xNN` badges where they make none."""
    try:
        return bytes(values).decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"\\x{value:02X}" for value in values)


def _visible_char(char: str) -> str:
    if char in _VISIBLE_WHITESPACE:
        return _VISIBLE_WHITESPACE[char]
    category = unicodedata.category(char)
    if category in ("Cc", "Cf", "Cs", "Co", "Cn") or char == "\ufffd" or (
            category in ("Zs", "Zl", "Zp") and char != " "):
        code = ord(char)
        return f"\\x{code:02X}" if code < 0x100 else f"\\u{code:04X}"
    return char


def token_display(text: str) -> str:
    """A token as a readable one-line label (not escaped): newline "↵", tab "⇥", a token of
    spaces only as "␣" marks, byte-fallback pieces as their character or a `\\xNN` badge,
    invisible characters as `\\xNN` / `\\uNNNN`, the empty token as "∅".

    Example:
        >>> token_display("a\\n"), token_display("  "), token_display("<0xE2><0x86><0x92>")
        ('a↵', '␣␣', '→')
        >>> token_display("<0xEE>"), token_display(""), token_display("&#")
        ('\\\\xEE', '∅', '&#')
    """
    text = str(text)
    if not text:
        return EMPTY
    text = _BYTES.sub(lambda match: _decode_bytes(_byte_values(match.group(0)) or []), text)
    if not text.strip(" "):
        return "␣" * len(text)
    return "".join(_visible_char(char) for char in text)


def token_displays(tokens: Sequence[str]) -> list[str]:
    """Labels for a sequence of tokens: a run of single-byte pieces that decodes as UTF-8 is
    labelled with its character at every position of the run; other tokens as `token_display`.

    Example:
        >>> token_displays(["a", "<0xE2>", "<0x86>", "<0x92>", "<0xEE>"])
        ['a', '→', '→', '→', '\\\\xEE']
    """
    labels = [token_display(t) for t in tokens]
    start = 0
    while start < len(tokens):
        if _byte_values(str(tokens[start])) is None:
            start += 1
            continue
        end = start
        values: list[int] = []
        while end < len(tokens) and (more := _byte_values(str(tokens[end]))) is not None:
            values.extend(more)
            end += 1
        # Greedy: the longest prefix of the run that decodes, then the rest on its own.
        position = start
        while position < end:
            for stop in range(min(end, position + 4), position, -1):  # UTF-8: ≤ 4 bytes
                chunk = [v for piece in tokens[position:stop]
                         for v in _byte_values(str(piece)) or []]
                try:
                    shown = bytes(chunk).decode("utf-8")
                except UnicodeDecodeError:
                    continue
                labels[position:stop] = [token_display(shown)] * (stop - position)
                position = stop
                break
            else:
                position += 1  # a byte that starts no character keeps its badge
        start = end
    return labels


def plotly_text(text: str) -> str:
    """Escape the characters plotly would read as markup; quotes stay as they are because
    plotly decodes only &amp; &lt; &gt; (and numeric entities), not &quot;.

    Example:
        >>> plotly_text("<b>&")
        '&lt;b&gt;&amp;'
    """
    return html.escape(str(text), quote=False)


def token_label(text: str) -> str:
    """An axis label for a token: `token_display`, escaped for plotly.

    Example:
        >>> token_label("<br>\\n"), token_label(""), token_label("  ")
        ('&lt;br&gt;↵', '∅', '␣␣')
    """
    return plotly_text(token_display(text))


def token_labels(tokens: Sequence[str]) -> list[str]:
    """Axis labels for a sequence of tokens: `token_displays`, escaped for plotly."""
    return [plotly_text(label) for label in token_displays(tokens)]


def alternatives_hover(alternatives: Sequence[tuple[str, float]]) -> str:
    """Hover lines "token  prob" for top-k alternatives, joined with <br> (plotly's newline)."""
    return "<br>".join(f"{token_label(piece)}  {float(prob):.4g}" for piece, prob in alternatives)


# Figure text: tick labels and heatmap cells at least this many px (plotly's default is 12,
# but it shrinks cell text to fit; `heatmap_text_font` keeps it readable).
LABEL_FONT_PX = 12


def position_axis(labels: Sequence[str], max_labelled: int = 80) -> dict:
    """x-axis settings: positions as ticks labelled by token (readable up to `max_labelled`).

    Positions rather than token categories, because a repeated token would otherwise merge
    into one category.
    """
    axis: dict = {"title": {"text": "token"}, "automargin": True,
                  "tickfont": {"size": LABEL_FONT_PX}}
    if len(labels) <= max_labelled:
        axis.update(tickmode="array", tickvals=list(range(len(labels))), ticktext=list(labels),
                    tickangle=-45 if len(labels) > 12 else 0)
    else:
        axis["title"] = {"text": "position (hover for the token)"}
    return axis
