"""Which gemma_lab features a loaded model supports, and why not where it does not.

Every family runs generation, scoring, tracing, the logit lens, attribution, hooks and
interventions, activation patching, LoRA fine-tuning, chat and classification through the
one forward pass; a few features depend on the family's layers or on gemma_lab's converters.
"""

from __future__ import annotations

from typing import Any

FEATURES = (
    "generate", "score", "trace", "logit lens", "attribution", "hooks", "ablate heads",
    "ablate neurons", "ablate experts", "steering", "activation patching",
    "logit attribution", "per-layer-embedding points", "LoRA fine-tuning", "chat",
    "classify", "GGUF export", "distribution",
)


def unsupported(adapter: Any) -> dict[str, str]:
    """Feature → why this model cannot run it (features not listed are supported).

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> sorted(unsupported(tiny_runtime().adapter))
        ['ablate experts', 'per-layer-embedding points']
    """
    shape = adapter.shape
    reasons: dict[str, str] = {}
    if not shape.experts:
        reasons["ablate experts"] = "no mixture-of-experts layers"
    if not shape.per_layer_dim:
        reasons["per-layer-embedding points"] = "no per-layer embeddings"
    if adapter.family == "Gemma 4":
        reasons["ablate neurons"] = ("keras-hub's Gemma 4 block multiplies its MLP kernels "
                                     "directly: no neuron point")
        reasons["logit attribution"] = ("layer scalars and per-layer embeddings: parts do not "
                                        "add up yet")
        reasons["GGUF export"] = "gemma_lab writes Gemma 1-3 GGUFs"
        reasons["distribution"] = "layout maps for Gemma 1-3 only"
    return reasons


def supported(adapter: Any) -> tuple[str, ...]:
    """The features this model runs, in `FEATURES` order."""
    missing = unsupported(adapter)
    return tuple(feature for feature in FEATURES if feature not in missing)


__all__ = ["FEATURES", "supported", "unsupported"]
