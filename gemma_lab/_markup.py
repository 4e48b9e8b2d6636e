"""Escaped HTML building blocks for the script-free fallbacks: every text child and attribute
value is escaped; only markup built here (or trusted constants) passes through unescaped."""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any


class Html(str):
    """Markup that is already safe: produced by `escape` or `tag`, or a trusted constant."""


def escape(value: Any) -> Html:
    return Html(html.escape(str(value), quote=True))


def tag(name: str, *children: Any, **attributes: Any) -> Html:
    """`<name attr="…">children</name>`; text children and every attribute value are escaped.

    Attribute names are Python identifiers written here, `class_` → `class`, `data_x` → `data-x`.
    """
    attrs = "".join(
        f' {key.rstrip("_").replace("_", "-")}="{html.escape(str(value), quote=True)}"'
        for key, value in attributes.items() if value is not None
    )
    body = "".join(child if isinstance(child, Html) else escape(child) for child in children)
    return Html(f"<{name}{attrs}>{body}</{name}>")


def join(parts: Iterable[Html]) -> Html:
    return Html("".join(part if isinstance(part, Html) else escape(part) for part in parts))


__all__ = ["Html", "escape", "join", "tag"]
