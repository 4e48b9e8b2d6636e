"""The model runtime: what is loaded and what is compiled for it.

One `ModelRuntime` per loaded model holds the keras-hub CausalLM, its tokenizer and context
length, the hook-point adapter, the hook sets in force, the compiled functions (keyed by
name, top-k and hook set) and their invalidation, the fine-tuning guard, the distribution
scope, the adapter in use and the provenance attached to every result. Generation, scoring,
inspection and fine-tuning are written against it; the public `GemmaLab` session is a thin
facade over it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from gemma_lab import defaults
from gemma_lab.backend import import_keras
from gemma_lab.chat_template import CheckpointTemplate
from gemma_lab.errors import InputError, ModelBusyError
from gemma_lab.forward import (
    NO_HOOKS,
    ForwardPass,
    HookSet,
    adapter_for,
)
from gemma_lab.models.loading import LoadedModel
from gemma_lab.sampling import SamplerConfig
from gemma_lab.tokenizer import Tokenizer

T = TypeVar("T")
_CONTEXT_BY_ARCH = {"GemmaBackbone": 8192, "Gemma3Backbone": 32768, "Gemma3nBackbone": 32768,
                    "Gemma4Backbone": 131072}
# Compiled function sets kept for hook sets other than "no hooks" (least recently used go).
MAX_HOOKED_COMPILED = 8


class ModelRuntime:
    """A loaded model and everything compiled for it.

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> runtime = tiny_runtime()
        >>> runtime.context_length, runtime.adapter.num_layers
        (32768, 2)
    """

    def __init__(self, loaded: LoadedModel, top_k: int = defaults.TOP_K):
        self.loaded = loaded
        self.causal_lm = loaded.causal_lm
        self.backbone = loaded.causal_lm.backbone
        self.tokenizer = Tokenizer.from_keras_hub(loaded.causal_lm.preprocessor.tokenizer)
        self.adapter = adapter_for(loaded.causal_lm)
        self.context_length = _CONTEXT_BY_ARCH.get(type(self.backbone).__name__, 8192)
        self.distribution = loaded.distribution  # Keras distribution, None on one device
        self.top_k = top_k
        self.adapter_name: str | None = None  # the LoRA adapter in use; None: base model
        self.adapter_provenance: Any = None  # FinetuneResult of an unsaved adapter, if any
        # The checkpoint's own chat template (GGUF / Hugging Face folder); None: built-in.
        self.chat_template: CheckpointTemplate | None = loaded.chat_template
        self._compiled: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._hook_stacks = threading.local()  # hooks apply to the thread that pushed them
        self._patch_lock = threading.RLock()
        self._training_lock = threading.Lock()
        self._training_thread: int | None = None  # the thread fine-tuning this model, if any

    # --- identity ----------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.loaded.model_id

    @property
    def dtype(self) -> str:
        return self.loaded.dtype

    @property
    def backend(self) -> str:
        return str(import_keras().config.backend())

    @property
    def top_k(self) -> int:
        return self._top_k

    @top_k.setter
    def top_k(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1024:
            raise InputError(f"top_k must be an integer in 1..1024, got {value!r}.")
        self._top_k = value  # compiled functions are keyed by it: a change takes effect

    def metadata(self, sampler: SamplerConfig | None = None) -> dict[str, Any]:
        """Provenance attached to every result."""
        meta: dict[str, Any] = {
            "model": self.model_id,
            "weights_sha256": self.loaded.weights_sha256,
            "backend": self.backend,
            "dtype": self.dtype,
            "adapter": self.adapter_name,
        }
        if self.distribution is not None:
            from gemma_lab.models.distribution import describe

            meta["mesh"] = str(describe(self.distribution))
        if sampler is not None:
            meta["sampler"] = sampler.to_dict()
            meta["seed"] = sampler.seed
        return meta

    # --- hooks and compiled code -------------------------------------------------------------
    def hook_points(self) -> list[str]:
        return self.adapter.point_names()

    def check_hooks(self, hooks: HookSet) -> HookSet:
        """`hooks` if its points exist here and its self-checking hooks fit this model."""
        return hooks.check(self.adapter.shape)

    @property
    def _hooks(self) -> list[HookSet]:
        stack = getattr(self._hook_stacks, "stack", None)
        if stack is None:
            stack = self._hook_stacks.stack = []
        return stack

    @property
    def active_hooks(self) -> HookSet:
        """Every hook set this thread pushed with `hooked()`, outermost first."""
        combined = NO_HOOKS
        for hooks in self._hooks:
            combined = combined | hooks
        return combined

    @contextmanager
    def hooked(self, hooks: HookSet) -> Iterator[HookSet]:
        """Apply `hooks` to every forward pass this thread runs inside the block (checked
        first); a widget's background thread keeps its own hooks."""
        stack = self._hooks
        stack.append(self.check_hooks(hooks))
        try:
            yield hooks
        finally:
            stack.pop()

    def forward_pass(self, hooks: HookSet = NO_HOOKS) -> ForwardPass:
        """A new `ForwardPass` of this model for `hooks` (patching serialised per model)."""
        return ForwardPass(self.causal_lm, self.adapter, hooks, lock=self._patch_lock)

    def compiled(self, name: str, build: Callable[[ForwardPass], T],
                 hooks: HookSet = NO_HOOKS) -> T:
        """The compiled function set `name` for the current top-k and `hooks`, built by
        `build(forward_pass)` on first use.

        Compiled functions capture the model's variable list, so every one lives here, where
        `invalidate_compiled()` drops them all when that list changes (LoRA).
        """
        key = (name, self.top_k, hooks)
        if key not in self._compiled:
            self._compiled[key] = build(self.forward_pass(hooks))
            hooked = [k for k in self._compiled if not k[2].empty]
            for old in hooked[:-MAX_HOOKED_COMPILED]:
                del self._compiled[old]
        self._compiled.move_to_end(key)
        return self._compiled[key]

    def invalidate_compiled(self) -> None:
        """Forget every compiled function; the next use rebuilds (and retraces) them."""
        self._compiled.clear()

    def distribution_scope(self) -> Any:
        """A context in which new variables (LoRA, optimizer state) and training use the
        model's device mesh; a no-op for a model on one device."""
        from gemma_lab.models.distribution import scope

        return scope(self.distribution)

    # --- one fine-tune at a time, nothing else meanwhile -------------------------------------
    @contextmanager
    def training(self) -> Iterator[None]:
        """Hold the model for fine-tuning: other threads' work raises `ModelBusyError`."""
        if not self._training_lock.acquire(blocking=False):
            raise ModelBusyError(
                "This model is already being fine-tuned. Stop that run (the Fine-tune panel's "
                "Stop button, or interrupt its cell) or wait for it, then start another.")
        self._training_thread = threading.get_ident()
        try:
            yield
        finally:
            self._training_thread = None
            self._training_lock.release()

    def ensure_idle(self, action: str) -> None:
        """Raise `ModelBusyError` if another thread is fine-tuning this model (its weights
        and LoRA layers change under `action`)."""
        owner = self._training_thread
        if owner is not None and owner != threading.get_ident():
            raise ModelBusyError(
                f"Cannot {action} while this model is being fine-tuned (the Fine-tune panel or "
                "another thread). Wait for it to finish or press Stop, then run this again; "
                "the model and any adapter are kept.")

    def __repr__(self) -> str:
        return f"<ModelRuntime {self.model_id} on {self.backend}, {self.dtype}>"


__all__ = ["ModelRuntime"]
