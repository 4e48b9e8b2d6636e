"""Generation: the decode loop with per-token statistics, streaming, and its result record."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gemma_lab import render, validate
from gemma_lab.backend import ready
from gemma_lab.decoding import bucket_length, decoder
from gemma_lab.errors import InputError
from gemma_lab.sampling import SamplerConfig, resolved
from gemma_lab.schema import MAX_TOKENS
from gemma_lab.token_stats import PerTokenViews, TokenStats
from gemma_lab.tokenizer import IncrementalDecoder

if TYPE_CHECKING:
    from gemma_lab.runtime import ModelRuntime


@dataclass(frozen=True)
class Generation(PerTokenViews):
    """A finished generation with what the model thought of every generated token.

    Attributes:
        prompt: the prompt text.
        text: the generated text (stop string and end-of-turn excluded).
        steps: per generated token statistics (`TokenStats`).
        prompt_token_ids: the prompt's ids, <bos> first.
        prompt_tokens: the text of each prompt token ("" for <bos>).
        finish_reason: "length", "eos", "stop_string", "stopped" (stop()) or "interrupted".
        timing: seconds for prefill / first token / decode, and tokens per second.
        metadata: model, weights hash, backend, dtype, sampler, seed, adapter.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> g = tiny_session().generate("hello", max_new_tokens=3)
        >>> len(g.token_ids), len(g.top_k[0])
        (3, 5)
    """

    prompt: str
    text: str
    steps: tuple[TokenStats, ...]
    prompt_token_ids: tuple[int, ...]
    finish_reason: str
    timing: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    prompt_tokens: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.text

    def to_dict(self, prompt_tokens: Sequence[Mapping[str, Any]] | None = None
                ) -> dict[str, Any]:
        """The v1 JSON payload (`gemma_lab.schema.JSON_SCHEMA`): prompt tokens, then the
        generated tokens.

        Prompt tokens come from `prompt_tokens` (e.g. `render.prompt_entries(tokenizer,
        g.prompt_token_ids)`, which adds pieces), else from the record. A prompt too long for
        the cap loses its earliest tokens first.
        """
        generated = [step.to_dict("generated") for step in self.steps]
        if prompt_tokens is None:
            prompt_tokens = [render.token_entry("prompt", text, token_id) for text, token_id
                             in zip(self.prompt_tokens, self.prompt_token_ids, strict=True)
                             ] if self.prompt_tokens else []
        prompt = list(prompt_tokens)
        room = max(MAX_TOKENS - len(generated), 0)
        truncated_prompt = len(prompt) > room
        if truncated_prompt:
            prompt = prompt[len(prompt) - room:] if room else []
        result = render.payload(
            "generation",
            self.text,
            prompt + generated,
            {**self.metadata, "timing": dict(self.timing)},
            prompt=self.prompt,
            summary={"finish_reason": self.finish_reason, "generated_tokens": len(self.steps)},
        )
        result["truncated"] = result["truncated"] or truncated_prompt
        return result

    def figure(self, kind: str = "probs") -> Any:
        """A plotly Figure: "probs" (default), "top_k", "entropy" or "rank" per token."""
        from gemma_lab.figures import steps_figure

        return steps_figure(self.steps, kind)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return render.mimebundle(self.to_dict(), include, exclude)


class GenerationStream:
    """Iterate to receive `TokenStats` as tokens are decoded; `.result` holds the Generation.

    `stop()` (from another thread, e.g. a Stop button) ends the loop after the current step.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> stream = tiny_session().stream("hello", max_new_tokens=4)
        >>> pieces = [step.text for step in stream]
        >>> stream.result.text == "".join(pieces)
        True
    """

    def __init__(self, runtime: ModelRuntime, prompt: str, *, max_new_tokens: int,
                 sampler: SamplerConfig, stop: str | Sequence[str] | None,
                 prompt_ids: Sequence[int] | None = None):
        validate.text(prompt, "The prompt")
        max_new_tokens = validate.max_new_tokens(max_new_tokens)
        self._runtime = runtime
        # Hooks in force when the stream is made hold for all of it (e.g. a steering vector).
        self._model = decoder(runtime, runtime.active_hooks)
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.sampler = sampler
        self.stop_strings = validate.stop_strings(stop)
        self.prompt_ids = (runtime.tokenizer.encode(prompt, add_bos=True) if prompt_ids is None
                           else validate.token_ids(prompt_ids, _vocabulary_size(runtime)))
        limit = runtime.context_length
        if len(self.prompt_ids) + max_new_tokens > limit:
            raise InputError(
                f"The prompt has {len(self.prompt_ids)} tokens; with max_new_tokens="
                f"{max_new_tokens} that exceeds the model's context of {limit} tokens. "
                "Shorten the prompt or lower max_new_tokens."
            )
        self.result: Generation | None = None
        self._stop_requested = False
        self._iterator: Iterator[TokenStats] | None = None

    def stop(self) -> None:
        """Ask the loop to finish after the step in progress."""
        self._stop_requested = True

    def __iter__(self) -> Iterator[TokenStats]:
        if self._iterator is None:
            self._iterator = self._run()
        return self._iterator

    def run(self) -> Generation:
        """Consume the stream and return the Generation."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result

    def _run(self) -> Iterator[TokenStats]:
        runtime = self._runtime
        tokenizer = runtime.tokenizer
        model = self._model
        prompt_ids = self.prompt_ids
        total = bucket_length(len(prompt_ids) + self.max_new_tokens, runtime.context_length)
        sampler = resolved(self.sampler)  # a drawn seed when none was given: reproducible
        decoder = IncrementalDecoder(tokenizer)
        steps: list[TokenStats] = []
        text = ""
        finish = "length"
        started = time.perf_counter()
        first_token_at = None
        runtime.ensure_idle("generate")  # a fine-tune started after this stream was made
        cache = ready(model.prefill(prompt_ids, total, tokenizer.pad_id))  # timed, not dispatched
        prefill_done = time.perf_counter()
        token, index = prompt_ids[-1], len(prompt_ids) - 1
        stop_ids = tuple(sorted(tokenizer.stop_ids))
        try:
            for _ in range(self.max_new_tokens):
                if self._stop_requested:
                    finish = "stopped"
                    break
                runtime.ensure_idle("generate")  # ... or while it runs
                # compiled steps, greedy or sampled, several per call (decoding.MAX_CHUNK)
                stats, cache = model.step(token, cache, index, self.max_new_tokens - len(steps),
                                          stop_ids, sampler)
                token = stats["token"]
                if token in tokenizer.stop_ids:
                    finish = "eos"
                    break
                step = _token_stats(tokenizer, decoder, stats)
                steps.append(step)
                text += step.text
                index += 1
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                yield step
                hit = _find_stop(text, self.stop_strings)
                if hit is not None:
                    text, finish = text[:hit], "stop_string"
                    break
        except KeyboardInterrupt:
            finish = "interrupted"
            raise
        finally:
            ended = time.perf_counter()
            decode_s = ended - prefill_done
            self.result = Generation(
                prompt=self.prompt,
                text=text if finish == "stop_string" else decoder.text,
                steps=tuple(steps),
                prompt_token_ids=tuple(prompt_ids),
                finish_reason=finish,
                timing={
                    "prefill_s": prefill_done - started,
                    "first_token_s": (first_token_at or ended) - started,
                    "decode_s": decode_s,
                    "total_s": ended - started,
                    "tokens_per_s": len(steps) / decode_s if decode_s > 0 else 0.0,
                },
                metadata=runtime.metadata(sampler=sampler),
                prompt_tokens=tuple(_texts(tokenizer, prompt_ids)),
            )


