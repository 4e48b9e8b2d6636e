"""LoRA fine-tuning of a session's model with Keras `fit`: live loss, safe stop, before/after.

The host tokenizer builds fixed-shape arrays (`data.tokenise`), the causal LM's preprocessor is
detached while `fit` runs, and a Keras callback records each step's loss and turns a stop request
(`FinetuneRun.stop()`, Ctrl-C) into `model.stop_training` at the next step boundary.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gemma_lab import validate
from gemma_lab.backend import import_keras
from gemma_lab.defaults import FINETUNE
from gemma_lab.errors import GemmaLabError, InputError
from gemma_lab.finetune import lora
from gemma_lab.finetune._live import LiveFeedback
from gemma_lab.finetune.compare import Comparison, response_probabilities
from gemma_lab.finetune.data import Example, TokenisedData, data_hash, load_examples, tokenise
from gemma_lab.finetune.result import FinetuneResult
from gemma_lab.models.distribution import check_batch_size

if TYPE_CHECKING:
    from gemma_lab.runtime import ModelRuntime

# Held-out examples scored before and after training when `compare` is not given.
MAX_COMPARE_EXAMPLES = 16
MAX_LEARNING_RATE = 1.0  # Adam steps of more than 1 per weight never train a LoRA


MAX_EPOCHS = 100_000


def _positive_int(name: str, value: Any, high: int | None = None) -> int:
    return validate.integer(value, name, low=1, high=high)


def step_bytes(shape: Any, rank: int, batch_size: int, sequence_length: int) -> int:
    """An estimate of the peak memory of one LoRA training step: the forward activations of
    every layer kept for the backward pass, the vocabulary logits (and their softmax and
    gradient) at every position, and the LoRA matrices of the query and value projections
    with their gradients and Adam moments (float32).

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> step_bytes(tiny_runtime().adapter.shape, 4, 4, 16) < 2**20
        True
    """
    per_layer_lora = rank * (2 * shape.hidden_dim + (shape.num_heads + shape.num_kv_heads)
                             * max(shape.head_dims or (shape.head_dim,)))
    return (validate.forward_bytes(shape, batch_size, sequence_length, backward=True,
                                   logits_rows=sequence_length)
            + 4 * 4 * shape.num_layers * per_layer_lora)


class FinetuneRun:
    """A LoRA fine-tuning run on a session: `run()` trains and returns a `FinetuneResult`;
    `stop()` (from a callback, another thread or a Stop button) ends it at the next step.

    Data is loaded, validated and tokenised here, so bad data fails before any training.

    Example:
        >>> from gemma_lab.testing import tiny_causal_lm
        >>> from gemma_lab.session import GemmaLab
        >>> from gemma_lab.models.loading import LoadedModel
        >>> lab = GemmaLab(LoadedModel(tiny_causal_lm(), "tiny", "test", None, "float32"))
        >>> run = FinetuneRun(lab, ["hello world"] * 4, rank=2, progress=False)
        >>> result = run.run()
        >>> result.steps, result.stopped
        (1, False)
    """

    def __init__(self, runtime: ModelRuntime, data: Any, *, rank: int = FINETUNE["rank"],
                 epochs: int = FINETUNE["epochs"],
                 learning_rate: float = FINETUNE["learning_rate"],
                 batch_size: int = FINETUNE["batch_size"],
                 max_length: int = FINETUNE["max_length"],
                 validation: Any = None, compare: Any = None,
                 callbacks: Sequence[Any] | None = None, progress: bool = True,
                 keep_partial: bool = True, seed: int | None = None,
                 live_figure: bool | None = None):
        self.runtime = runtime
        self.rank = _positive_int("rank", rank)
        self.epochs = _positive_int("epochs", epochs, MAX_EPOCHS)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.max_length = validate.integer(
            max_length, "max_length", low=2, high=runtime.context_length,
            hint="Tokens per training example (longer ones are cut), at most the context.")
        if (not isinstance(learning_rate, (int, float)) or isinstance(learning_rate, bool)
                or not math.isfinite(learning_rate) or not 0 < learning_rate <= MAX_LEARNING_RATE):
            raise InputError(
                f"learning_rate must be a number in (0, {MAX_LEARNING_RATE:g}], got "
                f"{learning_rate!r} (LoRA usually trains well at 1e-4 to 1e-2).")
        self.learning_rate = float(learning_rate)
        self.seed = validate.seed(seed)
        self.keep_partial = validate.flag(keep_partial, "keep_partial")
        self.progress = progress
        self.live_figure = live_figure
        self.callbacks = _callbacks(callbacks)

        examples = load_examples(data)
        self.train_examples, self.validation_examples = _split(examples, validation, seed)
        self.compare_examples = (
            load_examples(compare, what="compare examples") if compare is not None
            else self.validation_examples[:MAX_COMPARE_EXAMPLES]
        )
        tokenizer = runtime.tokenizer
        self.train_data = tokenise(self.train_examples, tokenizer, self.max_length)
        self.validation_data = (
            tokenise(self.validation_examples, tokenizer, self.max_length, what="validation")
            if self.validation_examples else None
        )
        self.data_sha256 = data_hash(self.train_examples)
        check_batch_size(runtime.distribution, self.batch_size)
        # Refused before LoRA, the optimizer or one batch is allocated.
        validate.fits_memory(
            step_bytes(runtime.adapter.shape, self.rank, self.batch_size,
                       self.train_data.sequence_length),
            f"One training step (rank {self.rank}, batch_size {self.batch_size}, "
            f"{self.train_data.sequence_length} tokens per example)",
            "Lower batch_size, rank or max_length.")
        self.steps_per_epoch = -(-self.train_data.num_examples // self.batch_size)
        self.result: FinetuneResult | None = None
        self._stop_requested = threading.Event()
        self._interrupted = False

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {"rank": self.rank, "epochs": self.epochs, "learning_rate": self.learning_rate,
                "batch_size": self.batch_size, "max_length": self.max_length,
                "seed": self.seed}

    def stop(self) -> None:
        """Finish after the training step in progress (thread-safe)."""
        self._stop_requested.set()

    # --- the run -----------------------------------------------------------------------
    def run(self) -> FinetuneResult:
        """Train; on stop or Ctrl-C keep (or, with keep_partial=False, undo) the partial
        adapter and return the result either way."""
        # On a device mesh, LoRA and optimizer variables and the batches follow its layout.
        with self.runtime.training(), self.runtime.distribution_scope():
            return self._run()

    def _run(self) -> FinetuneResult:
        keras = import_keras()
        runtime = self.runtime
        causal_lm = runtime.causal_lm
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed)
        lora.ensure_lora(runtime, self.rank)
        weights_before = lora.lora_weights(runtime.backbone)
        adapter_before = runtime.adapter_name
        before = (response_probabilities(runtime, self.compare_examples)
                  if self.compare_examples else None)

        total_steps = self.epochs * self.steps_per_epoch
        feedback = LiveFeedback(total_steps, self.steps_per_epoch, progress=self.progress,
                                figure=self.live_figure)
        recorder = _make_recorder(keras, self, feedback)
        causal_lm.compile(
            optimizer=keras.optimizers.Adam(learning_rate=self.learning_rate),
            # Mean over the tokens that carry loss (response tokens), not over padding too.
            loss=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction="mean_with_sample_weight"),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()],
        )
        preprocessor = causal_lm.preprocessor
        causal_lm.preprocessor = None  # our arrays are already token ids
        started = time.perf_counter()
        positions = "position_ids" in causal_lm.backbone.input  # Gemma 4 takes them
        failed: Exception | None = None
        try:
            with _ctrl_c_stops(self):
                causal_lm.fit(
                    _dataset(self.train_data, self.batch_size, shuffle=True, seed=self.seed,
                             positions=positions),
                    validation_data=(
                        _dataset(self.validation_data, self.batch_size, shuffle=False,
                                 positions=positions)
                        if self.validation_data is not None else None),
                    epochs=self.epochs,
                    shuffle=False,  # the dataset shuffles itself
                    callbacks=[recorder, *self.callbacks, _make_stopper(keras, self)],
                    verbose=0,
                )
        except KeyboardInterrupt:
            # Raised by a callback at a step boundary; Keras has already put the
            # trained weights back on the model in its own `finally`.
            self._interrupted = True
        except Exception as err:  # a step, a callback or the device failed: undo it all
            failed = err
        finally:
            causal_lm.preprocessor = preprocessor
            feedback.close()
            _check_weights_present(causal_lm)
        fit_s = time.perf_counter() - started
        if failed is not None:
            self._restore(weights_before, adapter_before)
            raise GemmaLabError(
                f"Fine-tuning failed at step {len(recorder.train_loss) + 1} "
                f"({type(failed).__name__}: {_one_line(failed)}): nothing was kept, the "
                "session's adapter is the one it had before. Fix the cause (a callback, or "
                "lower batch_size / rank / max_length if the device ran out of memory) and "
                "train again.") from failed

        diverged = _divergence(recorder.train_loss, runtime.backbone)
        if diverged is not None:
            # All or nothing: the adapter the session had before comes back.
            self._restore(weights_before, adapter_before)
            raise InputError(
                f"Fine-tuning diverged ({diverged}) at learning_rate {self.learning_rate:g}: "
                "nothing was kept, the session's adapter is the one it had before. Lower the "
                "learning rate (e.g. 10x) and train again.")

        steps = len(recorder.train_loss)
        stopped = steps < total_steps
        reason = ("interrupted" if stopped and self._interrupted
                  else "stopped" if stopped else "completed")
        kept = not stopped or self.keep_partial
        if kept:
            runtime.adapter_name = f"unsaved-{self.data_sha256[:8]}" if steps else adapter_before
        else:
            lora.assign_lora(runtime.backbone, weights_before)
            runtime.adapter_name = adapter_before
        runtime.invalidate_compiled()

        comparison = None
        if before is not None:
            comparison = Comparison(tuple(before),
                                    tuple(response_probabilities(runtime, self.compare_examples)))
        self.result = FinetuneResult(
            train_loss=tuple(recorder.train_loss),
            validation_loss=tuple(recorder.validation_loss),
            steps=steps,
            total_steps=total_steps,
            steps_per_epoch=self.steps_per_epoch,
            stopped=stopped,
            stop_reason=reason,
            tokens_per_s=recorder.tokens_per_s(),
            trained_tokens=recorder.trained_tokens,
            hyperparameters=self.hyperparameters,
            data_sha256=self.data_sha256,
            num_examples=len(self.train_examples),
            num_validation=len(self.validation_examples),
            adapter_kept=kept,
            comparison=comparison,
            timing={"first_step_s": recorder.first_step_s, "fit_s": fit_s},
            metadata=runtime.metadata(),
        )
        if kept and steps:
            runtime.adapter_provenance = self.result  # what adapters.save() records
        return self.result


    def _restore(self, weights: lora.LoraWeights, adapter: str | None) -> None:
        """The LoRA matrices and adapter name from before the run, compiled code dropped."""
        lora.assign_lora(self.runtime.backbone, weights)
        self.runtime.adapter_name = adapter
        self.runtime.invalidate_compiled()


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _callbacks(callbacks: Any) -> list[Any]:
    """The user's Keras callbacks, checked before training."""
    if callbacks is None:
        return []
    items = validate.sequence(callbacks, "callbacks", example="[MyCallback()]", ordered=True)
    keras = import_keras()
    for item in items:
        if not isinstance(item, keras.callbacks.Callback):
            raise InputError(f"callbacks holds {type(item).__name__}; each must be a "
                             "keras.callbacks.Callback instance (e.g. a subclass with "
                             "on_train_batch_end).")
    return items


