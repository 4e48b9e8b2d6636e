"""Pure plotly figure builders: result data in, `plotly.graph_objects.Figure` out, never shown.

One concept per module: `token_probs` (chosen-token probability, top-k heatmap), `entropy`
(entropy / surprisal and rank over positions). `steps_figure` picks one for a sequence of
`TokenStats`, which is what `Generation.figure` and `Score.figure` call.

Example:
    >>> from gemma_lab.testing import tiny_session
    >>> fig = tiny_session().score("hello world").figure("entropy")
    >>> type(fig).__name__
    'Figure'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gemma_lab.errors import InputError
from gemma_lab.figures.entropy import entropy_figure, rank_figure
from gemma_lab.figures.token_probs import token_probability_figure, top_k_heatmap

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from gemma_lab.token_stats import TokenStats

TOKEN_FIGURE_KINDS = ("probs", "top_k", "entropy", "rank")


def steps_figure(steps: Sequence[TokenStats], kind: str = "probs",
                 title: str | None = None) -> go.Figure:
    """The `kind` figure ("probs", "top_k", "entropy", "rank") of per-token statistics.

    Tokens are labelled by the text they added, or by their vocabulary piece where that is
    empty (an incomplete multi-byte character).
    """
    if kind not in TOKEN_FIGURE_KINDS:
        raise InputError(
            f"Unknown figure kind {kind!r}; choose one of {', '.join(TOKEN_FIGURE_KINDS)}."
        )
    tokens = [step.text or step.piece for step in steps]
    titled = {"title": title} if title else {}
    if kind == "probs":
        return token_probability_figure(tokens, [s.prob for s in steps],
                                        [s.top_k for s in steps],
                                        ranks=[s.rank for s in steps], **titled)
    if kind == "top_k":
        return top_k_heatmap(tokens, [s.top_k for s in steps], **titled)
    if kind == "entropy":
        return entropy_figure(tokens, [s.entropy for s in steps],
                              logprobs=[s.logprob for s in steps], **titled)
    return rank_figure(tokens, [s.rank for s in steps], **titled)


__all__ = [
    "TOKEN_FIGURE_KINDS",
    "entropy_figure",
    "rank_figure",
    "steps_figure",
    "token_probability_figure",
    "top_k_heatmap",
]