def _token_stats(tokenizer: Any, decoder: IncrementalDecoder, stats: Mapping[str, Any]
                 ) -> TokenStats:
    """The record of one decoded token from the compiled loop's statistics."""
    token = stats["token"]
    return TokenStats(
        token_id=token,
        text=decoder.push(token),
        piece=tokenizer.piece(token),
        logprob=stats["logprob"],
        rank=stats["rank"],
        entropy=stats["entropy"],
        top_k=tuple((tokenizer.piece(i), float(np.exp(lp)))
                    for i, lp in zip(stats["top_ids"].tolist(), stats["top_logprobs"].tolist(),
                                     strict=True)),
        top_k_ids=tuple(int(i) for i in stats["top_ids"].tolist()),
    )


MAX_BATCH_ROWS = 8  # prompts decoded together in one batch (more run as further batches)


def generate_batch(runtime: ModelRuntime, prompts: Sequence[str], *, max_new_tokens: int,
                   samplers: Sequence[SamplerConfig], stop: str | Sequence[str] | None,
                   progress: bool = True) -> list[Generation]:
    """One `Generation` per prompt (`samplers[i]` deciding prompt i), decoded in batches
    of up to `MAX_BATCH_ROWS` prompts (`CompiledModel.generate_batch`); each record has its
    own statistics, finish reason and seed, as if generated alone. Greedy and sampled
    prompts go in separate batches (one sampling mode per compiled loop).

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> from gemma_lab.sampling import SamplerConfig
        >>> out = generate_batch(tiny_runtime(), ["hello", "a b c"], max_new_tokens=3,
        ...                      samplers=[SamplerConfig()] * 2, stop=[], progress=False)
        >>> [len(g.steps) <= 3 for g in out]
        [True, True]
    """
    from gemma_lab._progress import progress_counter
    from gemma_lab.decoding import _mode

    tokenizer = runtime.tokenizer
    max_new_tokens = validate.max_new_tokens(max_new_tokens)
    stop_strings = validate.stop_strings(stop)
    ids = []
    for number, prompt in enumerate(prompts):
        validate.text(prompt, f"Prompt {number}")
        ids.append(tokenizer.encode(prompt, add_bos=True))
        if len(ids[-1]) + max_new_tokens > runtime.context_length:
            raise InputError(
                f"Prompt {number} has {len(ids[-1])} tokens; with max_new_tokens="
                f"{max_new_tokens} that exceeds the model's context of "
                f"{runtime.context_length} tokens. Shorten it or lower max_new_tokens.")
    samplers = [resolved(sampler) for sampler in samplers]
    stop_ids = tuple(sorted(tokenizer.stop_ids))
    model = decoder(runtime, runtime.active_hooks)
    groups: dict[str, list[int]] = {}
    for number, sampler in enumerate(samplers):
        groups.setdefault(_mode(sampler)[0], []).append(number)
    batches = [rows[i:i + MAX_BATCH_ROWS] for rows in groups.values()
               for i in range(0, len(rows), MAX_BATCH_ROWS)]
    results: list[Generation | None] = [None] * len(ids)
    bar = progress_counter(len(ids) * max_new_tokens, desc="generate", unit="tok",
                           disable=not progress)
    try:
        for batch in batches:
            runtime.ensure_idle("generate")
            started = time.perf_counter()
            steps = model.generate_batch([ids[i] for i in batch], max_new_tokens,
                                         [samplers[i] for i in batch], stop_ids,
                                         tokenizer.pad_id, runtime.context_length, bar.update)
            bar.update(len(batch) * max_new_tokens - sum(len(row) for row in steps))
            elapsed = time.perf_counter() - started
            for number, row in zip(batch, steps, strict=True):
                results[number] = _batch_record(runtime, prompts[number], ids[number], row,
                                                samplers[number], stop_strings, elapsed)
    finally:
        bar.close()
    return [g for g in results if g is not None]


