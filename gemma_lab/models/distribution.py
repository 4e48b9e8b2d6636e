"""Multi-device JAX: Keras distribution (DeviceMesh, LayoutMap, ModelParallel, DataParallel)
set up for keras-hub Gemma models, and what a loaded model's sharding looks like.

A distribution must be active while variables are created: `load` builds the model inside
`distribution.scope()`, and the session re-enters that scope whenever it creates variables
(LoRA, optimizer state) or trains. Multi-host runs call `keras.distribution.initialize()` in
every process before loading; `keras.distribution.list_devices()` then lists global devices.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from gemma_lab.backend import import_keras
from gemma_lab.errors import BackendError, GemmaLabError, InputError

DISTRIBUTIONS = ("model_parallel", "data_parallel")
BATCH_AXIS = "batch"
MODEL_AXIS = "model"


class DistributionError(GemmaLabError):
    """A device mesh or a multi-process run could not be set up as asked."""


class MeshError(DistributionError, InputError):
    """The devices cannot form the mesh asked for (data * model != the device count, or a
    model axis under data_parallel)."""


class BatchSizeError(DistributionError, InputError):
    """A batch the mesh's data axis cannot split evenly."""


class CoordinatorTimeoutError(DistributionError, TimeoutError):
    """The coordinator of a multi-process run did not answer within the timeout."""


def check_backend(backend: str, kind: str) -> None:
    """Keras distribution of gemma_lab runs on JAX only; say so for any other backend.

    Example:
        >>> check_backend("jax", "data_parallel")
        >>> try:
        ...     check_backend("torch", "data_parallel")
        ... except BackendError as err:
        ...     print("set_backend('jax')" in str(err))
        True
    """
    if backend != "jax":
        raise BackendError(
            f"distribution={kind!r} needs the JAX backend, but Keras runs on {backend!r} in "
            "this process. Restart the kernel, call gemma_lab.set_backend('jax') (or set "
            "GEMMA_LAB_BACKEND=jax) before loading, then pass distribution= again."
        )


def parse_mesh(text: str) -> tuple[int, int]:
    """A "DATAxMODEL" mesh as the magics and the command line write it ("2x4", or "8" for
    (8, 1)), as the (data, model) tuple `gemma_lab.load(mesh=...)` takes.

    Example:
        >>> parse_mesh("2x4"), parse_mesh("8"), parse_mesh(" 1 X 2 ")
        ((2, 4), (8, 1), (1, 2))
    """
    parts = [p.strip() for p in str(text).lower().split("x")]
    if not 1 <= len(parts) <= 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise InputError(f"mesh must be DATAxMODEL with positive whole numbers, e.g. 2x4 "
                         f"(2 data x 4 model devices), got {text!r}.")
    data, model = (int(parts[0]), int(parts[1]) if len(parts) == 2 else 1)
    return data, model


def mesh_shape(kind: str, mesh: tuple[int, ...] | None, num_devices: int) -> tuple[int, int]:
    """The (data, model) mesh for `kind` on `num_devices` devices, checked.

    Default: all devices on the model axis for "model_parallel", on the data axis for
    "data_parallel".

    Example:
        >>> mesh_shape("model_parallel", None, 8), mesh_shape("model_parallel", (2, 4), 8)
        ((1, 8), (2, 4))
        >>> mesh_shape("data_parallel", (8,), 8)
        (8, 1)
    """
    if kind not in DISTRIBUTIONS:
        raise InputError(
            f"distribution={kind!r} is not supported; choose one of {', '.join(DISTRIBUTIONS)}."
        )
    if mesh is None:
        return (1, num_devices) if kind == "model_parallel" else (num_devices, 1)
    shape = tuple(mesh)
    if len(shape) == 1:
        shape = (shape[0], 1)
    if (len(shape) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)):
        raise InputError(f"mesh must be (data, model) with two positive integers, got {mesh!r}.")
    if math.prod(shape) != num_devices:
        raise MeshError(
            f"mesh={shape} spans {math.prod(shape)} devices, but {num_devices} are available "
            f"(keras.distribution.list_devices()). Pick data * model = {num_devices}, or leave "
            "mesh out to use them all."
        )
    if kind == "data_parallel" and shape[1] != 1:
        raise MeshError(
            f"distribution='data_parallel' replicates the model, so its mesh has no model axis; "
            f"got mesh={shape}. Use mesh=({num_devices}, 1), or "
            "distribution='model_parallel' to shard weights over a model axis."
        )
    return int(shape[0]), int(shape[1])


def gemma_layout_map(device_mesh: Any) -> Any:
    """keras-hub's layout map for Gemma weights on a (batch, model) mesh.

    Gemma, Gemma 2 and Gemma 3 backbones share weight paths; keras-hub versions without
    `Gemma3Backbone.get_layout_map` use `GemmaBackbone`'s, which matches them all.
    """
    import_keras()
    import keras_hub

    for cls in (keras_hub.models.Gemma3Backbone, keras_hub.models.GemmaBackbone):
        if hasattr(cls, "get_layout_map"):
            return cls.get_layout_map(
                device_mesh, model_parallel_dim_name=MODEL_AXIS, data_parallel_dim_name=BATCH_AXIS
            )
    raise BackendError(  # pragma: no cover - every keras-hub with Gemma has one
        "This keras-hub has no Gemma layout map; upgrade keras-hub for model_parallel."
    )


