"""Before/after: per-token probability of held-out reference responses under the model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gemma_lab.decoding import decoder
from gemma_lab.finetune.data import Example, example_ids, load_examples

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from gemma_lab.runtime import ModelRuntime


@dataclass(frozen=True)
class ResponseProbabilities:
    """Teacher-forced probability of each reference response token (its <eos> last)."""

    example: Example
    tokens: tuple[str, ...]
    probs: tuple[float, ...]

    @property
    def mean_logprob(self) -> float:
        return float(np.mean(np.log(np.maximum(self.probs, 1e-45))))


def response_probabilities(runtime: ModelRuntime, examples: Any) -> list[ResponseProbabilities]:
    """Probability of every response token of `examples` (any fine-tuning data form) given
    its prompt, under the model as it is now (adapter and hooks in force included).

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> rows = response_probabilities(tiny_runtime(), [{"prompt": "hi", "response": " x"}])
        >>> rows[0].tokens[-1], 0 < rows[0].probs[0] < 1
        ('<eos>', True)
    """
    if not isinstance(examples, list) or not all(isinstance(e, Example) for e in examples):
        examples = load_examples(examples, what="comparison examples")
    tokenizer = runtime.tokenizer
    model = decoder(runtime, runtime.active_hooks)
    results = []
    for example in examples:
        ids, response_start = example_ids(tokenizer, example)
        ids = ids[: runtime.context_length]
        stats = model.score(np.asarray(ids, dtype="int32"), limit=runtime.context_length)
        # stats["logprob"][t] is the log-probability of ids[t + 1].
        logprobs = stats["logprob"][response_start - 1:]
        response_ids = ids[response_start:]
        results.append(ResponseProbabilities(
            example=example,
            tokens=tuple(tokenizer.piece(i) for i in response_ids),
            probs=tuple(float(math.exp(lp)) for lp in logprobs.tolist()),
        ))
    return results


@dataclass(frozen=True)
class Comparison:
    """Reference responses scored before and after fine-tuning.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> lab = tiny_session()
        >>> before = response_probabilities(lab, ["hello world"])
        >>> Comparison(tuple(before), tuple(before)).mean_logprob_change
        0.0
    """

    before: tuple[ResponseProbabilities, ...]
    after: tuple[ResponseProbabilities, ...]

    @property
    def mean_logprob_before(self) -> float:
        return float(np.mean([row.mean_logprob for row in self.before]))

    @property
    def mean_logprob_after(self) -> float:
        return float(np.mean([row.mean_logprob for row in self.after]))

    @property
    def mean_logprob_change(self) -> float:
        return self.mean_logprob_after - self.mean_logprob_before

    def rows(self) -> list[dict[str, Any]]:
        """One row per reference token: example index, prompt, token, p before / after."""
        rows = []
        for index, (before, after) in enumerate(zip(self.before, self.after, strict=True)):
            for position, token in enumerate(before.tokens):
                rows.append({
                    "example": index,
                    "prompt": before.example.prompt,
                    "position": position,
                    "token": token,
                    "prob_before": before.probs[position],
                    "prob_after": after.probs[position],
                    "change": after.probs[position] - before.probs[position],
                })
        return rows

    def table(self) -> Any:
        """`rows()` as a pandas DataFrame when pandas is installed, else the list of dicts."""
        try:
            import pandas as pd
        except ImportError:
            return self.rows()
        return pd.DataFrame(self.rows())

    def figure(self) -> go.Figure:
        """Mean reference-token probability per example, before vs after (grouped bars)."""
        from gemma_lab.figures.loss import before_after_figure

        labels = [_label(row.example, index) for index, row in enumerate(self.before)]
        return before_after_figure(labels, [float(np.mean(r.probs)) for r in self.before],
                                   [float(np.mean(r.probs)) for r in self.after])


def _label(example: Example, index: int) -> str:
    text = example.prompt or example.response
    text = " ".join(text.split())
    return f"{index}: {text[:24]}…" if len(text) > 24 else f"{index}: {text}"


__all__ = ["Comparison", "ResponseProbabilities", "response_probabilities"]
