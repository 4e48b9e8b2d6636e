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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from gemma_lab.backend import compile_function, import_keras
from gemma_lab.errors import InputError
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
        self._base_patches = sliding_mask.patches(adapter.blocks)
        self._hook_patches = adapter.patches(hooks, self._apply) if not hooks.empty else []
        self._takes_padding_mask = "padding_mask" in inspect.signature(
            causal_lm._build_cache).parameters

    # --- the hook points --------------------------------------------------------------------
    def _apply(self, name: str, layer: int | None, value: Any) -> Any:
        ops = import_keras().ops
        rows = ops.shape(value)[2] if name.endswith("attn.pattern") else ops.shape(value)[1]
        context = HookContext(name=name, layer=layer, index=self._index, rows=rows)
        for fn in self.hooks.fns_for(name):
            result = fn(value, context)
            if result is None:
                continue
            result = ops.convert_to_tensor(result)
            if tuple(result.shape) != tuple(value.shape):
                raise InputError(
                    f"The hook on {name!r} returned shape {tuple(result.shape)}; it must keep "
                    f"the shape {tuple(value.shape)}.")
            value = ops.cast(result, value.dtype)
        if self._recording and self.hooks.recorded(name):
            transform = self.hooks.transform_for(name)
            self.records[name] = transform(value) if transform is not None else value
        return value

    @contextmanager
    def _installed(self, index: Any, recording: bool) -> Iterator[None]:
        with self._lock:
            self._index, self._recording = index, recording
            try:
                with applied(self._base_patches + self._hook_patches):
                    yield
            finally:
                self._index, self._recording = 0, False

    # --- entry points -----------------------------------------------------------------------
    def sequence(self, token_ids: Any, padding_mask: Any) -> Any:
        """The final-normed hidden states [batch, length, hidden] of whole sequences
        (keras-hub's backbone call); recorded points land in `records`."""
        with self._installed(0, recording=True):
            return self.backbone({"token_ids": token_ids, "padding_mask": padding_mask})

    def unembed(self, hidden: Any) -> Any:
        """Logits of final-normed hidden states (the tied reverse embedding, soft-capped
        where the model caps them); the `logits` point applies."""
        with self._installed(0, recording=True):
            return self.backbone.token_embedding(hidden, reverse=True)

    def residual_logits(self, residual: Any) -> Any:
        """Logits read straight from residual-stream states (the model's final norm, then
        `unembed`): the logit lens."""
        with self._installed(0, recording=True):
            return self.backbone.token_embedding(self.backbone.layer_norm(residual),
                                                 reverse=True)

    def prefill(self, token_ids: Any, padding_mask: Any) -> Any:
        """A KV cache of `token_ids`' length filled with the prompt (keras-hub's
        `_build_cache`)."""
        self._no_records("prefill")
        with self._installed(0, recording=False):
            if self._takes_padding_mask:
                _, cache = self.causal_lm._build_cache(token_ids, None, None, padding_mask, None)
            else:
                _, cache = self.causal_lm._build_cache(token_ids)
        return cache

    def step(self, token_ids: Any, cache: Any, index: Any) -> tuple[Any, Any]:
        """(logits, cache) of `token_ids` at position `index` on a filled cache
        (keras-hub's `call_with_cache`)."""
        self._no_records("decode")
        with self._installed(index, recording=False):
            logits, _, cache = self.causal_lm.call_with_cache(token_ids, cache, index)
        return logits, cache

    def take_records(self) -> dict[str, Any]:
        records, self.records = self.records, {}
        return records

    def _no_records(self, what: str) -> None:
        if self.hooks.records:
            raise InputError(f"Recording hook points is for whole sequences, not {what}: use "
                             "lab.run_with_cache(text).")


def compiled_pass(run: ForwardPass, fn: Callable[..., Any], donate: tuple[int, ...] = ()
                  ) -> Callable[..., Any]:
    """`fn(run, *args)` compiled for the backend (see `backend.compile_function`)."""
    return compile_function(lambda *args: fn(run, *args), run.causal_lm, donate=donate)


__all__ = ["ForwardPass", "compiled_pass"]
