"""Scoped, reversible method patches on a model's layers (nnsight's rule: no permanent edits).

A `Patch` replaces one method of one object with `make(current_method)` while `applied(...)`
is open, and puts back exactly what was there (an instance attribute or nothing) when it
closes, error or not. Patches on the same method nest: the later wraps the earlier.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

_MISSING = object()


@dataclass(frozen=True)
class Patch:
    """Replace `owner.attr` by `make(owner.attr)` for the duration of `applied`."""

    owner: Any
    attr: str
    make: Callable[[Callable[..., Any]], Callable[..., Any]]


def call_attr(layer: Any) -> str:
    """The method Keras' `Operation.__call__` runs for `layer`: `quantized_call` for an
    int8-quantized layer, else `call`.

    Example:
        >>> from gemma_lab.backend import import_keras
        >>> call_attr(import_keras().layers.Dense(2))
        'call'
    """
    return "quantized_call" if getattr(layer, "quantization_mode", None) is not None else "call"


@contextmanager
def applied(patches: Sequence[Patch]) -> Iterator[None]:
    """Apply `patches` in order; undo them in reverse order on exit.

    Example:
        >>> class Thing:
        ...     def name(self): return "thing"
        >>> thing = Thing()
        >>> with applied([Patch(thing, "name", lambda old: lambda: old().upper())]):
        ...     inside = thing.name()
        >>> inside, thing.name(), "name" in vars(thing)
        ('THING', 'thing', False)
    """
    undo: list[tuple[Any, str, Any]] = []
    try:
        for patch in patches:
            before = vars(patch.owner).get(patch.attr, _MISSING)
            # object.__setattr__: no Keras / torch attribute tracking sees the wrapper.
            object.__setattr__(patch.owner, patch.attr, patch.make(getattr(patch.owner,
                                                                           patch.attr)))
            undo.append((patch.owner, patch.attr, before))
        yield
    finally:
        for owner, attr, before in reversed(undo):
            if before is _MISSING:
                object.__delattr__(owner, attr)
            else:
                object.__setattr__(owner, attr, before)


__all__ = ["Patch", "applied", "call_attr"]
