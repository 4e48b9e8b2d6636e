"""`run_with_cache`: one forward pass over a text that keeps the values of chosen hook points.

The values are NumPy arrays of the one sequence, position first (`<bos>` at 0), in float32:
`cache["blocks.3.resid_post"]` is [position, hidden], `cache["blocks.3.attn.pattern"]` is
[head, query, key], `cache["blocks.3.attn.z"]` is [position, head, head_dim].
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gemma_lab import validate
from gemma_lab.backend import import_keras, to_numpy
from gemma_lab.decoding import bucket_length, padded
from gemma_lab.errors import InputError
from gemma_lab.forward import ForwardPass, HookSet, check_names, compiled_pass

if TYPE_CHECKING:
    from gemma_lab.runtime import ModelRuntime

# Refuse caches whose arrays would exceed this many bytes (float32).
MAX_CACHE_BYTES = 4 * 2**30
# Points listed in a cache's notebook summary.
MAX_SUMMARY_POINTS = 512


@dataclass(frozen=True)
class ActivationCache(Mapping[str, np.ndarray]):
    """Hook-point values of one forward pass over `text`: a read-only mapping name → array.

    Attributes:
        text: the text run (after `<bos>`).
        tokens: the piece of each position; token_ids: their ids.
        values: point name → float32 array, position first (`pattern`: [head, q, k]).
        metadata: model, weights hash, backend, dtype, adapter.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> cache = tiny_session().run_with_cache("hello world", names=["blocks.0.resid_post"])
        >>> cache["blocks.0.resid_post"].shape == (len(cache.tokens), 32)
        True
    """

    text: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    values: Mapping[str, np.ndarray] = field(repr=False)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.values:
            import difflib

            near = difflib.get_close_matches(str(name), list(self.values), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, near))}?" if near else ""
            raise KeyError(f"{name!r} is not in this cache.{hint} Pass names=[...] to "
                           "run_with_cache to keep it.")
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON payload (kind "cache"; see gemma_lab.schema): per point its shape, mean
        and max |value|, and the RMS at each position (not for attn.pattern)."""
        from gemma_lab.render import payload, token_entry

        points = []
        for name, value in list(self.values.items())[:MAX_SUMMARY_POINTS]:
            row: dict[str, Any] = {"name": name, "shape": list(value.shape),
                                   "mean_abs": float(np.abs(value).mean()),
                                   "max_abs": float(np.abs(value).max())}
            if not name.endswith("attn.pattern"):
                flat = value.reshape(value.shape[0], -1).astype("float64")
                row["rms_by_position"] = np.sqrt((flat ** 2).mean(axis=1)).tolist()
            points.append(row)
        tokens = [token_entry("prompt", piece, token_id, piece=piece)
                  for piece, token_id in zip(self.tokens, self.token_ids, strict=True)]
        return payload("cache", self.text, tokens, dict(self.metadata),
                       summary={"points": len(self.values), "positions": len(self.tokens)},
                       cache={"points": points,
                              "truncated": len(self.values) > MAX_SUMMARY_POINTS})

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from gemma_lab.render import mimebundle

        return mimebundle(self.to_dict(), include, exclude)

    def __repr__(self) -> str:
        return (f"<ActivationCache {len(self.values)} points over {len(self.tokens)} "
                f"positions of {self.text[:40]!r}>")


def _chosen(runtime: ModelRuntime, names: Sequence[str] | Callable[[str], bool] | None
            ) -> tuple[str, ...]:
    every = runtime.hook_points()
    if names is None:
        return tuple(every)
    if callable(names):
        chosen = tuple(name for name in every if validate.predicate(names, name))
        if not chosen:
            raise InputError("names= matched no hook point; lab.hook_points() lists them.")
        return chosen
    return check_names(validate.point_names(names), runtime.adapter.num_layers,
                       runtime.adapter.point_names())


def _first_as_float32(value: Any) -> Any:
    return import_keras().ops.cast(value[0], "float32")


