"""The one forward pass with named hook points (TransformerLens-style names).

`points` names the points and holds `HookSet`; one adapter per keras-hub family says which of
its layers yields each point (`gemma`: Gemma 1, 2, 3; `gemma3n`: Gemma 3n; `gemma4`:
Gemma 4), through the
`taps` on those layers; `run.ForwardPass` calls keras-hub's
own model with those points routed through a hook set; `patching` keeps every change to the
model's layers scoped and reversible.
"""

from __future__ import annotations

from typing import Any

from gemma_lab.errors import ModelLoadError
from gemma_lab.forward.gemma import GemmaAdapter
from gemma_lab.forward.gemma3n import Gemma3nAdapter
from gemma_lab.forward.gemma4 import Gemma4Adapter
from gemma_lab.forward.points import (
    NO_HOOKS,
    HookContext,
    HookFn,
    HookSet,
    check_names,
    point_names,
)
from gemma_lab.forward.run import ForwardPass, compiled_pass

ADAPTERS = (GemmaAdapter, Gemma3nAdapter, Gemma4Adapter)
Adapter = GemmaAdapter | Gemma3nAdapter | Gemma4Adapter


def supported_architectures() -> list[str]:
    """The keras-hub backbones gemma_lab has hook points for.

    Example:
        >>> "Gemma4Backbone" in supported_architectures()
        True
    """
    return [name for adapter in ADAPTERS for name in adapter.architectures]


def adapter_for(causal_lm: Any) -> Adapter:
    """The hook-point adapter of `causal_lm`'s backbone family.

    Example:
        >>> from gemma_lab.testing import tiny_causal_lm
        >>> adapter_for(tiny_causal_lm("gemma")).num_layers
        2
    """
    name = type(causal_lm.backbone).__name__
    for adapter in ADAPTERS:
        if name in adapter.architectures:
            return adapter(causal_lm)
    raise ModelLoadError(f"gemma_lab has no hook points for {name} (supported: "
                         f"{', '.join(supported_architectures())}). Load a Gemma 1, 2, 3, 3n or 4 "
                         "text model.")


__all__ = [
    "NO_HOOKS",
    "Adapter",
    "ForwardPass",
    "HookContext",
    "HookFn",
    "HookSet",
    "adapter_for",
    "check_names",
    "compiled_pass",
    "point_names",
    "supported_architectures",
]
