"""The `%gemma` line and `%%gemma` cell magics (`%load_ext gemma_lab`).

    %load_ext gemma_lab
    %gemma load                       # the embedded Gemma 3 270M
    %%gemma --max-new-tokens 16 -o g
    The capital of France is

From Python, `gemma_lab.magics.use(lab)` sets the session the magics work on and
`gemma_lab.magics.current()` returns it. Importing this package imports no Keras.
"""

from __future__ import annotations

from typing import Any

from gemma_lab.errors import NotAvailableError
from gemma_lab.magics._arguments import FORMATS, CellArgs, parse_cell, parse_line
from gemma_lab.magics._gemma_magics import GemmaMagics
from gemma_lab.magics._interpolation import as_text, interpolate
from gemma_lab.magics._state import current, use


def register(ipython: Any) -> GemmaMagics:
    """Register `%gemma` / `%%gemma` on `ipython` (what `%load_ext gemma_lab` calls).

    Registering again replaces the previous instance, keeping `%config GemmaMagics` pointing
    at the live one.
    """
    ipython.configurables = [c for c in ipython.configurables if not isinstance(c, GemmaMagics)]
    magics = GemmaMagics(shell=ipython)
    ipython.register_magics(magics)
    return magics


__all__ = [
    "FORMATS",
    "CellArgs",
    "GemmaMagics",
    "NotAvailableError",
    "as_text",
    "current",
    "interpolate",
    "parse_cell",
    "parse_line",
    "register",
    "use",
]