def record_token_ids(runtime: ModelRuntime, ids: Sequence[int], names: Sequence[str],
                     length: int | None = None) -> dict[str, np.ndarray]:
    """The values of points `names` (checked) for token ids `ids` (`<bos>` first), right-padded
    to `length` (default: the bucket length): float32 arrays [length, ...] ([head, length,
    length] for attn.pattern), positions past `len(ids)` are padding. Hooks in force apply.

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> record_token_ids(tiny_runtime(), [2, 10, 11], ["embed"])["embed"].shape
        (32, 32)
    """
    chosen = tuple(names)
    # One transform function for every call: equal hook sets reuse one compiled program.
    hooks = runtime.active_hooks | HookSet.of(records={name: _first_as_float32
                                                       for name in chosen})

    def forward(run: ForwardPass, token_ids: Any, padding_mask: Any) -> dict[str, Any]:
        hidden = run.sequence(token_ids, padding_mask)
        if "logits" in chosen:  # the backbone stops at final_norm; unembedding records it
            run.unembed(hidden)
        return run.take_records()

    compiled = runtime.compiled("run_with_cache", lambda run: compiled_pass(run, forward), hooks)
    length = length or bucket_length(len(ids), runtime.context_length)
    return {name: to_numpy(value) for name, value in compiled(*padded(ids, length)).items()}


def run_with_cache(runtime: ModelRuntime,
                   text: str, names: Sequence[str] | Callable[[str], bool] | None = None,
                   ids: Sequence[int] | None = None) -> ActivationCache:
    """Run `text` (after `<bos>`) once and keep the values of `names` (a list, a predicate
    on names, or None for every point); hooks in force apply first. `ids` (with `<bos>`),
    when given, are run as they are (a chat transcript's exact ids).

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> cache = run_with_cache(tiny_runtime(), "hi", names=lambda n: n.endswith("attn.z"))
        >>> sorted(cache)
        ['blocks.0.attn.z', 'blocks.1.attn.z']
    """
    if not isinstance(text, str) or not text:
        raise InputError("run_with_cache() needs a non-empty string to run.")
    validate.text(text, "The text")
    chosen = _chosen(runtime, names)
    ids = list(ids) if ids is not None else runtime.tokenizer.encode(text, add_bos=True)
    n = len(ids)
    if n > runtime.context_length:
        raise InputError(f"The text has {n} tokens, more than the model's context of "
                         f"{runtime.context_length}. Use a shorter text.")
    shape = runtime.adapter.shape
    length = bucket_length(n, runtime.context_length)  # what the compiled pass records
    sizes = {"logits": shape.vocabulary_size, "attn.pattern": shape.num_heads * length}
    width = max(shape.hidden_dim, shape.mlp_dim)
    needed = sum(4 * length * next((v for k, v in sizes.items() if name.endswith(k)), width)
                 for name in chosen)
    if needed > MAX_CACHE_BYTES:
        raise InputError(f"Keeping {len(chosen)} points over {n} tokens (padded to {length}) "
                         f"needs {needed / 2**30:.1f} GiB, more than the limit of "
                         f"{MAX_CACHE_BYTES / 2**30:.0f} GiB. Pass names=[...] for fewer "
                         "points, or a shorter text.")
    validate.fits_memory(validate.forward_bytes(shape, 1, length) + needed,
                         f"Running {n} tokens with {len(chosen)} points kept",
                         "Pass names=[...] for fewer points, or a shorter text.")

    values = record_token_ids(runtime, ids, chosen)
    cut = {name: (value[:, :n, :n] if name.endswith("attn.pattern") else value[:n])
           for name, value in values.items()}
    return ActivationCache(
        text=text,
        tokens=tuple(runtime.tokenizer.pieces(ids)),
        token_ids=tuple(int(i) for i in ids),
        values={name: cut[name] for name in chosen},
        metadata=runtime.metadata(),
    )


__all__ = ["ActivationCache", "record_token_ids", "run_with_cache"]
