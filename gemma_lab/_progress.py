"""Progress bars for long work: tqdm's notebook bar in Jupyter, text bar in a terminal."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def progress_bar(iterable: Iterable[T], **kwargs: Any) -> Iterable[T]:
    """Wrap an iterable in tqdm.auto's bar (widget in notebooks, text elsewhere).

    Example:
        >>> list(progress_bar(range(3), disable=True))
        [0, 1, 2]
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


def progress_counter(total: int, **kwargs: Any) -> Any:
    """A manual tqdm bar to `.update(n)` and `.close()`.

    Example:
        >>> bar = progress_counter(2, disable=True); bar.update(2); bar.close()
    """
    from tqdm.auto import tqdm

    return tqdm(total=total, **kwargs)
