"""Ready-made interventions: hook sets that ablate heads or neurons, steer, or patch.

Each function returns a `HookSet` for `lab.hooks(...)`; sets compose with `|` (with each
other and with plain `{point: fn}` dicts), and every hook in them runs inside the compiled
forward pass, so they hold during prefill, every cached decode step, scoring, tracing and
attribution alike. Each hook checks itself against the model when the set is applied (layer
and head ranges, vector sizes) and raises one `InputError` saying what fits.

    from gemma_lab import interventions as iv
    with lab.hooks(iv.ablate_heads([(3, 1)]) | iv.add(vector, layer=6, scale=4.0)):
        lab.generate("The weather today is")

Mean ablation takes its means from activations the user gives: an `ActivationCache` of a
reference text (`lab.run_with_cache(text, names=[...])`), several of them (a dataset), or a
mapping point → mean array. Means are over every position except `<bos>`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gemma_lab import validate
from gemma_lab.errors import InputError
from gemma_lab.forward.points import HookContext, HookSet, ModelShape, block_point

MODES = ("zero", "mean")


def _ops() -> Any:
    from gemma_lab.backend import import_keras

    return import_keras().ops


def _row_mask(ctx: HookContext, positions: tuple[int, ...] | None) -> Any:
    """Bool [rows]: which rows of the value sit at one of `positions` (all when None)."""
    ops = _ops()
    if positions is None:
        return ops.ones((ctx.rows,), dtype="bool")
    wanted = ops.convert_to_tensor(np.asarray(positions, dtype="int32"))
    return ops.any(ops.equal(ctx.positions[:, None], wanted[None, :]), axis=1)


def _positions(positions: Iterable[int] | int | None) -> tuple[int, ...] | None:
    if positions is None:
        return None
    values = [positions] if validate.is_integer(positions) else validate.sequence(
        positions, "positions", example="[0, 3]")
    if not values or any(not validate.is_integer(p) or not 0 <= p <= validate.INT32_LIMIT
                         for p in values):
        raise InputError(f"positions must be non-negative token positions (<bos> is 0), got "
                         f"{positions!r}.")
    return tuple(sorted({int(p) for p in values}))


def _indices(values: Iterable[int] | int, what: str) -> tuple[int, ...]:
    """One index or a non-empty list of them (range checks: the hook's `check`)."""
    items = [values] if validate.is_integer(values) else validate.sequence(
        values, what, example="[0, 5, 7]")
    if not items or any(not validate.is_integer(v) for v in items):
        raise InputError(f"{what} must be {what[:-1]} indices (integers), e.g. [0, 5], got "
                         f"{values!r}.")
    return tuple(sorted({int(v) for v in items}))


def _layer(layer: Any) -> int:
    return validate.integer(layer, "layer", low=0, hint="Layers count from 0 (a block index).")


def _vector(value: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype="float32")
    except (TypeError, ValueError) as err:
        raise InputError(f"{what} must be an array of numbers, got {type(value).__name__}."
                         ) from err
    if not np.all(np.isfinite(array)):
        raise InputError(f"{what} holds NaN or infinite values.")
    return array


def _means(reference: Any, name: str) -> np.ndarray:
    """The mean of point `name` over every non-<bos> position of `reference`."""
    if isinstance(reference, Mapping) and not hasattr(reference, "tokens"):
        if name not in reference:
            raise InputError(f"The means given have no {name!r}; give a mapping with that "
                             "point or an ActivationCache that holds it.")
        return _vector(reference[name], f"The mean of {name!r}")
    caches = [reference] if hasattr(reference, "tokens") else [] if reference is None else (
        validate.sequence(reference, "reference", example="[lab.run_with_cache(text)]"))
    if not caches:
        raise InputError(
            "Mean ablation needs reference activations: reference=lab.run_with_cache(text, "
            f"names=[{name!r}]) (or a list of such caches for a dataset).")
    rows = []
    for cache in caches:
        if not hasattr(cache, "tokens") or not isinstance(getattr(cache, "values", None),
                                                           Mapping):
            raise InputError(f"reference holds {type(cache).__name__}, not an ActivationCache: "
                             f"give lab.run_with_cache(text, names=[{name!r}]) or a list of "
                             "those.")
        if name not in getattr(cache, "values", {}):
            raise InputError(f"The reference cache of {cache.text[:30]!r} has no {name!r}: "
                             f"run lab.run_with_cache(text, names=[{name!r}]).")
        values = np.asarray(cache[name], dtype="float32")
        rows.append(values[1:] if len(values) > 1 else values)
    return np.concatenate(rows, axis=0).mean(axis=0)


def _ablated(value: Any, axis: int, indices: tuple[int, ...], means: np.ndarray | None) -> Any:
    """`value` [batch, pos, ...] with entries `indices` of `axis` set to zero, or to `means`
    (the per-position shape: [head, head_dim] or [neuron])."""
    ops = _ops()
    chosen = np.zeros((value.shape[axis],), dtype=bool)
    chosen[list(indices)] = True
    hit = ops.convert_to_tensor(chosen.reshape((-1,) + (1,) * (len(value.shape) - axis - 1)))
    if means is None:
        return ops.where(hit, ops.zeros_like(value), value)
    return ops.where(hit, ops.cast(ops.convert_to_tensor(means), value.dtype), value)


@dataclass(frozen=True, eq=False)
class AblateHeads:
    """Replace heads of `blocks.{layer}.attn.z` with zeros or a reference mean."""

    layer: int
    heads: tuple[int, ...]
    mode: str
    means: np.ndarray | None = field(default=None, repr=False)  # [head, head_dim]

    def check(self, shape: ModelShape) -> None:
        shape.check_layer(self.layer)
        for head in self.heads:
            shape.check_head(self.layer, head)
        want = (shape.num_heads, shape.layer_head_dim(self.layer))
        if self.means is not None and self.means.shape != want:
            raise InputError(f"The mean attn.z of layer {self.layer} has shape "
                             f"{self.means.shape}; this model's is {want}: the reference "
                             "activations come from another model.")

    def __call__(self, z: Any, ctx: HookContext) -> Any:
        return _ablated(z, axis=2, indices=self.heads, means=self.means)


@dataclass(frozen=True, eq=False)
class AblateNeurons:
    """Replace neurons of `blocks.{layer}.mlp.post` with zeros or a reference mean."""

    layer: int
    neurons: tuple[int, ...]
    mode: str
    means: np.ndarray | None = field(default=None, repr=False)  # [mlp_dim]

    def check(self, shape: ModelShape) -> None:
        shape.check_layer(self.layer)
        if shape.names and f"blocks.{self.layer}.mlp.post" not in shape.names:
            raise InputError(
                "This model has no MLP neuron point: keras-hub's Gemma 4 block multiplies its "
                "MLP kernels directly. Ablate its experts (iv.ablate_experts) or hook "
                f"'blocks.{self.layer}.mlp_out' instead.")
        bad = [n for n in self.neurons if not 0 <= n < shape.mlp_dim]
        if bad:
            raise InputError(f"Neurons {bad[:5]} of layer {self.layer} are out of range: this "
                             f"model's MLP has neurons 0..{shape.mlp_dim - 1}.")
        if self.means is not None and self.means.shape != (shape.mlp_dim,):
            raise InputError(f"The mean mlp.post of layer {self.layer} has shape "
                             f"{self.means.shape}; this model's is ({shape.mlp_dim},).")

    def __call__(self, post: Any, ctx: HookContext) -> Any:
        return _ablated(post, axis=2, indices=self.neurons, means=self.means)


@dataclass(frozen=True, eq=False)
class AblateExperts:
    """Zero experts' dispatch weights in `blocks.{layer}.moe.router`: those experts add
    nothing to any token (the other chosen experts keep their weights)."""

    layer: int
    experts: tuple[int, ...]

    def check(self, shape: ModelShape) -> None:
        shape.check_layer(self.layer)
        if not shape.experts:
            raise InputError("This model has no mixture-of-experts layers to ablate experts in "
                             "(Gemma 4 26B-A4B-style models have them).")
        bad = [e for e in self.experts if not 0 <= e < shape.experts]
        if bad:
            raise InputError(f"Experts {bad[:5]} of layer {self.layer} are out of range: this "
                             f"model has experts 0..{shape.experts - 1}.")

    def __call__(self, weights: Any, ctx: HookContext) -> Any:
        return _ablated(weights, axis=2, indices=self.experts, means=None)


@dataclass(frozen=True, eq=False)
class Add:
    """Add `scale * vector` to a point's value at `positions` (every position when None)."""

    name: str
    vector: np.ndarray = field(repr=False)
    scale: float = 1.0
    positions: tuple[int, ...] | None = None

    def check(self, shape: ModelShape) -> None:
        parsed = block_point(self.name)
        if parsed is not None:
            shape.check_layer(parsed[0])
        want = shape.per_position(self.name)
        if tuple(self.vector.shape) != want:
            raise InputError(f"The steering vector has shape {tuple(self.vector.shape)}; "
                             f"{self.name!r} needs {want} (this model's hidden size is "
                             f"{shape.hidden_dim}). Build it with lab.steering_vector(...).")

    def __call__(self, value: Any, ctx: HookContext) -> Any:
        ops = _ops()
        delta = ops.cast(ops.convert_to_tensor(self.vector * np.float32(self.scale)),
                         value.dtype)
        if self.positions is None:
            return value + delta
        mask = ops.cast(_row_mask(ctx, self.positions), value.dtype)
        return value + mask[None, :, None] * delta


@dataclass(frozen=True, eq=False)
class Patch:
    """Write point `name`'s values from another run (`source`: [position, ...]) at
    `positions` (every position the source has when None); later positions are kept."""

    name: str
    source: np.ndarray = field(repr=False)
    positions: tuple[int, ...] | None = None

    def check(self, shape: ModelShape) -> None:
        want = shape.per_position(self.name)
        if tuple(self.source.shape[1:]) != want:
            raise InputError(f"The cached {self.name!r} has shape {tuple(self.source.shape)}; "
                             f"this model's is [position, {', '.join(map(str, want or ()))}]: "
                             "the cache comes from another model.")

    def __call__(self, value: Any, ctx: HookContext) -> Any:
        ops = _ops()
        n = int(self.source.shape[0])
        positions = ctx.positions
        hit = ops.logical_and(ops.less(positions, n), _row_mask(ctx, self.positions))
        source = ops.cast(ops.convert_to_tensor(self.source), value.dtype)
        taken = ops.take(source, ops.clip(positions, 0, n - 1), axis=0)[None]
        hit = ops.reshape(hit, (1, -1) + (1,) * (len(value.shape) - 2))
        return ops.where(hit, taken, value)


def _pairs(heads: Any) -> list[tuple[int, int]]:
    items = validate.sequence(heads, "heads", example="[(3, 1), (5, 0)]")
    pairs = []
    for item in items:
        if (not isinstance(item, (tuple, list)) or len(item) != 2
                or not all(validate.is_integer(v) for v in item)):
            raise InputError(f"heads must be (layer, head) pairs of integers like "
                             f"[(3, 1), (5, 0)], got {item!r} in {heads!r}.")
        pairs.append((int(item[0]), int(item[1])))
    if not pairs:
        raise InputError("ablate_heads() needs at least one (layer, head) pair.")
    return pairs


def _mode(mode: str) -> str:
    return validate.choice(mode, MODES, "mode")


def ablate_heads(heads: Iterable[tuple[int, int]], mode: str = "zero",
                 reference: Any = None) -> HookSet:
    """Ablate attention heads: their per-head output (`blocks.{l}.attn.z`) set to zero, or to
    its mean over `reference` (an `ActivationCache`, a list of them, or {point: mean}).

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> lab = tiny_session()
        >>> with lab.hooks(ablate_heads([(0, 1), (1, 0)])):
        ...     ablated = lab.score("hello world").total_logprob
        >>> ablated != lab.score("hello world").total_logprob
        True
    """
    mode = _mode(mode)
    by_layer: dict[int, list[int]] = {}
    for layer, head in _pairs(heads):
        by_layer.setdefault(layer, []).append(head)
    fns = {}
    for layer, layer_heads in sorted(by_layer.items()):
        name = f"blocks.{layer}.attn.z"
        means = _means(reference, name) if mode == "mean" else None
        fns[name] = AblateHeads(layer, tuple(sorted(set(layer_heads))), mode, means)
    return HookSet.of(fns)


def ablate_neurons(layer: int, neurons: Iterable[int] | int, mode: str = "zero",
                   reference: Any = None) -> HookSet:
    """Ablate MLP neurons of `layer` (`blocks.{layer}.mlp.post`): zero, or their mean over
    `reference` (as for `ablate_heads`).

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> lab = tiny_session()
        >>> with lab.hooks(ablate_neurons(0, range(16))):
        ...     ablated = lab.score("hello world").total_logprob
        >>> ablated != lab.score("hello world").total_logprob
        True
    """
    mode = _mode(mode)
    chosen = _indices(neurons, "neurons")
    layer = _layer(layer)
    name = f"blocks.{layer}.mlp.post"
    means = _means(reference, name) if mode == "mean" else None
    return HookSet.of({name: AblateNeurons(layer, chosen, mode, means)})


def ablate_experts(layer: int, experts: Iterable[int] | int) -> HookSet:
    """Switch off mixture-of-experts experts of `layer` (Gemma 4 MoE models): their
    dispatch weights (`blocks.{layer}.moe.router`) become zero for every token.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> lab = tiny_session("gemma4")
        >>> with lab.hooks(ablate_experts(0, [0, 1])):
        ...     ablated = lab.score("hello world").total_logprob
        >>> ablated != lab.score("hello world").total_logprob
        True
    """
    chosen = _indices(experts, "experts")
    layer = _layer(layer)
    return HookSet.of({f"blocks.{layer}.moe.router": AblateExperts(layer, chosen)})


def add(vector: Any, layer: int, scale: float = 1.0,
        positions: Iterable[int] | int | None = None) -> HookSet:
    """Steer: add `scale * vector` to the residual stream leaving block `layer`
    (`blocks.{layer}.resid_post`), at every position (`<bos>` included) when `positions` is
    None, else at those absolute positions (also while decoding).

    Example:
        >>> import numpy as np
        >>> from gemma_lab.testing import tiny_session
        >>> lab = tiny_session()
        >>> with lab.hooks(add(np.ones(32), layer=0, scale=2.0)):
        ...     steered = lab.score("hello world").total_logprob
        >>> steered != lab.score("hello world").total_logprob
        True
    """
    layer = _layer(layer)
    scale = validate.number(scale, "scale")
    array = _vector(vector, "The steering vector")
    if array.ndim != 1:
        raise InputError(f"The steering vector must be one-dimensional [hidden], got shape "
                         f"{array.shape}.")
    name = f"blocks.{layer}.resid_post"
    return HookSet.of({name: Add(name, array, scale, _positions(positions))})


def patch(cache: Any, names: str | Sequence[str] | None = None,
          positions: Iterable[int] | int | None = None) -> HookSet:
    """Write the activations of `names` from `cache` (another run's `ActivationCache`) into
    this run, at `positions` (every position the cached run has when None); `names=None`
    takes every point in the cache except attention patterns.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> lab = tiny_session()
        >>> clean = lab.run_with_cache("hello world", names=["blocks.1.resid_post", "final_norm"])
        >>> with lab.hooks(patch(clean, "blocks.1.resid_post")):
        ...     patched = lab.run_with_cache("hello there", names=["final_norm"])
        >>> n = min(len(clean.tokens), len(patched.tokens))
        >>> bool(np.allclose(patched["final_norm"][:n], clean["final_norm"][:n], atol=1e-5))
        True
    """
    if not hasattr(cache, "values") or not hasattr(cache, "tokens"):
        raise InputError("patch() takes an ActivationCache: cache = lab.run_with_cache(text, "
                         "names=[...]).")
    if names is None:  # every point the cache holds that can be written position by position
        chosen = [name for name in cache if not name.endswith("attn.pattern")]
    else:
        chosen = validate.point_names(names)
    fns = {}
    for name in chosen:
        if name not in cache.values:
            raise InputError(f"The cache has no {name!r} (it holds {len(cache)} points). "
                             f"Run lab.run_with_cache(text, names=[{name!r}]).")
        if name.endswith("attn.pattern"):
            raise InputError("Patching attn.pattern is not supported (its key axis is the "
                             "sequence); patch blocks.{l}.attn.z instead.")
        fns[name] = Patch(name, np.asarray(cache[name], dtype="float32"), _positions(positions))
    if not fns:
        raise InputError("patch() needs at least one point name.")
    return HookSet.of(fns)




def sae_splice(sae: Any, ablate: Iterable[int] | int | None = None,
               clamp: Mapping[int, float] | None = None,
               keep_error: bool | None = None) -> HookSet:
    """Splice an SAE in at its hook point: the value becomes the SAE's reconstruction, with
    features `ablate` switched off and features in `clamp` ({feature: activation}) held at a
    value. With features edited the SAE's error term is added back by default
    (`keep_error`), so only those features' decoder directions change the run.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> from gemma_lab.sae import SAE
        >>> lab = tiny_session()
        >>> exact = SAE.identity_like(32, hook="blocks.0.resid_post", seed=0)
        >>> with lab.hooks(sae_splice(exact)):
        ...     spliced = lab.score("hello world").total_logprob
        >>> abs(spliced - lab.score("hello world").total_logprob) < 1e-3
        True
    """
    from gemma_lab.sae.splice import splice

    return HookSet.of(splice(sae, ablate=ablate, clamp=clamp, keep_error=keep_error))


__all__ = ["MODES", "HookSet", "ablate_experts", "ablate_heads", "ablate_neurons", "add",
           "patch", "sae_splice"]
