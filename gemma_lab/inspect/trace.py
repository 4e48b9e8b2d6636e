"""Tracing a text: one forward pass that records attention probabilities, the residual
stream and the logit lens, read from the forward pass's hook points."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gemma_lab import validate
from gemma_lab.backend import import_keras, to_numpy
from gemma_lab.decoding import bucket_length, padded
from gemma_lab.errors import InputError
from gemma_lab.forward import ForwardPass, HookSet, compiled_pass
from gemma_lab.inspect.lens import LogitLens
from gemma_lab.inspect.records import Trace

if TYPE_CHECKING:
    from gemma_lab.runtime import ModelRuntime

# Full final logits are kept only up to this many values (positions × vocabulary);
# beyond it the logit lens' last row carries the final top-k instead.
MAX_LOGITS = 2**21
# Refuse traces whose attention arrays alone would exceed this many bytes.
MAX_ATTENTION_BYTES = 4 * 2**30


class Tracer:
    """Compiled trace functions of one model, one per (layers, heads) selection and hook set.

    The trace is the model's own forward pass (`ForwardPass.sequence`) recording
    `blocks.{l}.resid_pre` for every block, the last block's `resid_post` and the chosen
    layers' `attn.pattern` (heads picked inside the compiled graph).
    """

    def __init__(self, runtime: ModelRuntime):
        self.runtime = runtime
        self.num_layers = runtime.adapter.num_layers
        self.lens = LogitLens(runtime.forward_pass(), k=runtime.top_k)
        self._forwards: dict[tuple[Any, ...], Any] = {}

    def forward(self, layers: tuple[int, ...], heads: tuple[int, ...], hooks: HookSet) -> Any:
        key = (layers, heads, hooks)
        if key not in self._forwards:
            ops = import_keras().ops
            picked = np.asarray(heads, "int32")
            records: dict[str, Any] = {f"blocks.{layer}.resid_pre": None
                                       for layer in range(self.num_layers)}
            records[f"blocks.{self.num_layers - 1}.resid_post"] = None
            for layer in layers:
                records[f"blocks.{layer}.attn.pattern"] = (
                    lambda value: ops.take(value[0], picked, axis=0))
            run = self.runtime.forward_pass(hooks | HookSet.of(records=records))
            self._forwards[key] = compiled_pass(
                run, lambda run, token_ids, padding_mask: self._forward_fn(
                    run, token_ids, padding_mask, layers, len(heads)))
        return self._forwards[key]

    def _forward_fn(self, run: ForwardPass, token_ids: Any, padding_mask: Any,
                    layers: tuple[int, ...], num_heads: int) -> tuple[Any, Any]:
        """Residual stream [depth, position, hidden] and attention [layer, head, q, k]."""
        ops = import_keras().ops
        run.sequence(token_ids, padding_mask)
        records = run.take_records()
        last = self.num_layers - 1
        residual = [records[f"blocks.{layer}.resid_pre"][0] for layer in range(self.num_layers)]
        residual.append(records[f"blocks.{last}.resid_post"][0])
        attention = [records[f"blocks.{layer}.attn.pattern"] for layer in layers]
        length = ops.shape(token_ids)[1]
        stacked = (ops.cast(ops.stack(attention), "float32") if attention
                   else ops.zeros((0, num_heads, length, length), "float32"))
        return ops.cast(ops.stack(residual), "float32"), stacked


def tracer_for(runtime: ModelRuntime) -> Tracer:
    """The runtime's `Tracer`, built on first use and kept with its compiled functions."""
    return runtime.compiled("trace", lambda _: Tracer(runtime))


def _selection(values: Sequence[int] | int | None, count: int, what: str) -> tuple[int, ...]:
    """Indices 0..count - 1 (or counted from the end, -1 the last), None for all."""
    return validate.indices(values, count, what, negative=True)


