"""Which gemma_lab features a loaded model supports, and why not where it does not.

Every family runs generation, scoring, tracing, the logit lens, attribution, hooks and
interventions, activation patching, LoRA fine-tuning, chat and classification through the
one forward pass; a few features depend on the family's layers or on gemma_lab's converters.
"""

from __future__ import annotations

from typing import Any

FEATURES = (
    "generate", "score", "trace", "logit lens", "attribution", "integrated gradients", "hooks",
    "ablate heads",
    "ablate neurons", "ablate experts", "steering", "activation patching",
    "logit attribution", "per-layer-embedding points", "LoRA fine-tuning", "chat",
    "classify", "GGUF export", "distribution",
)


# What `gemma-lab doctor` says about each family gemma_lab runs, without loading a model.
FAMILIES = {
    "Gemma 1, 2": "GGUF, keras-hub presets, Hugging Face folders",
    "Gemma 3": "GGUF (the embedded default), keras-hub presets, Hugging Face folders",
    "Gemma 4": "GGUF (load; export F32 / F16 / Q8_0), keras-hub presets, Hugging Face "
               "folders; hook points for the MoE router and experts and per-layer embeddings; "
               "no MLP neuron point, no logit attribution",
    "Gemma 3n": "text-only keras-hub Gemma3nCausalLM models; AltUp's active stream as the "
                "residual; no logit attribution or integrated gradients; the released "
                "(multimodal) presets, Hugging Face folders and GGUFs not yet",
}


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
        reasons["integrated gradients"] = (
            "its completeness check fails on Gemma 4 (the scores miss most of the change from "
            "the zero baseline, MoE routing jumps along the path); not verified")
        reasons["ablate neurons"] = ("keras-hub's Gemma 4 block multiplies its MLP kernels "
                                     "directly: no neuron point")
        reasons["logit attribution"] = ("layer scalars and per-layer embeddings: parts do not "
                                        "add up yet")
        reasons["distribution"] = "layout maps and sharded runs verified for Gemma 1-3 only"
    if adapter.family == "Gemma 3n":
        reasons["integrated gradients"] = ("top-k activation sparsity and AltUp's magnitude "
                                           "ratios are not continuous down to the zero baseline")
        reasons["logit attribution"] = ("AltUp streams, Laurel and per-layer inputs: attention "
                                        "and MLP parts do not add up to the logit")
        reasons["GGUF export"] = "gemma_lab reads and writes Gemma 1-4 GGUFs, not Gemma 3n yet"
        reasons["distribution"] = "layout maps and sharded runs verified for Gemma 1-3 only"
    return reasons


def require(adapter: Any, feature: str, instead: str = "") -> None:
    """Raise `NotAvailableError` (why, and what to use `instead`) if this model cannot run
    `feature`.

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> require(tiny_runtime().adapter, "logit attribution")  # Gemma 3: fine
    """
    from gemma_lab.errors import NotAvailableError

    reason = unsupported(adapter).get(feature)
    if reason is not None:
        raise NotAvailableError(f"{feature[0].upper()}{feature[1:]} is not available for "
                                f"{adapter.family}: {reason}.{' ' + instead if instead else ''}")


def supported(adapter: Any) -> tuple[str, ...]:
    """The features this model runs, in `FEATURES` order."""
    missing = unsupported(adapter)
    return tuple(feature for feature in FEATURES if feature not in missing)


__all__ = ["FAMILIES", "FEATURES", "require", "supported", "unsupported"]
