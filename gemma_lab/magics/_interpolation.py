"""`{name}` interpolation of `%%gemma` prompts from the user namespace, without eval.

A field may only be a reference: a name, attribute access and indexing with a constant
(`{x}`, `{df.text[0]}`, `{d["k"]}`, `{Out[3]}`, `{rows[-1]}`). It is parsed with `ast` and
resolved by walking the tree with getattr / getitem, so nothing in a prompt is ever executed
as code. `{{` and `}}` are literal braces. Values interpolate as their text: objects with a
`.text` string (a Generation, a Score) give it, anything else gives `str(value)`.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from gemma_lab.errors import InputError

_ALLOWED = ("only names, attribute access and constant indexing "
            "({x}, {obj.attr}, {d['k']}, {Out[3]})")
_FIX = "Write {{ and }} for literal braces, or use --no-interpolate."
_MISSING = object()


def interpolate(template: str, namespace: Mapping[str, Any]) -> str:
    """Replace every `{reference}` in `template` by the text of its value in `namespace`.

    Raises `InputError` naming every unknown name at once, or the first field that is not a
    plain reference (an expression, a call, a dunder attribute) or does not resolve.

    Example:
        >>> interpolate("{{literal}} {city} -> {d['k']}", {"city": "Paris", "d": {"k": 1}})
        '{literal} Paris -> 1'
    """
    pieces = _split(template)
    fields = [(piece, _reference(piece.source)) for piece in pieces if isinstance(piece, _Field)]
    missing = sorted({name for _, tree in fields for name in _names(tree)
                      if name not in namespace})
    if missing:
        plural = len(missing) > 1
        raise InputError(
            f"Unknown name{'s' if plural else ''} in the prompt: {', '.join(missing)}. Define "
            f"{'them' if plural else 'it'} in a cell above. {_FIX}"
        )
    values = {id(piece): as_text(_resolve(tree, namespace, piece.source))
              for piece, tree in fields}
    return "".join(values[id(p)] if isinstance(p, _Field) else p for p in pieces)


def as_text(value: Any) -> str:
    """The text a value contributes to a prompt: `.text` when it is a string, else `str()`.

    Example:
        >>> as_text(3), as_text(type("G", (), {"text": "hi"})())
        ('3', 'hi')
    """
    text = getattr(value, "text", None)
    return text if isinstance(text, str) else str(value)


class _Field:
    def __init__(self, source: str):
        self.source = source


def _split(template: str) -> list[str | _Field]:
    """Literal text and `{field}`s, with `{{` / `}}` already turned into single braces."""
    pieces: list[str | _Field] = []
    literal: list[str] = []
    i, n = 0, len(template)
    while i < n:
        char = template[i]
        if char in "{}" and template.startswith(char * 2, i):
            literal.append(char)
            i += 2
        elif char == "{":
            end = _field_end(template, i + 1)
            if end is None:
                raise InputError(f"'{{' on line {_line(template, i)} of the prompt has no "
                                 f"matching '}}' on that line. {_FIX}")
            pieces.append("".join(literal))
            literal = []
            pieces.append(_Field(template[i + 1:end]))
            i = end + 1
        elif char == "}":
            raise InputError(f"Unmatched '}}' on line {_line(template, i)} of the prompt. {_FIX}")
        else:
            literal.append(char)
            i += 1
    pieces.append("".join(literal))
    return pieces


def _field_end(template: str, start: int) -> int | None:
    # The first '}' outside quotes, so that {d["}"]} is one field.
    quote = None
    for j in range(start, len(template)):
        char = template[j]
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "}":
            return j
        elif char == "\n":
            return None
    return None


def _line(template: str, index: int) -> int:
    return template.count("\n", 0, index) + 1


def _reference(source: str) -> ast.expr:
    """Parse a field and check it is a plain reference (nothing that could run code)."""
    text = source.strip()
    if not text:
        raise InputError(f"Empty {{}} in the prompt: {_ALLOWED} may go inside braces. {_FIX}")
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        tree = None
    if tree is None or not _is_reference(tree):
        raise InputError(f"Cannot interpolate {{{text}}}: {_ALLOWED}. {_FIX}")
    return tree


def _is_reference(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return True
    if isinstance(node, ast.Attribute):
        return not node.attr.startswith("__") and _is_reference(node.value)
    if isinstance(node, ast.Subscript):
        return _constant_key(node.slice) is not _MISSING and _is_reference(node.value)
    return False


def _constant_key(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, str)):
        return node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant) and type(node.operand.value) is int):
        return -node.operand.value
    return _MISSING


def _names(node: ast.expr) -> list[str]:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    assert isinstance(node, ast.Name)
    return [node.id]


def _resolve(node: ast.expr, namespace: Mapping[str, Any], source: str) -> Any:
    if isinstance(node, ast.Name):
        return namespace[node.id]
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, namespace, source)
        try:
            return getattr(base, node.attr)
        except AttributeError:
            raise InputError(
                f"Cannot interpolate {{{source.strip()}}}: {ast.unparse(node.value)} "
                f"({type(base).__name__}) has no attribute {node.attr!r}."
            ) from None
    assert isinstance(node, ast.Subscript)
    base = _resolve(node.value, namespace, source)
    key = _constant_key(node.slice)
    try:
        return base[key]
    except (KeyError, IndexError, TypeError) as err:
        reason = "is not indexable" if isinstance(err, TypeError) else f"has no item {key!r}"
        raise InputError(
            f"Cannot interpolate {{{source.strip()}}}: {ast.unparse(node.value)} "
            f"({type(base).__name__}) {reason}."
        ) from None


__all__ = ["as_text", "interpolate"]
