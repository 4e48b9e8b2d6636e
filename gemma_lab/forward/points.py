"""Hook-point names (TransformerLens style) and a `HookSet`: what a forward pass reads and
what it rewrites.

Every point is batch first:

| point                    | value                                   |
|--------------------------|-----------------------------------------|
| `embed`                  | token embeddings [batch, pos, hidden] (before the √hidden scale) |
| `blocks.{l}.resid_pre`   | residual stream entering block l [batch, pos, hidden] |
| `blocks.{l}.attn.q`      | queries after the projection [batch, pos, head, head_dim] |
| `blocks.{l}.attn.k|v`    | keys / values after the projection [batch, pos, kv_head, head_dim] |
| `blocks.{l}.attn.pattern`| attention probabilities [batch, head, query, key] |
| `blocks.{l}.attn.z`      | per-head output before the output projection [batch, pos, head, dim] |
| `blocks.{l}.attn_out`    | what attention adds to the residual [batch, pos, hidden] |
| `blocks.{l}.mlp.post`    | the MLP neurons, gelu(gate) · up [batch, pos, intermediate] |
| `blocks.{l}.mlp_out`     | what the MLP adds to the residual [batch, pos, hidden] |
| `blocks.{l}.resid_post`  | residual stream leaving block l [batch, pos, hidden] |
| `final_norm`             | the final RMSNorm's output [batch, pos, hidden] |
| `logits`                 | unembedded logits [batch, pos, vocabulary] |

In a cached decode step `pos` holds only the new rows (one per step), and `pattern`'s key axis
spans the whole cache; `HookContext.positions` says which absolute positions the rows are.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gemma_lab.errors import InputError

BLOCK_POINTS = (
    "resid_pre", "attn.q", "attn.k", "attn.v", "attn.pattern", "attn.z", "attn_out",
    "mlp.post", "mlp_out", "resid_post",
)
_BLOCK_NAME = re.compile(r"^blocks\.(\d+)\.(.+)$")

HookFn = Callable[[Any, "HookContext"], Any]


def point_names(num_layers: int,
                block_points: Callable[[int], Iterable[str]] | None = None) -> list[str]:
    """Every hook-point name of a model with `num_layers` decoder blocks, in forward order;
    `block_points(layer)` says which points a block has (default: `BLOCK_POINTS`).

    Example:
        >>> point_names(1)[:3], point_names(1)[-2:]
        (['embed', 'blocks.0.resid_pre', 'blocks.0.attn.q'], ['final_norm', 'logits'])
    """
    names = ["embed"]
    for layer in range(num_layers):
        points = BLOCK_POINTS if block_points is None else block_points(layer)
        names += [f"blocks.{layer}.{point}" for point in points]
    return [*names, "final_norm", "logits"]


def block_point(name: str) -> tuple[int, str] | None:
    """(layer, point) of a block hook-point name, or None for embed / final_norm / logits.

    Example:
        >>> block_point("blocks.3.attn.z"), block_point("logits")
        ((3, 'attn.z'), None)
    """
    match = _BLOCK_NAME.match(name)
    return (int(match.group(1)), match.group(2)) if match else None


def by_block(names: Iterable[str]) -> dict[int, set[str]]:
    """The block points among `names`, grouped by layer (ascending): what each adapter
    patches per block.

    Example:
        >>> by_block(["logits", "blocks.1.attn.z", "blocks.0.mlp_out", "blocks.1.resid_post"])
        {0: {'mlp_out'}, 1: {'attn.z', 'resid_post'}}
    """
    grouped: dict[int, set[str]] = {}
    for name in names:
        parsed = block_point(name)
        if parsed is not None:
            grouped.setdefault(parsed[0], set()).add(parsed[1])
    return dict(sorted(grouped.items()))


def check_names(names: Iterable[str], num_layers: int,
                known: Iterable[str] | None = None) -> tuple[str, ...]:
    """`names` if each is a hook point of the model (`known`, by default the points every
    Gemma has), else an `InputError` naming the nearest.

    Example:
        >>> check_names(["blocks.0.attn.z"], 2)
        ('blocks.0.attn.z',)
    """
    known = list(known) if known else point_names(num_layers)
    known_set = set(known)
    checked = []
    for name in names:
        if not isinstance(name, str) or name not in known_set:
            near = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, near))}?" if near else ""
            raise InputError(
                f"{name!r} is not a hook point of this model ({num_layers} blocks).{hint} "
                "lab.hook_points() lists them all.")
        checked.append(name)
    return tuple(checked)


@dataclass(frozen=True)
class ModelShape:
    """The sizes a hook must respect: what `HookSet.check` and the interventions test against.

    `names` lists the model's hook points (empty: `point_names(num_layers)`). Models whose
    layers differ (Gemma 4: wider heads, fewer KV heads in its global layers) give per-layer
    `head_dims` / `kv_heads`; `experts` and `per_layer_dim` size the MoE router and
    per-layer-embedding points.

    Example:
        >>> shape = ModelShape(2, 4, 2, 8, 32, 64, 100)
        >>> shape.per_position("blocks.1.attn.z"), shape.per_position("blocks.0.mlp.post")
        ((4, 8), (64,))
    """

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_dim: int
    mlp_dim: int
    vocabulary_size: int
    names: tuple[str, ...] = ()
    head_dims: tuple[int, ...] = ()
    kv_heads: tuple[int, ...] = ()
    experts: int = 0
    per_layer_dim: int = 0

    def layer_head_dim(self, layer: int | None) -> int:
        return self.head_dims[layer] if self.head_dims and layer is not None else self.head_dim

    def layer_kv_heads(self, layer: int | None) -> int:
        return self.kv_heads[layer] if self.kv_heads and layer is not None else self.num_kv_heads

    def per_position(self, name: str) -> tuple[int, ...] | None:
        """The shape of one position's value at point `name` (None for attn.pattern, whose
        key axis depends on the sequence)."""
        layer, point = block_point(name) or (None, name)
        head_dim, kv_heads = self.layer_head_dim(layer), self.layer_kv_heads(layer)
        return {
            "attn.q": (self.num_heads, head_dim),
            "attn.z": (self.num_heads, head_dim),
            "attn.k": (kv_heads, head_dim),
            "attn.v": (kv_heads, head_dim),
            "attn.pattern": None,
            "mlp.post": (self.mlp_dim,),
            "moe.router": (self.experts,),
            "ple.in": (self.per_layer_dim,),
            "logits": (self.vocabulary_size,),
        }.get(point, (self.hidden_dim,))

    def check_layer(self, layer: Any) -> int:
        if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool) or not (
                0 <= int(layer) < self.num_layers):
            raise InputError(f"Layer {layer!r} is out of range: this model has layers "
                             f"0..{self.num_layers - 1}.")
        return int(layer)

    def check_head(self, layer: int, head: Any) -> int:
        if not isinstance(head, (int, np.integer)) or isinstance(head, bool) or not (
                0 <= int(head) < self.num_heads):
            raise InputError(f"Head {head!r} of layer {layer} is out of range: this model has "
                             f"heads 0..{self.num_heads - 1} per layer.")
        return int(head)


@dataclass(frozen=True)
class HookContext:
    """What a hook function is told about the value it receives.

    Attributes:
        name: the hook point, e.g. "blocks.3.attn.z".
        layer: the block index, None outside the blocks.
        index: position of the first row (0 for a whole sequence; the cache index in a
            decode step); a backend tensor or an int.
        rows: how many positions the value holds.
        inputs: extra tensors the caller passed to this forward pass (e.g. the clean-run
            activations of an activation-patching sweep), so one compiled program serves
            many values; empty for ordinary calls.
    """

    name: str
    layer: int | None
    index: Any
    rows: Any
    inputs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def positions(self) -> Any:
        """The absolute position of each row, an int32 tensor [rows] (`<bos>` is 0)."""
        from gemma_lab.backend import import_keras

        ops = import_keras().ops
        return ops.arange(self.rows, dtype="int32") + ops.cast(self.index, "int32")


@dataclass(frozen=True)
class HookSet:
    """The hook functions and recorded points one compiled forward pass is built for.

    `fns` map a point to `fn(value, ctx) -> value` (None keeps the value); several for one
    point run in order. `records` name points whose value the pass returns, each with an
    optional in-graph transform applied first (e.g. picking heads). An empty HookSet compiles
    to exactly the model's own forward pass. Sets are hashable (functions by identity): the
    runtime keys its compiled code by them.

    Example:
        >>> hooks = HookSet.of({"logits": lambda value, ctx: value})
        >>> hooks.points(), HookSet().empty
        (frozenset({'logits'}), True)
    """

    fns: tuple[tuple[str, HookFn], ...] = ()
    records: tuple[tuple[str, Callable[[Any], Any] | None], ...] = ()

    @classmethod
    def of(cls, fns: Mapping[str, HookFn | Iterable[HookFn]] | None = None,
           records: Mapping[str, Callable[[Any], Any] | None] | Iterable[str] | None = None
           ) -> HookSet:
        pairs: list[tuple[str, HookFn]] = []
        for name, value in (fns or {}).items():
            for fn in (value if isinstance(value, (list, tuple)) else [value]):
                if not callable(fn):
                    raise InputError(f"The hook for {name!r} is {type(fn).__name__}, not a "
                                     "function fn(value, ctx) -> value.")
                pairs.append((name, fn))
        if records is None:
            recorded: list[tuple[str, Any]] = []
        elif isinstance(records, Mapping):
            recorded = list(records.items())
        else:
            recorded = [(name, None) for name in records]
        return cls(tuple(pairs), tuple(recorded))

    def __or__(self, other: HookSet | Mapping[str, Any]) -> HookSet:
        other = other if isinstance(other, HookSet) else HookSet.of(other)
        return HookSet(self.fns + other.fns, self.records + other.records)

    def __ror__(self, other: Mapping[str, Any]) -> HookSet:
        return HookSet.of(other) | self

    def check(self, shape: ModelShape) -> HookSet:
        """This set if every point exists in a model of `shape` and every hook that can
        check itself (`fn.check(shape)`, e.g. the ready-made interventions) fits it."""
        for _, fn in self.fns:  # first: their messages say which layer / head / size fits
            checker = getattr(fn, "check", None)
            if callable(checker):
                checker(shape)
        check_names(self.points(), shape.num_layers, shape.names)
        return self

    @property
    def empty(self) -> bool:
        return not self.fns and not self.records

    def points(self) -> frozenset[str]:
        """Every point this set touches (written or recorded)."""
        return frozenset(name for name, _ in self.fns) | frozenset(n for n, _ in self.records)

    def fns_for(self, name: str) -> list[HookFn]:
        return [fn for point, fn in self.fns if point == name]

    def recorded(self, name: str) -> bool:
        return any(point == name for point, _ in self.records)

    def transform_for(self, name: str) -> Callable[[Any], Any] | None:
        return next((t for point, t in self.records if point == name), None)


NO_HOOKS = HookSet()

__all__ = [
    "BLOCK_POINTS",
    "NO_HOOKS",
    "HookContext",
    "HookFn",
    "HookSet",
    "ModelShape",
    "block_point",
    "by_block",
    "check_names",
    "point_names",
]
