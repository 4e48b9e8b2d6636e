"""The one forward pass: keras-hub's own model call, with the hook points of a `HookSet`.

Every reader of the model goes through a `ForwardPass`: decoding (`prefill`, the cached
`step`, the compiled greedy loop), scoring and tracing (`sequence`), attribution (`sequence`
with the residual stream entering block 0 replaced). Each method calls keras-hub's own entry
point (`call_with_cache`, `_build_cache`, the backbone's functional call, the tied reverse
embedding) while the adapter's patches route the points through the hook set; they are
applied only around that call (under JAX and TensorFlow: only while it is traced) and taken
off afterwards, so the user's model object is left as it was. With no hooks the only patch is
the cheaper sliding-window mask (same values), and the compiled program is the model's own.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from gemma_lab.backend import compile_function, import_keras
from gemma_lab.errors import GemmaLabError, HookError, InputError
from gemma_lab.forward import sliding_mask
from gemma_lab.forward.patching import applied
from gemma_lab.forward.points import NO_HOOKS, HookContext, HookSet


class ForwardPass:
    """keras-hub's forward pass of one CausalLM with the hook points of `hooks`.

    `adapter` says where the points sit (`adapter_for`); `lock` serialises patching of the
    model's layers between threads. Recorded points (`HookSet.records`) of the last
    `sequence` call are in `records` (keyed by point name) until `take_records()`.

    Example:
        >>> import numpy as np
        >>> from gemma_lab.forward import adapter_for
        >>> from gemma_lab.testing import tiny_causal_lm
        >>> model = tiny_causal_lm("gemma3")
        >>> run = ForwardPass(model, adapter_for(model), HookSet.of(records=["blocks.1.attn.z"]))
        >>> hidden = run.sequence(np.array([[2, 10, 11]]), np.ones((1, 3), "int32"))
        >>> tuple(run.take_records()["blocks.1.attn.z"].shape)
        (1, 3, 4, 8)
    """

    def __init__(self, causal_lm: Any, adapter: Any, hooks: HookSet = NO_HOOKS,
                 lock: threading.RLock | None = None):
        self.causal_lm = causal_lm
        self.backbone = causal_lm.backbone
        self.adapter = adapter
        self.hooks = hooks
        self.records: dict[str, Any] = {}
        self._lock = lock or threading.RLock()
        self._index: Any = 0
        self._recording = False
        self._inputs: dict[str, Any] = {}
        # A hook on the attention pattern sees it over the whole cache, not a window of it.
        self._base_patches = sliding_mask.patches(
            adapter.blocks, windowed=not any(point.endswith("attn.pattern")
                                             for point in hooks.points()))
        self._hook_patches = adapter.patches(hooks, self._apply) if not hooks.empty else []
        parameters = inspect.signature(causal_lm._build_cache).parameters
        self._takes_padding_mask = "padding_mask" in parameters
        self._cache_layouts: dict[int, Any] = {}  # rows -> KV cache layout (`empty_cache`)
        # Text only: every other input `_build_cache` requires (images, audio) is None.
        self._cache_inputs = {name: None for name, parameter in list(parameters.items())[1:]
                              if parameter.default is inspect.Parameter.empty
                              and name != "padding_mask"}

    # --- the hook points --------------------------------------------------------------------
    def _apply(self, name: str, layer: int | None, value: Any) -> Any:
        ops = import_keras().ops
        rows = ops.shape(value)[2] if name.endswith("attn.pattern") else ops.shape(value)[1]
        context = HookContext(name=name, layer=layer, index=self._index, rows=rows,
                              inputs=self._inputs)
        for fn in self.hooks.fns_for(name):
            value = _checked(name, fn, value, context)
        if self._recording and self.hooks.recorded(name):
            transform = self.hooks.transform_for(name)
            self.records[name] = transform(value) if transform is not None else value
        return value

    @contextmanager
    def _installed(self, index: Any, recording: bool,
                   inputs: Mapping[str, Any] | None = None) -> Iterator[None]:
        with self._lock:
            self._index, self._recording, self._inputs = index, recording, dict(inputs or {})
            try:
                with applied(self._base_patches + self._hook_patches):
                    yield
            finally:
                self._index, self._recording, self._inputs = 0, False, {}

    # --- entry points -----------------------------------------------------------------------
    def sequence(self, token_ids: Any, padding_mask: Any,
                 inputs: Mapping[str, Any] | None = None) -> Any:
        """The final-normed hidden states [batch, length, hidden] of whole sequences
        (keras-hub's backbone call); recorded points land in `records`. `inputs` reach the
        hook functions as `ctx.inputs`."""
        with self._installed(0, recording=True, inputs=inputs):
            return self.backbone(self.adapter.backbone_inputs(token_ids, padding_mask))

    def unembed(self, hidden: Any) -> Any:
        """Logits of final-normed hidden states (the tied reverse embedding, soft-capped
        where the model caps them); the `logits` point applies."""
        with self._installed(0, recording=True):
            return self.adapter.unembed(hidden)

    def residual_logits(self, residual: Any) -> Any:
        """Logits read straight from residual-stream states (the model's final norm, then
        `unembed`): the logit lens."""
        with self._installed(0, recording=True):
            return self.adapter.unembed(self.adapter.final_norm(residual))

    def prefill(self, token_ids: Any, padding_mask: Any) -> Any:
        """A KV cache of `token_ids`' length filled with the prompt (keras-hub's
        `_build_cache`)."""
        self._no_records("prefill")
        with self._installed(0, recording=False):
            return self._build_cache(token_ids, padding_mask)

    def _build_cache(self, token_ids: Any, padding_mask: Any) -> Any:
        """keras-hub's `_build_cache` of text (the padding mask where it takes one)."""
        if self._takes_padding_mask:
            _, cache = self.causal_lm._build_cache(token_ids, padding_mask=padding_mask,
                                                   **self._cache_inputs)
        else:
            _, cache = self.causal_lm._build_cache(token_ids)
        return cache

    def step(self, token_ids: Any, cache: Any, index: Any) -> tuple[Any, Any]:
        """(logits, cache) of `token_ids` at position `index` on a filled cache
        (keras-hub's `call_with_cache`)."""
        self._no_records("decode")
        with self._installed(index, recording=False):
            extra = (self.adapter.step_inputs(token_ids, cache)
                     if hasattr(self.adapter, "step_inputs") else {})
            logits, _, cache = self.causal_lm.call_with_cache(token_ids, cache, index, **extra)
        return logits, cache

    def empty_cache(self, rows: int, length: int) -> Any:
        """The zero KV cache `_build_cache` starts from, for `rows` sequences of `length`
        positions, for `step` to fill chunk by chunk (a chunked prefill). Its layout (a
        tensor or nested tuple, which axis holds the positions) is read off keras-hub's own
        `_build_cache` of 2 and 3 tokens (`_plain_cache`, no hooks), so every family's
        cache comes out as keras-hub makes it."""
        keras = import_keras()
        if rows not in self._cache_layouts:
            small, larger = (self._plain_cache(rows, n) for n in (2, 3))
            shapes = [[None if x != y else int(x) for x, y in zip(a.shape, b.shape, strict=True)]
                      for a, b in zip(keras.tree.flatten(small), keras.tree.flatten(larger),
                                      strict=True)]
            self._cache_layouts[rows] = small, shapes
        structure, shapes = self._cache_layouts[rows]
        return keras.tree.pack_sequence_as(structure, [
            keras.ops.zeros([length if n is None else n for n in shape], leaf.dtype)
            for shape, leaf in zip(shapes, keras.tree.flatten(structure), strict=True)])

    def _plain_cache(self, rows: int, length: int) -> Any:
        """keras-hub's `_build_cache` of `length` tokens outside any patch: its shapes
        only (an abstract trace) on JAX and TensorFlow; on torch the real thing, as its
        abstract trace silently runs the model when the meta device fails (Gemma 3n)."""
        import numpy as np

        keras = import_keras()

        def build(ids: Any) -> Any:
            return self._build_cache(ids, keras.ops.ones_like(ids))

        if keras.config.backend() == "torch":
            return build(np.full((rows, length), 2, dtype="int32"))
        from keras.src.backend import KerasTensor, compute_output_spec

        return compute_output_spec(build, KerasTensor((rows, length), dtype="int32"))

    def take_records(self) -> dict[str, Any]:
        records, self.records = self.records, {}
        return records

    def _no_records(self, what: str) -> None:
        if self.hooks.records:
            raise InputError(f"Recording hook points is for whole sequences, not {what}: use "
                             "lab.run_with_cache(text).")


