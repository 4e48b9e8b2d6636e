"""The Playground's branch history: each branch is a prompt and the tokens after it, and a
branch made from an alternative token shares its parent's tokens up to that position."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gemma_lab.token_stats import TokenStats


@dataclass(frozen=True)
class Branch:
    """One line of generation the user can switch back to.

    Attributes:
        prompt: the user's prompt text.
        prompt_ids: its token ids, <bos> first.
        prompt_tokens: the text of each prompt token ("" for <bos>).
        steps: every token after the prompt: inherited from the parent, then the chosen
            alternative (at `forced`), then newly generated ones.
        parent: index of the branch this one was made from (None for a fresh generation).
        forced: index in `steps` of the alternative the user chose (None for a root).
        finish_reason: the generation's finish reason ("length", "eos", "stopped", ...).
    """

    prompt: str
    prompt_ids: tuple[int, ...]
    prompt_tokens: tuple[str, ...]
    steps: tuple[TokenStats, ...]
    parent: int | None = None
    forced: int | None = None
    finish_reason: str = "running"

    @property
    def text(self) -> str:
        """The text after the prompt."""
        return "".join(step.text for step in self.steps)

    def prefix_ids(self, position: int, token_id: int) -> list[int]:
        """Prompt ids, this branch's tokens before `position`, then `token_id`."""
        return [*self.prompt_ids, *(s.token_id for s in self.steps[:position]), token_id]

    def label(self, index: int) -> str:
        """A one-line description for the history selector."""
        text = " ".join(self.text.split())
        text = text if len(text) <= 40 else text[:39] + "…"
        origin = ("new" if self.parent is None
                  else f"from #{self.parent} at token {self.forced}")
        count = len(self.steps)
        return (f"#{index} ({origin}, {count} token{'' if count == 1 else 's'}, "
                f"{self.finish_reason}): {text}")


def forced_step(step: TokenStats, alternative: int) -> TokenStats:
    """The statistics of choosing top-k `alternative` instead of `step`'s token: its
    probability and rank come from the same distribution, which is shared with `step`.

    Example:
        >>> s = TokenStats(5, "a", "a", -0.1, 1, 0.3, (("a", 0.9), ("b", 0.1)), (5, 6))
        >>> b = forced_step(s, 1)
        >>> b.token_id, b.text, b.rank, round(b.prob, 3)
        (6, 'b', 2, 0.1)
    """
    piece, prob = step.top_k[alternative]
    return TokenStats(
        token_id=step.top_k_ids[alternative],
        text=piece,
        piece=piece,
        logprob=math.log(max(prob, 1e-45)),
        rank=alternative + 1,
        entropy=step.entropy,
        top_k=step.top_k,
        top_k_ids=step.top_k_ids,
    )


__all__ = ["Branch", "forced_step"]
