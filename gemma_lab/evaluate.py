"""Dataset evaluation: score every example of a dataset in padded batches and tabulate
per-example metrics (perplexity, the log-probability of a target, your own callables).

Examples come in any form fine-tuning takes (`finetune.data.load_examples`): strings, or
{"prompt", "response"} mappings (the response is the target, scored given the prompt), a
pandas DataFrame, or a .jsonl / .csv path. A plain text is its own target (every token after
<bos>).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gemma_lab import validate
from gemma_lab.errors import InputError
from gemma_lab.finetune.data import Example, load_examples
from gemma_lab.scoring import Score, score_texts

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from gemma_lab.runtime import ModelRuntime

CHUNK = 16  # examples scored per progress update (each chunk is batched by score_texts)


@dataclass(frozen=True)
class Scored:
    """One evaluated example, what a custom metric callable receives.

    Attributes:
        prompt: the example's prompt ("" for a plain text).
        target: the text scored (the response, or the whole plain text).
        score: the teacher-forced `Score` of prompt + target (every token after <bos>).
        target_logprobs: log p of each target token given everything before it.
    """

    prompt: str
    target: str
    score: Score
    target_logprobs: np.ndarray


def _logprob(row: Scored) -> float:
    return float(row.target_logprobs.sum())


def _mean_logprob(row: Scored) -> float:
    return float(row.target_logprobs.mean())


def _perplexity(row: Scored) -> float:
    return math.exp(-float(row.target_logprobs.mean()))


def _accuracy(row: Scored) -> float:
    ranks = np.asarray(row.score.ranks[-len(row.target_logprobs):])
    return float(np.mean(ranks == 1))


# name: (function, higher is better)
BUILT_IN: dict[str, tuple[Callable[[Scored], float], bool]] = {
    "logprob": (_logprob, True),
    "mean_logprob": (_mean_logprob, True),
    "perplexity": (_perplexity, False),
    "accuracy": (_accuracy, True),
}
DEFAULT_METRICS = ("logprob", "perplexity")


@dataclass(frozen=True)
class Evaluation:
    """Per-example metrics of a dataset.

    Attributes:
        table: a pandas DataFrame, one row per example: prompt, target, target_tokens and a
            column per metric.
        metrics: the metric columns, in the order asked for.
        higher_is_better: per metric, whether a higher value is better (built-ins; custom
            callables count as higher-is-better).
        metadata: model, weights hash, backend, dtype, adapter.
        scored: each example's `Scored` (its `Score` and target log-probabilities), in order.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> ev = tiny_session().evaluate(["hello world", {"prompt": "a", "response": " b"}],
        ...                              progress=False)
        >>> list(ev.table.columns)
        ['prompt', 'target', 'target_tokens', 'logprob', 'perplexity']
    """

    table: pd.DataFrame
    metrics: tuple[str, ...]
    higher_is_better: dict[str, bool]
    metadata: dict[str, Any] = field(default_factory=dict)
    scored: tuple[Scored, ...] = ()

    def summary(self) -> dict[str, float]:
        """The mean of each metric over the examples (perplexity: of the whole dataset,
        exp of minus the mean log-probability per target token)."""
        out = {name: float(self.table[name].mean()) for name in self.metrics}
        if "perplexity" in self.metrics:
            total = float(sum(float(s.target_logprobs.sum()) for s in self.scored))
            out["perplexity"] = math.exp(-total / max(int(self.table["target_tokens"].sum()), 1))
        return out

    def worst(self, k: int = 5, by: str | None = None) -> pd.DataFrame:
        """The `k` examples with the worst `by` metric (default: the first one)."""
        k = validate.integer(k, "k", low=1, hint="How many of the worst examples to show.")
        by = by or self.metrics[0]
        if by not in self.metrics:
            raise InputError(f"Unknown metric {by!r}; this evaluation has "
                             f"{', '.join(self.metrics)}.")
        return self.table.sort_values(by, ascending=self.higher_is_better[by]).head(k)

    def figure(self, metric: str | None = None, k: int = 8) -> go.Figure:
        """A plotly Figure: the distribution of `metric` (default: the first) and the `k`
        worst examples."""
        from gemma_lab.figures.evaluation import evaluation_figure

        metric = metric or self.metrics[0]
        worst = self.worst(k, by=metric)
        labels = [(p + t) for p, t in zip(self.table["prompt"], self.table["target"],
                                          strict=True)]
        return evaluation_figure(self.table[metric].tolist(), labels, metric,
                                 [int(i) for i in worst.index], self.higher_is_better[metric])

    def _repr_html_(self) -> str:
        from gemma_lab._markup import escape

        parts = ", ".join(f"{name} {value:.4g}" for name, value in self.summary().items())
        return (f"<p><b>Evaluation of {len(self.table)} examples</b>: {escape(parts)}</p>"
                + self.table.to_html(max_rows=20, escape=True))


def resolve_metrics(metrics: Any) -> dict[str, tuple[Callable[[Scored], float], bool]]:
    """{name: (function, higher is better)} from names, callables or a {name: callable}.

    Example:
        >>> list(resolve_metrics(["perplexity", len]))
        ['perplexity', 'len']
    """
    if metrics is None:
        metrics = DEFAULT_METRICS
    if isinstance(metrics, str) or callable(metrics):
        metrics = [metrics]
    items = list(metrics.items()) if isinstance(metrics, Mapping) else [
        (m if isinstance(m, str) else getattr(m, "__name__", f"metric_{i}"), m)
        for i, m in enumerate(metrics)]
    if not items:
        raise InputError("metrics is empty: give at least one, e.g. ['perplexity'].")
    out: dict[str, tuple[Callable[[Scored], float], bool]] = {}
    for name, metric in items:
        if isinstance(metric, str):
            if metric not in BUILT_IN:
                raise InputError(f"Unknown metric {metric!r}: use one of "
                                 f"{', '.join(BUILT_IN)} or a callable(Scored) -> float.")
            out[name] = BUILT_IN[metric]
        elif callable(metric):
            out[str(name)] = (metric, True)
        else:
            raise InputError(f"A metric is a name ({', '.join(BUILT_IN)}) or a callable, "
                             f"got {type(metric).__name__}.")
    return out


def evaluate(runtime: ModelRuntime, data: Any, metrics: Any = None,
             progress: bool = True) -> Evaluation:
    """Score every example of `data` (batched) and tabulate `metrics` per example; see
    `GemmaLab.evaluate`."""
    import pandas as pd

    from gemma_lab._progress import progress_counter

    chosen = resolve_metrics(metrics)
    examples = load_examples(data, what="evaluation data")
    items = [_item(runtime, e, number) for number, e in enumerate(examples)]
    scored: list[Scored] = []
    bar = progress_counter(len(items), desc="evaluate", unit="example", disable=not progress)
    try:
        for start in range(0, len(items), CHUNK):
            chunk = items[start:start + CHUNK]
            scores = score_texts(runtime, [(text, ids, ()) for text, ids, _ in chunk])
            for score, (_, _, first), example in zip(scores, chunk, examples[start:],
                                                     strict=False):
                # score.logprobs[i] is log p of ids[i + 1]: the target starts at first - 1
                scored.append(Scored(example.prompt, example.response, score,
                                     np.asarray(score.logprobs[first - 1:], dtype="float64")))
            bar.update(len(chunk))
    finally:
        bar.close()
    rows = []
    for number, (example, row_scored) in enumerate(zip(examples, scored, strict=True)):
        row: dict[str, Any] = {"prompt": example.prompt, "target": example.response,
                               "target_tokens": len(row_scored.target_logprobs)}
        for name, (metric, _) in chosen.items():
            row[name] = _metric_value(metric, row_scored, name, number)
        rows.append(row)
    return Evaluation(table=pd.DataFrame(rows), metrics=tuple(chosen),
                      higher_is_better={n: h for n, (_, h) in chosen.items()},
                      metadata=runtime.metadata(), scored=tuple(scored))


def _item(runtime: ModelRuntime, example: Example, number: int
          ) -> tuple[str, list[int], int]:
    """(text, ids with <bos>, index of the first target id) of one example."""
    tokenizer = runtime.tokenizer
    prompt = [tokenizer.bos_id, *tokenizer.encode(example.prompt)]
    ids = prompt + tokenizer.encode(example.response)
    if len(ids) == len(prompt):
        raise InputError(f"evaluation data row {number}: the target text has no tokens.")
    if len(ids) > runtime.context_length:
        raise InputError(f"evaluation data row {number} has {len(ids)} tokens, more than the "
                         f"model's context of {runtime.context_length}. Shorten it.")
    return example.prompt + example.response, ids, len(prompt)


def _metric_value(metric: Callable[[Scored], float], scored: Scored, name: str,
                  number: int) -> float:
    try:
        value = metric(scored)
        return float(value)
    except Exception as err:
        raise InputError(f"Metric {name!r} failed on example {number}: "
                         f"{type(err).__name__}: {err}. It must take a Scored (.prompt, "
                         ".target, .score, .target_logprobs) and return a number.") from err


__all__ = ["BUILT_IN", "Evaluation", "Scored", "evaluate", "resolve_metrics"]
