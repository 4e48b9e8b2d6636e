"""Sampling the next token inside the compiled decode loop, with Keras ops on any backend.

`choose(ops, row, params, position, filtered)` draws one token from softmax(row / T),
restricted to the top-k tokens and then to the smallest most-likely set whose mass reaches
top-p (the order the host sampler used: top-k first, top-p among those, renormalised):

- The randomness is a counter-based hash of (seed, position): the same seed gives the same
  tokens however the steps are split into compiled calls, and no RNG state is carried.
- Inverse-CDF sampling in two stages (a block of the vocabulary, then a token inside it):
  two uniforms and sums over the vocabulary, no sort and no per-token logarithms. On XLA CPU a
  Gumbel-max draw over 262k tokens costs ~5x more.
- top-k / top-p become one threshold on the scaled logits, found among the `CANDIDATES`
  largest ones; when the top-p set reaches beyond them (a very flat distribution) the
  threshold comes from the whole sorted row instead (exact, slower, rare).

Only the chosen id leaves the graph; its log-probability and rank under the model's own
(unscaled) distribution are computed next to it by the caller.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CANDIDATES = 256  # top-k / top-p thresholds are searched among this many largest logits
_BLOCK = 512  # vocabulary block of the two-stage draw


def _mix(ops: Any, value: Any) -> Any:
    """A 32-bit integer hash ("lowbias32"), in int32 with wrapping multiplies and logical
    shifts written as arithmetic shifts plus masks, so every backend computes the same bits."""
    value = ops.bitwise_xor(value, ops.bitwise_and(ops.right_shift(value, 16), 0xFFFF))
    value = ops.multiply(value, ops.convert_to_tensor(0x7FEB352D, "int32"))
    value = ops.bitwise_xor(value, ops.bitwise_and(ops.right_shift(value, 15), 0x1FFFF))
    value = ops.multiply(value, ops.convert_to_tensor(0x846CA68B - (1 << 32), "int32"))
    return ops.bitwise_xor(value, ops.bitwise_and(ops.right_shift(value, 16), 0xFFFF))


def uniform(ops: Any, seed: Any, position: Any, stream: int) -> Any:
    """A float32 in (0, 1) from (seed, position, stream): 24 random bits.

    Example:
        >>> from gemma_lab.backend import import_keras, to_numpy
        >>> ops = import_keras().ops
        >>> u = [float(to_numpy(uniform(ops, ops.convert_to_tensor(7, "int32"),
        ...                               ops.convert_to_tensor(i, "int32"), 0)))
        ...      for i in range(3)]
        >>> all(0 < x < 1 for x in u), len(set(u))
        (True, 3)
    """
    value = _mix(ops, ops.bitwise_xor(_mix(ops, seed), ops.convert_to_tensor(stream + 1,
                                                                              "int32")))
    value = _mix(ops, ops.add(value, position))
    bits = ops.bitwise_and(ops.right_shift(value, 8), 0xFFFFFF)
    return (ops.cast(bits, "float32") + 0.5) / 16777216.0


def params(temperature: float, top_k: int | None, top_p: float | None, seed: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Host arrays the compiled loop takes: float32 [temperature, top_p] and int32
    [top_k (0: all), seed]. One compilation serves every value.

    Example:
        >>> params(0.7, None, 0.9, 3)[1].tolist()
        [0, 3]
    """
    floats = np.array([temperature, 1.0 if top_p is None else top_p], dtype="float32")
    ints = np.array([0 if top_k is None else top_k, int(seed) % (1 << 31)], dtype="int32")
    return floats, ints


def _threshold(ops: Any, values: Any, top_k: Any, top_p: Any, mass_all: Any) -> Any:
    """The smallest scaled logit that top-k then top-p keep, given the row's largest `values`
    (sorted, descending; their first is the row's maximum) and the whole row's mass
    `mass_all` (of exp(value - maximum)): exact when `values` holds the top-k set, or, with
    no top-k, the whole top-p set."""
    size = int(values.shape[-1])
    position = ops.arange(size, dtype="int32")
    in_k = ops.logical_or(top_k <= 0, position < top_k)
    weights = ops.where(in_k, ops.exp(values - values[0]), 0.0)
    mass_k = ops.where(top_k > 0, ops.sum(weights), mass_all)
    before = ops.cumsum(weights) - weights  # mass of the tokens above each one
    keep = ops.logical_and(in_k, before < top_p * mass_k)
    last = ops.maximum(ops.sum(ops.cast(keep, "int32")) - 1, 0)
    return ops.take(values, last)


