"""What is loaded, as a record: identity, architecture, size, numerics and memory."""

from __future__ import annotations

import math
import resource
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from gemma_lab.models.distribution import MeshInfo

if TYPE_CHECKING:
    from gemma_lab.runtime import ModelRuntime

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}
_MESH_FIELDS = ("mesh", "device_weights_bytes", "device_memory_bytes")


@dataclass(frozen=True)
class ModelInfo:
    """What is loaded: identity, architecture, size, numerics and memory."""

    model: str
    source: str
    architecture: str
    family: str  # "Gemma 1" .. "Gemma 4"
    parameters: int
    num_layers: int
    num_query_heads: int
    num_key_value_heads: int
    hidden_dim: int
    vocabulary_size: int
    context_length: int
    weights_sha256: str | None
    backend: str
    dtype: str
    weights_bytes: int
    peak_rss_bytes: int
    mesh: MeshInfo | None = None  # how the model is spread over devices (distribution=...)
    device_weights_bytes: dict[str, int] | None = None  # weight bytes each device holds
    device_memory_bytes: dict[str, int] | None = None  # in use per accelerator (not on CPU)
    features: tuple[str, ...] = ()  # what gemma_lab runs on this model (`gemma_lab.features`)
    not_supported: dict[str, str] | None = None  # feature -> why not
    chat_template: str = ""  # which template chat uses: the checkpoint's own or built-in

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        rows = []
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None and field.name in _MESH_FIELDS:
                continue
            if field.name == "features":
                value = ", ".join(value)
            elif field.name == "not_supported":
                value = "; ".join(f"{k} ({why})" for k, why in (value or {}).items()) or "-"
            rows.append(f"{field.name:>20}: {value}")
        return "\n".join(rows)


def model_info(runtime: ModelRuntime) -> ModelInfo:
    """Model id, architecture, parameter count, weights hash, backend, dtype and memory.

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> model_info(tiny_runtime()).num_layers
        2
    """
    from gemma_lab import features

    backbone = runtime.backbone
    shape = runtime.adapter.shape
    weights_bytes = sum(
        math.prod(v.shape) * _DTYPE_BYTES.get(str(v.dtype), 4) for v in backbone.weights
    )
    mesh = device_weights = device_memory = None
    if runtime.distribution is not None:
        from gemma_lab.models import distribution

        mesh = distribution.describe(runtime.distribution)
        device_weights = distribution.per_device_weight_bytes(backbone.weights)
        device_memory = distribution.device_memory_in_use()
    return ModelInfo(
        model=runtime.model_id,
        source=runtime.loaded.source,
        architecture=type(backbone).__name__.replace("Backbone", ""),
        family=runtime.adapter.family,
        parameters=int(backbone.count_params()),
        num_layers=shape.num_layers,
        num_query_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        hidden_dim=shape.hidden_dim,
        vocabulary_size=shape.vocabulary_size,
        context_length=runtime.context_length,
        weights_sha256=runtime.loaded.weights_sha256,
        backend=runtime.backend,
        dtype=runtime.dtype,
        weights_bytes=weights_bytes,
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        mesh=mesh,
        device_weights_bytes=device_weights,
        device_memory_bytes=device_memory,
        features=features.supported(runtime.adapter),
        not_supported=features.unsupported(runtime.adapter),
        chat_template=_template_name(runtime),
    )


def _template_name(runtime: ModelRuntime) -> str:
    from gemma_lab.chat import template_of

    template = template_of(runtime)
    origin = getattr(template, "origin", None)
    return f"the checkpoint's ({origin})" if origin else f"built-in {template.name}"


__all__ = ["ModelInfo", "model_info"]
