"""The one forward pass with named hook points (TransformerLens-style names).

`points` names the points and holds `HookSet`; one adapter per keras-hub family says which of
its layers yields each point (`gemma`: Gemma 1, 2, 3); `run.ForwardPass` calls keras-hub's
own model with those points routed through a hook set; `patching` keeps every change to the
model's layers scoped and reversible.
"""

from __future__ import annotations

from typing import Any

from gemma_lab.errors import ModelLoadError
from gemma_lab.forward.gemma import GemmaAdapter
from gemma_lab.forward.points import (
    NO_HOOKS,
    HookContext,
    HookFn,
    HookSet,
    check_names,
    point_names,
)
from gemma_lab.forward.run import ForwardPass, compiled_pass

ADAPTERS = (GemmaAdapter,)


def adapter_for(causal_lm: Any) -> GemmaAdapter:
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
    supported = ", ".join(a for adapter in ADAPTERS for a in adapter.architectures)
    raise ModelLoadError(f"gemma_lab has no hook points for {name} yet (supported: "
                         f"{supported}). Load a Gemma 1, 2 or 3 model.")


__all__ = [
    "NO_HOOKS",
    "ForwardPass",
    "HookContext",
    "HookFn",
    "HookSet",
    "adapter_for",
    "check_names",
    "compiled_pass",
    "point_names",
]
