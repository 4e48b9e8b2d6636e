"""What is loaded, as a record: identity, architecture, size, numerics and memory."""

from __future__ import annotations

import math
import resource
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from gemma_lab.models.distribution import MeshInfo

if TYPE_CHECKING:
    from gemma_lab.runtime import ModelRuntime

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}


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

    def rows(self) -> list[tuple[str, str]]:
        """(label, readable value) pairs, in field order: sizes as "1.07 GB", parameter
        counts as "268M"; the mesh and per-device rows only for a distributed model.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> dict(tiny_session().info().rows())["Layers"]
            '2'
        """
        rows = [
            ("Model", self.model),
            ("Source", self.source),
            ("Architecture", f"{self.architecture} ({self.family})"),
            ("Parameters", f"{human_count(self.parameters)} ({self.parameters:,})"),
            ("Layers", f"{self.num_layers:,}"),
            ("Attention heads", f"{self.num_query_heads:,} query, "
                                f"{self.num_key_value_heads:,} key-value"),
            ("Hidden size", f"{self.hidden_dim:,}"),
            ("Vocabulary", f"{self.vocabulary_size:,} tokens"),
            ("Context length", f"{self.context_length:,} tokens"),
            ("Backend / dtype", f"{self.backend} / {self.dtype}"),
            ("Weights", human_bytes(self.weights_bytes)),
            ("Peak process memory", human_bytes(self.peak_rss_bytes)),
        ]
        if self.mesh is not None:
            rows.append(("Mesh", str(self.mesh)))
        for label, per_device in (("Weights per device", self.device_weights_bytes),
                                  ("Memory per device", self.device_memory_bytes)):
            if per_device is not None:
                rows.append((label, ", ".join(f"{device} {human_bytes(size)}"
                                              for device, size in per_device.items()) or "-"))
        rows += [
            ("Weights SHA-256", self.weights_sha256 or "-"),
            ("Chat template", self.chat_template or "-"),
            ("Features", ", ".join(self.features) or "-"),
            ("Not supported", "; ".join(f"{name} ({why})" for name, why
                                        in (self.not_supported or {}).items()) or "-"),
        ]
        return rows

    def __str__(self) -> str:
        rows = self.rows()
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label:>{width}}: {value}" for label, value in rows)

    def __repr__(self) -> str:
        return (f"<ModelInfo {self.model}: {self.architecture}, "
                f"{human_count(self.parameters)} parameters, {human_bytes(self.weights_bytes)} "
                f"{self.dtype} on {self.backend}>")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self) if cycle else str(self))

    def _repr_html_(self) -> str:
        from gemma_lab._markup import join, tag

        cell = "padding:2px 12px 2px 0;vertical-align:top;text-align:left"
        body = join(tag("tr", tag("th", label, style=cell + ";font-weight:600;white-space:nowrap"),
                        tag("td", value, style=cell)) for label, value in self.rows())
        return tag("table", tag("tbody", body), class_="gemma-lab-info",
                   style="border-collapse:collapse;font-size:13px")


def _three_figures(value: float) -> str:
    digits = 0 if value >= 99.95 else 1 if value >= 9.995 else 2
    return f"{value:.{digits}f}"


def human_bytes(size: int | float) -> str:
    """A byte count in decimal units, three significant figures.

    Example:
        >>> human_bytes(1072392704), human_bytes(512), human_bytes(2_500_000)
        ('1.07 GB', '512 B', '2.50 MB')
    """
    value, unit = float(size), "B"
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(value) < 999.5 or unit == "PB":
            break
        value /= 1000
    return f"{int(value)} B" if unit == "B" else f"{_three_figures(value)} {unit}"


def human_count(count: int) -> str:
    """A count with a K / M / B / T suffix, three significant figures.

    Example:
        >>> human_count(268098176), human_count(2_614_341_888), human_count(41_216), human_count(7)
        ('268M', '2.61B', '41.2K', '7')
    """
    value, unit = float(count), ""
    for unit in ("", "K", "M", "B", "T"):
        if abs(value) < 999.5 or unit == "T":
            break
        value /= 1000
    return str(int(count)) if unit == "" else f"{_three_figures(value)}{unit}"


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


__all__ = ["ModelInfo", "human_bytes", "human_count", "model_info"]