def trace_text(runtime: ModelRuntime, text: str, layers: Sequence[int] | int | None = None,
               heads: Sequence[int] | int | None = None, ids: Sequence[int] | None = None,
               speakers: Sequence[str] = ()) -> Trace:
    """Run `text` (after <bos>) once through the model and record what happens inside.

    `layers` / `heads` choose which attention matrices to keep (default: all); the residual
    stream and logit lens always cover every layer. See `Trace` for the fields. `ids` (with
    `<bos>`), when given, are traced as they are (a chat transcript's, `speakers` per id).

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> t = trace_text(tiny_runtime("gemma3"), "hello world", layers=[1], heads=[0, 2])
        >>> t.attention.shape[:2], t.layers, t.heads
        ((1, 2), (1,), (0, 2))
    """
    if not isinstance(text, str) or not text:
        raise InputError("trace() needs a non-empty string to trace.")
    validate.text(text, "The text")
    shape = runtime.adapter.shape
    tokenizer = runtime.tokenizer
    ids = list(ids) if ids is not None else tokenizer.encode(text, add_bos=True)
    n = len(ids)
    if n > runtime.context_length:
        raise InputError(f"The text has {n} tokens, more than the model's context of "
                         f"{runtime.context_length}. Trace a shorter text.")
    layers = _selection(layers, shape.num_layers, "layers")
    heads = _selection(heads, shape.num_heads, "heads")
    length = bucket_length(n, runtime.context_length)  # the compiled pass runs padded
    attention_bytes = 4 * len(layers) * len(heads) * length * length
    if attention_bytes > MAX_ATTENTION_BYTES:
        raise InputError(
            f"Attention for {len(layers)} layers × {len(heads)} heads over {n} tokens (padded "
            f"to {length}) needs {attention_bytes / 2**30:.1f} GiB, more than the limit of "
            f"{MAX_ATTENTION_BYTES / 2**30:.0f} GiB. Pass layers=[...] and/or heads=[...] to "
            "trace fewer, or a shorter text."
        )
    # The forward pass itself, the attention kept and the residual stream of every layer.
    validate.fits_memory(
        validate.forward_bytes(shape, 1, length) + attention_bytes
        + 4 * (shape.num_layers + 1) * length * shape.hidden_dim,
        f"Tracing {n} tokens", "Trace a shorter text, or fewer layers=[...] / heads=[...].")

    tracer = tracer_for(runtime)
    residual, attention = to_numpy(tracer.forward(layers, heads, runtime.active_hooks)(
        *padded(ids, length)))
    residual = residual[:, :n]
    attention = attention[:, :, :n, :n]

    # Position t's lens is judged on token t + 1; the last position has none.
    depths = residual.shape[0]
    targets = np.tile(np.asarray([*ids[1:], 0], dtype="int32"), depths)
    top_ids, top_probs, target_probs = tracer.lens(residual.reshape(depths * n, -1), targets)
    k = top_ids.shape[-1]
    top_ids = top_ids.reshape(depths, n, k)
    top_probs = top_probs.reshape(depths, n, k)
    target_probs = target_probs.reshape(depths, n)
    target_probs[:, -1] = np.nan
    pieces = np.vectorize(tokenizer.piece, otypes=[object])(top_ids) if top_ids.size else top_ids

    small = n * shape.vocabulary_size <= MAX_LOGITS
    logits = tracer.lens.logits(residual[-1]) if small else None
    return Trace(
        text=text,
        tokens=tuple(tokenizer.pieces(ids)),
        token_ids=tuple(int(i) for i in ids),
        layers=layers,
        heads=heads,
        windows=tuple(runtime.adapter.sliding_window(layer) for layer in layers),
        attention=attention,
        residual=residual,
        logits=logits,
        lens_top_ids=top_ids,
        lens_top_tokens=pieces.astype(str) if pieces.size else np.zeros((depths, n, 0), str),
        lens_top_probs=top_probs,
        lens_target_probs=target_probs,
        metadata=runtime.metadata(),
        speakers=tuple(speakers),
    )