def _split(examples: list[Example], validation: Any,
           seed: int | None) -> tuple[list[Example], list[Example]]:
    """Training and validation examples: `validation` is None, a fraction held out of
    `examples` (chosen with `seed`), or validation data of its own."""
    if validation is None:
        return examples, []
    if isinstance(validation, float) and not isinstance(validation, bool):
        if not 0.0 < validation < 1.0:
            raise InputError(f"validation as a fraction must be between 0 and 1, got "
                             f"{validation!r}.")
        held = round(len(examples) * validation)
        if held < 1 or held >= len(examples):
            raise InputError(
                f"validation={validation} of {len(examples)} examples holds out {held}; keep "
                "at least one example on each side, or pass validation data explicitly."
            )
        order = np.random.default_rng(seed or 0).permutation(len(examples))
        held_out = set(order[:held].tolist())
        return ([e for i, e in enumerate(examples) if i not in held_out],
                [e for i, e in enumerate(examples) if i in held_out])
    return examples, load_examples(validation, what="validation")


def _dataset(data: TokenisedData, batch_size: int, *, shuffle: bool,
             seed: int | None = None, positions: bool = False) -> Any:
    """A tf.data pipeline of (x, y, sample_weight) batches, all of `batch_size` rows.

    keras-hub turns arrays into tf.data without shuffling, so the shuffle is done here.
    """
    import tensorflow as tf

    padded = data.padded_to_multiple(batch_size)
    dataset = tf.data.Dataset.from_tensor_slices(
        (padded.inputs(positions), padded.targets, padded.sample_weight))
    if shuffle:
        dataset = dataset.shuffle(padded.num_examples, seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size, drop_remainder=True)


