"""Splice an SAE into the forward pass: its hook point's value is replaced by the SAE's
reconstruction (optionally plus the error term, so only chosen features change).

`gemma_lab.interventions.sae_splice` returns the hook set; it runs inside the compiled
forward pass like every other intervention (prefill, every decode step, scoring, tracing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gemma_lab.errors import InputError
from gemma_lab.forward.points import HookContext, ModelShape, block_point
from gemma_lab.sae.model import SAE


def _features(values: Iterable[int] | int | None, width: int, what: str) -> tuple[int, ...]:
    if values is None:
        return ()
    items = [values] if isinstance(values, (int, np.integer)) else list(values)
    bad = [v for v in items if not isinstance(v, (int, np.integer)) or isinstance(v, bool)
           or not 0 <= int(v) < width]
    if bad:
        raise InputError(f"{what} {bad[:5]!r} are not features of this SAE (0..{width - 1}).")
    return tuple(sorted({int(v) for v in items}))


@dataclass(frozen=True, eq=False)
class Splice:
    """Replace the value at `sae.hook` by decode(encode(value)), with features `ablate` set
    to zero and features in `clamp` set to the given activation; `keep_error` adds back
    value - decode(encode(value)) (so with nothing ablated or clamped the run is unchanged).
    """

    sae: SAE = field(repr=False)
    ablate: tuple[int, ...] = ()
    clamp: tuple[tuple[int, float], ...] = ()
    keep_error: bool = False

    def check(self, shape: ModelShape) -> None:
        parsed = block_point(self.sae.hook)
        if parsed is not None:
            shape.check_layer(parsed[0])
        if shape.names and self.sae.hook not in shape.names:
            raise InputError(f"This model has no hook point {self.sae.hook!r} for the SAE; "
                             "lab.hook_points() lists them.")
        per_position = shape.per_position(self.sae.hook)
        if per_position is None:
            raise InputError("An SAE cannot read attn.pattern (its key axis is the sequence).")
        size = int(np.prod(per_position))
        if size != self.sae.d_model:
            raise InputError(
                f"The SAE reads activations of width {self.sae.d_model}, but {self.sae.hook!r} "
                f"of this model has {size} values a position: it was trained on another model "
                "or another hook point.")

    def __call__(self, value: Any, ctx: HookContext) -> Any:
        from gemma_lab.backend import import_keras

        ops = import_keras().ops
        shape = value.shape
        x = ops.cast(ops.reshape(value, (shape[0], shape[1], -1)), "float32")
        f = self.sae.encode_ops(x)
        edited = f
        if self.ablate or self.clamp:
            keep = np.ones((self.sae.width,), dtype="float32")
            fixed = np.zeros((self.sae.width,), dtype="float32")
            keep[list(self.ablate)] = 0.0
            for feature, level in self.clamp:
                keep[feature] = 0.0
                fixed[feature] = level
            edited = f * ops.convert_to_tensor(keep) + ops.convert_to_tensor(fixed)
        out = self.sae.decode_ops(edited)
        if self.keep_error:
            out = out + (x - self.sae.decode_ops(f))
        return ops.cast(ops.reshape(out, shape), value.dtype)


def splice(sae: SAE, ablate: Iterable[int] | int | None = None,
           clamp: Mapping[int, float] | None = None, keep_error: bool | None = None
           ) -> dict[str, Splice]:
    """{hook point: Splice} for `sae`; `keep_error` defaults to True when features are
    ablated or clamped (a clean feature edit) and False otherwise (the SAE's reconstruction
    replaces the activation).
    """
    if not isinstance(sae, SAE):
        raise InputError("sae_splice() takes an SAE: sae = gemma_lab.load_sae(path, hook=...).")
    ablated = _features(ablate, sae.width, "Features to ablate")
    clamped: list[tuple[int, float]] = []
    if clamp is not None:
        if not isinstance(clamp, Mapping):
            raise InputError("clamp= takes {feature: activation}, e.g. {123: 8.0}.")
        for feature, level in clamp.items():
            (index,) = _features([feature], sae.width, "Features to clamp")
            if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) or (
                    not np.isfinite(level)):
                raise InputError(f"clamp[{feature}] must be a finite number, got {level!r}.")
            clamped.append((index, float(level)))
    if keep_error is None:
        keep_error = bool(ablated or clamped)
    if not isinstance(keep_error, bool):
        raise InputError(f"keep_error must be True or False, got {keep_error!r}.")
    return {sae.hook: Splice(sae, ablated, tuple(clamped), keep_error)}


__all__ = ["Splice", "splice"]