def _checked(name: str, fn: Callable[..., Any], value: Any, context: HookContext) -> Any:
    """`fn(value, context)` as the value of point `name`: None keeps `value`; a result of
    another shape, or not a floating-point tensor, is a `HookError` naming the point."""
    keras = import_keras()
    ops = keras.ops
    try:
        result = fn(value, context)
    except GemmaLabError as err:
        raise _plain(err) from err.__cause__
    except Exception as err:  # a user's hook: say where it failed, keep the cause
        hint = (" Hooks run inside compiled code: compute with keras.ops, not NumPy."
                if "Tracer" in type(err).__name__ or "tracer" in str(err).lower() else "")
        raise _plain(HookError(
            f"The hook {getattr(fn, '__name__', type(fn).__name__)!r} on {name!r} raised "
            f"{type(err).__name__}: {err}.{hint} The session and its model are unchanged; fix "
            "the hook and run again.")) from err
    if result is None:
        return value
    result = ops.convert_to_tensor(result)
    if tuple(result.shape) != tuple(value.shape):
        raise _plain(HookError(
            f"The hook on {name!r} returned shape {tuple(result.shape)}; it must keep the "
            f"shape {tuple(value.shape)}."))
    dtype = keras.backend.standardize_dtype(result.dtype)
    if "float" not in dtype:
        expected = keras.backend.standardize_dtype(value.dtype)
        raise _plain(HookError(f"The hook on {name!r} returned dtype {dtype}; it must return "
                               f"floating-point values like its input ({expected})."))
    return ops.cast(result, value.dtype)


def _plain(err: GemmaLabError) -> GemmaLabError:
    """`err` marked so Keras' layer-call wrappers re-raise it with its own one-line message
    (instead of a copy wrapped in every layer's argument dump)."""
    err._keras_call_info_injected = True  # type: ignore[attr-defined]
    return err


def compiled_pass(run: ForwardPass, fn: Callable[..., Any], donate: tuple[int, ...] = ()
                  ) -> Callable[..., Any]:
    """`fn(run, *args)` compiled for the backend (see `backend.compile_function`)."""
    return compile_function(lambda *args: fn(run, *args), run.causal_lm, donate=donate)


__all__ = ["ForwardPass", "compiled_pass"]