def _largest(ops: Any, scaled: Any, enough: Any, steps: int = 40) -> Any:
    """The largest value t of `scaled` with `enough(t)` (True at the row's minimum, and for
    every t below one where it holds), by bisection: `steps` passes over the row, no sort (a
    sort of 262k values: ~50 ms on XLA CPU)."""
    def body(_: Any, bounds: tuple[Any, Any]) -> tuple[Any, Any]:
        low, high = bounds
        middle = (low + high) / 2
        ok = enough(middle)
        return ops.where(ok, middle, low), ops.where(ok, high, middle)

    low, _ = ops.fori_loop(0, steps, body, (ops.min(scaled), ops.max(scaled)))
    return ops.min(ops.where(scaled >= low, scaled, float("inf")))


def _bisected_threshold(ops: Any, scaled: Any, weights: Any, top_k: Any, top_p: Any) -> Any:
    """`_threshold` over the whole row, for any top-k and top-p."""
    floor_k = ops.cond(
        top_k > 0,
        lambda: _largest(ops, scaled, lambda t: ops.sum(ops.cast(scaled >= t, "int32")) >= top_k),
        lambda: ops.min(scaled))
    kept = ops.where(scaled >= floor_k, weights, 0.0)
    target = top_p * ops.sum(kept)
    floor_p = _largest(ops, scaled, lambda t: ops.sum(ops.where(scaled >= t, kept, 0.0)) >= target)
    return ops.maximum(floor_k, floor_p)


def choose(ops: Any, row: Any, floats: Any, ints: Any, position: Any, filtered: bool) -> Any:
    """Sample one token id (int32) from the float32 logits `row` [vocabulary].

    `floats` / `ints` are `params(...)` as tensors; `position` keys the randomness;
    `filtered`: whether top-k / top-p may apply (False compiles the plain temperature draw).
    """
    temperature, top_p = floats[0], floats[1]
    top_k, seed = ints[0], ints[1]
    vocabulary = int(row.shape[-1])
    scaled = row / ops.maximum(temperature, 1e-6)
    weights = ops.exp(scaled - ops.max(scaled))
    if filtered:
        size = min(CANDIDATES, vocabulary)
        # The values gathered by index: XLA CPU turns a top-k whose values have more than
        # one user into a sort of the whole row (~50 ms at 262k tokens, against ~0.5).
        values = ops.take(scaled, ops.top_k(scaled, size)[1])
        total = ops.sum(weights)
        floor = _threshold(ops, values, top_k, top_p, total)
        if size < vocabulary:
            # Beyond the candidates: a top-k larger than them, or (no top-k) a top-p set
            # whose mass they do not reach (very flat rows): bisect over the whole row.
            reached = ops.sum(ops.exp(values - values[0])) >= top_p * total
            beyond = ops.logical_or(top_k > size,
                                    ops.logical_and(top_k <= 0, ops.logical_not(reached)))
            floor = ops.cond(beyond,
                             lambda: _bisected_threshold(ops, scaled, weights, top_k, top_p),
                             lambda: floor)
        weights = ops.where(scaled >= floor, weights, 0.0)
    blocks = -(-vocabulary // _BLOCK)
    padded = ops.pad(weights, [[0, blocks * _BLOCK - vocabulary]])
    table = ops.reshape(padded, (blocks, _BLOCK))
    block_mass = ops.sum(table, axis=-1)
    target = uniform(ops, seed, position, 0) * ops.sum(block_mass)
    block_ends = ops.cumsum(block_mass)
    block = ops.minimum(ops.sum(ops.cast(block_ends <= target, "int32")), blocks - 1)
    # a block with no mass is never chosen: step back to the last one that has some
    block = ops.minimum(block, ops.max(ops.where(block_mass > 0,
                                                 ops.arange(blocks, dtype="int32"), 0)))
    inside = ops.take(table, block, axis=0)
    inside_ends = ops.cumsum(inside)
    inner = uniform(ops, seed, position, 1) * inside_ends[-1]
    offset = ops.sum(ops.cast(inside_ends <= inner, "int32"))
    offset = ops.minimum(offset, ops.max(ops.where(inside > 0,
                                                   ops.arange(_BLOCK, dtype="int32"), 0)))
    return ops.cast(block * _BLOCK + offset, "int32")


__all__ = ["CANDIDATES", "choose", "params", "uniform"]