def _make_recorder(keras: Any, run: FinetuneRun, feedback: LiveFeedback) -> Any:
    """The Keras callback that records losses, feeds live feedback and honours stop()."""
    tokens_per_step = run.train_data.real_tokens / max(run.steps_per_epoch, 1)

    class LossRecorder(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.train_loss: list[float] = []
            self.validation_loss: list[float] = []
            self.step_seconds: list[float] = []
            self.first_step_s = 0.0
            self._running_total = 0.0
            self._step_started = 0.0

        @property
        def trained_tokens(self) -> int:
            return round(tokens_per_step * len(self.train_loss))

        def tokens_per_s(self) -> float:
            # The first step compiles the train function: leave it out when there are more.
            timed = self.step_seconds[1:] or self.step_seconds
            seconds = sum(timed)
            return tokens_per_step * len(timed) / seconds if seconds > 0 else 0.0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._running_total = 0.0

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            self._step_started = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            seconds = time.perf_counter() - self._step_started
            if not self.step_seconds:
                self.first_step_s = seconds
            self.step_seconds.append(seconds)
            # Keras logs the epoch's running mean (equal-size batches): undo it per step.
            running_total = float(logs["loss"]) * (batch + 1)
            loss = running_total - self._running_total
            self._running_total = running_total
            self.train_loss.append(loss)
            feedback.step(loss)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            validation = (logs or {}).get("val_loss")
            if validation is not None:
                self.validation_loss.append(float(validation))
            feedback.epoch(None if validation is None else float(validation))

    return LossRecorder()


def _divergence(train_loss: Sequence[float], backbone: Any) -> str | None:
    """What shows that training diverged (a non-finite loss, non-finite LoRA weights), or
    None."""
    for step, loss in enumerate(train_loss, start=1):
        if not math.isfinite(loss):
            return f"loss {loss} at step {step}"
    for key, value in lora.lora_weights(backbone).items():
        if not np.all(np.isfinite(value)):
            return f"non-finite LoRA weights in {key}"
    return None


def _make_stopper(keras: Any, run: FinetuneRun) -> Any:
    """The last callback: a stop requested by now (even by another callback of this very
    step) ends training before the next step."""

    class StopRequest(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if run._stop_requested.is_set():
                self.model.stop_training = True

    return StopRequest()


@contextlib.contextmanager
def _ctrl_c_stops(run: FinetuneRun) -> Iterator[None]:
    """While training in the main thread, the first Ctrl-C (or Jupyter's interrupt) asks
    for a stop at the next step boundary instead of raising inside a step, where JAX's
    training state may be between the model and the step; a second Ctrl-C raises."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def request_stop(signum: int, frame: Any) -> None:
        run._interrupted = True
        run.stop()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _check_weights_present(causal_lm: Any) -> None:
    # Keras' JAX trainer detaches variable values during fit and reattaches them after; an
    # interrupt inside a step could leave them detached. Say so plainly if it ever happens.
    missing = [v.path for v in causal_lm.variables if getattr(v, "_value", 0) is None]
    if missing:
        raise GemmaLabError(
            f"Training was interrupted inside a step and {len(missing)} weights (e.g. "
            f"{missing[0]}) were not restored. Reload the model with gemma_lab.load()."
        )


__all__ = ["MAX_COMPARE_EXAMPLES", "FinetuneRun"]