def _batch_record(runtime: ModelRuntime, prompt: str, prompt_ids: list[int],
                  stats: list[dict[str, Any]], sampler: SamplerConfig,
                  stop_strings: list[str], elapsed: float) -> Generation:
    """A `Generation` from one row of a batch: stop ids and stop strings end it as they end
    a single-prompt stream; timing is the batch's (shared by its rows)."""
    tokenizer = runtime.tokenizer
    decoder = IncrementalDecoder(tokenizer)
    steps: list[TokenStats] = []
    text, finish = "", "length"
    for entry in stats:
        if entry["token"] in tokenizer.stop_ids:
            finish = "eos"
            break
        step = _token_stats(tokenizer, decoder, entry)
        steps.append(step)
        text += step.text
        hit = _find_stop(text, stop_strings)
        if hit is not None:
            text, finish = text[:hit], "stop_string"
            break
    return Generation(
        prompt=prompt,
        text=text if finish == "stop_string" else decoder.text,
        steps=tuple(steps),
        prompt_token_ids=tuple(prompt_ids),
        finish_reason=finish,
        timing={"prefill_s": 0.0, "first_token_s": elapsed, "decode_s": elapsed,
                "total_s": elapsed, "tokens_per_s": len(steps) / elapsed if elapsed else 0.0,
                "batched": True},
        metadata=runtime.metadata(sampler=sampler),
        prompt_tokens=tuple(_texts(tokenizer, prompt_ids)),
    )


def _vocabulary_size(runtime: ModelRuntime) -> int:
    """Ids the tokenizer can show and the model can embed."""
    return min(runtime.tokenizer.vocabulary_size, runtime.adapter.shape.vocabulary_size)


def _texts(tokenizer: Any, ids: list[int]) -> list[str]:
    decoder = IncrementalDecoder(tokenizer)
    return [decoder.push(i) for i in ids]


def _find_stop(text: str, stop_strings: list[str]) -> int | None:
    hits = [text.find(s) for s in stop_strings if s in text]
    return min(hits) if hits else None