def _divisible_model_parallel(keras: Any) -> type:
    class DivisibleModelParallel(keras.distribution.ModelParallel):
        """ModelParallel that leaves a weight axis unsharded when the mesh axis does not divide
        it (Gemma's single key/value head, a 4-head model on an 8-wide model axis): JAX cannot
        place uneven shards, and replicating that one axis is what the layout would otherwise
        need anyway."""

        def get_variable_layout(self, variable: Any) -> Any:
            layout = super().get_variable_layout(variable)
            axes = list(layout.axes)
            sizes = dict(zip(self.device_mesh.axis_names, self.device_mesh.shape, strict=True))
            fitted = [
                axis if axis is None or dim % sizes[axis] == 0 else None
                for axis, dim in zip(axes, variable.shape, strict=True)
            ]
            if fitted == axes:
                return layout
            return keras.distribution.TensorLayout(fitted, self.device_mesh)

    return DivisibleModelParallel


def make_distribution(kind: str, mesh: tuple[int, ...] | None = None) -> Any:
    """A Keras distribution for a Gemma: "model_parallel" (keras-hub's layout map over a
    (data, model) DeviceMesh) or "data_parallel" (weights replicated, batches split).

    Example:
        >>> dist = make_distribution("data_parallel")
        >>> type(dist).__name__, describe(dist).mesh_shape[1]
        ('DataParallel', 1)
    """
    keras = import_keras()
    check_backend(keras.config.backend(), kind)
    devices = keras.distribution.list_devices()
    data, model = mesh_shape(kind, mesh, len(devices))
    if kind == "data_parallel":
        device_mesh = keras.distribution.DeviceMesh((data,), (BATCH_AXIS,), devices)
        return keras.distribution.DataParallel(device_mesh=device_mesh)
    device_mesh = keras.distribution.DeviceMesh((data, model), (BATCH_AXIS, MODEL_AXIS), devices)
    return _divisible_model_parallel(keras)(
        layout_map=gemma_layout_map(device_mesh), batch_dim_name=BATCH_AXIS
    )


@contextlib.contextmanager
def scope(distribution: Any) -> Iterator[None]:
    """`distribution.scope()`, or nothing for None: variables created and models trained
    inside get the distribution's layouts."""
    if distribution is None:
        yield
        return
    with distribution.scope():
        yield


def check_batch_size(distribution: Any, batch_size: int) -> None:
    """Data-parallel axes split every batch evenly; refuse a batch size they cannot split."""
    if distribution is None:
        return
    data = describe(distribution).mesh_shape[0]
    if batch_size % data:
        suggestion = data * -(-batch_size // data)
        raise BatchSizeError(
            f"batch_size={batch_size} cannot be split over the {data} devices of the mesh's "
            f"data axis; use a multiple of {data} (e.g. batch_size={suggestion})."
        )


@dataclass(frozen=True)
class MeshInfo:
    """How a session's model is spread over devices.

    Fields: kind ("model_parallel" / "data_parallel"), mesh_shape (data, model), axis_names,
    devices (global count), processes (hosts), device_kind ("cpu", "gpu", "tpu").
    """

    kind: str
    mesh_shape: tuple[int, int]
    axis_names: tuple[str, ...]
    devices: int
    processes: int
    device_kind: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        data, model = self.mesh_shape
        return (f"{self.kind} mesh (data={data}, model={model}) over {self.devices} "
                f"{self.device_kind} device(s), {self.processes} process(es)")


def describe(distribution: Any) -> MeshInfo:
    """The `MeshInfo` of a Keras distribution made by `make_distribution`."""
    import jax

    device_mesh = distribution.device_mesh
    shape = tuple(int(n) for n in device_mesh.shape)
    kind = "data_parallel" if len(shape) == 1 else "model_parallel"
    data_model = (shape[0], 1) if len(shape) == 1 else (shape[0], shape[1])
    devices = device_mesh.devices.flatten().tolist()
    device_kind = str(devices[0]).split(":")[0] if devices else "cpu"
    return MeshInfo(kind, data_model, tuple(device_mesh.axis_names), len(devices),
                    jax.process_count(), device_kind)


def per_device_weight_bytes(variables: list[Any]) -> dict[str, int]:
    """Bytes of model weights held by each addressable device, from the arrays' shards.

    Example:
        >>> from gemma_lab.testing import tiny_backbone
        >>> sizes = per_device_weight_bytes(tiny_backbone().weights)
        >>> len(sizes) >= 1 and min(sizes.values()) > 0
        True
    """
    sizes: dict[str, int] = {}
    for variable in variables:
        value = variable.value
        for shard in getattr(value, "addressable_shards", ()):
            key = str(shard.device)
            sizes[key] = sizes.get(key, 0) + int(shard.data.nbytes)
    return sizes


def device_memory_in_use() -> dict[str, int] | None:
    """Bytes in use per local accelerator as the runtime reports them (None on CPU, where
    JAX keeps no per-device statistics)."""
    import jax

    stats = {}
    for device in jax.local_devices():
        memory = device.memory_stats() if hasattr(device, "memory_stats") else None
        if not memory or "bytes_in_use" not in memory:
            return None
        stats[str(device)] = int(memory["bytes_in_use"])
    return stats


__all__ = [
    "DISTRIBUTIONS",
    "BatchSizeError",
    "CoordinatorTimeoutError",
    "DistributionError",
    "MeshError",
    "MeshInfo",
    "check_backend",
    "check_batch_size",
    "describe",
    "device_memory_in_use",
    "gemma_layout_map",
    "make_distribution",
    "mesh_shape",
    "parse_mesh",
    "per_device_weight_bytes",
    "scope",
]
