"""keras-hub LoRA on a session's backbone: enable, read, assign and zero the adapter weights.

keras-hub's `backbone.enable_lora(rank)` adds `lora_kernel_a` / `lora_kernel_b` to the query
and value projections and freezes everything else. A layer's LoRA cannot be removed or re-ranked
once enabled, so "no adapter" is B = 0: the effective kernel is then exactly the base kernel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from gemma_lab.errors import GemmaLabError, InputError

if TYPE_CHECKING:
    from gemma_lab.runtime import ModelRuntime

LoraWeights = dict[str, np.ndarray]


def _weighted_layers(backbone: Any) -> list[Any]:
    # The same indexing keras-hub's save_lora_weights uses: layer names are not unique.
    return [layer for layer in backbone._flatten_layers(include_self=False) if layer.weights]


def lora_layers(backbone: Any) -> list[tuple[int, Any]]:
    """(index, layer) of every LoRA-enabled layer, index as in keras-hub's LoRA files."""
    return [(index, layer) for index, layer in enumerate(_weighted_layers(backbone))
            if getattr(layer, "lora_enabled", False)]


def lora_rank(backbone: Any) -> int | None:
    """The rank LoRA is enabled with on `backbone`, or None when it is not enabled."""
    layers = lora_layers(backbone)
    return int(layers[0][1].lora_rank) if layers else None


def ensure_lora(runtime: ModelRuntime, rank: int) -> bool:
    """Enable LoRA of `rank` on the runtime's backbone; True if it was newly enabled.

    Example:
        >>> from gemma_lab.testing import tiny_causal_lm
        >>> from gemma_lab.session import GemmaLab
        >>> from gemma_lab.models.loading import LoadedModel
        >>> lab = GemmaLab(LoadedModel(tiny_causal_lm(), "tiny", "test", None, "float32"))
        >>> ensure_lora(lab, 2), ensure_lora(lab, 2), lora_rank(lab.backbone)
        (True, False, 2)
    """
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise InputError(f"rank must be a positive integer, got {rank!r}.")
    current = lora_rank(runtime.backbone)
    if current == rank:
        return False
    if current is not None:
        raise InputError(
            f"LoRA is already enabled with rank {current} on this session's model, and a "
            f"layer's LoRA rank cannot change. Use rank={current}, or load a fresh session "
            "(gemma_lab.load()) for a different rank."
        )
    with runtime.distribution_scope():  # new variables take the session's device layout
        targets = runtime.adapter.lora_targets  # None: keras-hub's default layers
        runtime.backbone.enable_lora(rank, target_layer_names=list(targets) if targets else None)
    # Compiled functions captured the variable list before LoRA added variables.
    runtime.invalidate_compiled()
    return True


def lora_weights(backbone: Any) -> LoraWeights:
    """Host copies of every LoRA matrix, keyed "<layer index>/lora_kernel_a|b"."""
    weights: LoraWeights = {}
    for index, layer in lora_layers(backbone):
        weights[f"{index}/lora_kernel_a"] = np.array(layer.lora_kernel_a.numpy())
        weights[f"{index}/lora_kernel_b"] = np.array(layer.lora_kernel_b.numpy())
    return weights


def lora_paths(backbone: Any) -> dict[str, str]:
    """Readable variable paths of the keys `lora_weights` uses."""
    return {f"{index}/{name}": getattr(layer, name).path
            for index, layer in lora_layers(backbone)
            for name in ("lora_kernel_a", "lora_kernel_b")}


def assign_lora(backbone: Any, weights: LoraWeights) -> None:
    """Set every LoRA matrix from `weights` (as `lora_weights` returns them), checked first."""
    targets = {f"{index}/{name}": getattr(layer, name)
               for index, layer in lora_layers(backbone)
               for name in ("lora_kernel_a", "lora_kernel_b")}
    if set(targets) != set(weights):
        raise GemmaLabError(
            f"The adapter has LoRA weights for {len(weights)} matrices, this model has "
            f"{len(targets)} LoRA matrices ({sorted(set(weights) ^ set(targets))[:4]} differ). "
            "It was trained on a different architecture or LoRA layer selection."
        )
    for key, variable in targets.items():
        if tuple(variable.shape) != tuple(weights[key].shape):
            raise GemmaLabError(
                f"Adapter matrix {key} has shape {tuple(weights[key].shape)}, the model "
                f"expects {tuple(variable.shape)}: it belongs to a different model."
            )
    for key, variable in targets.items():
        variable.assign(weights[key].astype(variable.dtype))


def zero_lora(backbone: Any) -> None:
    """B = 0 in every LoRA layer: the model computes exactly its base function again."""
    for _, layer in lora_layers(backbone):
        layer.lora_kernel_b.assign(np.zeros(tuple(layer.lora_kernel_b.shape), "float32"))


__all__ = [
    "LoraWeights",
    "assign_lora",
    "ensure_lora",
    "lora_layers",
    "lora_paths",
    "lora_rank",
    "lora_weights",
    "zero_lora",
]
