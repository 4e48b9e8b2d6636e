"""The activations an SAE reads: the values of one hook point over many texts, run in
batches (right-padded rows of similar length, as batched scoring runs them).

    for group in activation_batches(runtime, "blocks.6.resid_post", id_lists):
        for index, x in group:      # x: float32 [position, d] of id_lists[index], <bos> first
            ...

Hooks in force apply, as they do for one text.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gemma_lab.backend import import_keras, to_numpy
from gemma_lab.decoding import bucket_length
from gemma_lab.forward import ForwardPass, HookSet, compiled_pass

if TYPE_CHECKING:
    from gemma_lab.runtime import ModelRuntime

# One batch: at most this many texts and this many padded tokens (a longer text goes alone).
BATCH_ROWS = 8
BATCH_TOKENS = 2048


def _as_float32(value: Any) -> Any:
    return import_keras().ops.cast(value, "float32")


def _rows(n: int) -> int:
    """A row count rounded up to a power of two (fewer shapes to compile)."""
    return 1 << max(n - 1, 0).bit_length()


def record_rows(runtime: ModelRuntime, rows: Sequence[Sequence[int]], hook: str,
                length: int) -> np.ndarray:
    """The values of `hook` for each id sequence in `rows`, right-padded to `length`:
    float32 [row, length, ...] (rows padded to a power of two; positions past a row's
    length are padding).

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> record_rows(tiny_runtime(), [[2, 10, 11], [2, 5]], "embed", 32).shape
        (2, 32, 32)
    """
    hooks = runtime.active_hooks | HookSet.of(records={hook: _as_float32})

    def forward(run: ForwardPass, token_ids: Any, padding_mask: Any) -> dict[str, Any]:
        hidden = run.sequence(token_ids, padding_mask)
        if hook == "logits":  # the backbone stops at final_norm; unembedding records it
            run.unembed(hidden)
        return run.take_records()

    compiled = runtime.compiled("sae_activations", lambda run: compiled_pass(run, forward),
                                hooks)
    token_ids = np.zeros((_rows(len(rows)), length), dtype="int32")
    mask = np.zeros_like(token_ids)
    for row, ids in enumerate(rows):
        token_ids[row, :len(ids)], mask[row, :len(ids)] = ids, 1
    return to_numpy(compiled(token_ids, mask)[hook])


def activation_batches(runtime: ModelRuntime, hook: str, id_lists: Sequence[Sequence[int]]
                       ) -> Iterator[list[tuple[int, np.ndarray]]]:
    """The values of `hook` for every id sequence, one batch at a time: each batch is a
    list of (index into `id_lists`, float32 [position, d]) for texts of similar length.

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> batches = list(activation_batches(tiny_runtime(), "embed", [[2, 5, 6], [2, 7]]))
        >>> sorted((i, x.shape) for batch in batches for i, x in batch)
        [(0, (3, 32)), (1, (2, 32))]
    """
    limit = runtime.context_length
    order = sorted(range(len(id_lists)), key=lambda i: len(id_lists[i]))
    while order:
        group: list[int] = []
        length = 0
        for i in order:
            wider = bucket_length(len(id_lists[i]), limit)
            if group and (len(group) == BATCH_ROWS
                          or _rows(len(group) + 1) * wider > max(BATCH_TOKENS, wider)):
                break
            group.append(i)
            length = wider
        order = order[len(group):]
        values = record_rows(runtime, [id_lists[i] for i in group], hook, length)
        yield [(i, values[row, :len(id_lists[i])].reshape(len(id_lists[i]), -1))
               for row, i in enumerate(group)]


def activations_at(runtime: ModelRuntime, hook: str, ids: Sequence[int]) -> np.ndarray:
    """The values of point `hook` for one id sequence (hooks in force apply): [position, d].

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> activations_at(tiny_runtime(), "embed", [2, 5, 6]).shape
        (3, 32)
    """
    from gemma_lab.inspect.activations import record_token_ids

    values = record_token_ids(runtime, list(ids), [hook])[hook][:len(ids)]
    return values.reshape(len(ids), -1)


__all__ = ["BATCH_ROWS", "BATCH_TOKENS", "activation_batches", "activations_at", "record_rows"]
