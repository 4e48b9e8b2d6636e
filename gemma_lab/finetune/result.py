"""`FinetuneResult`: what one LoRA fine-tuning run did, as a small immutable record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gemma_lab.errors import InputError

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from gemma_lab.finetune.compare import Comparison

FIGURE_KINDS = ("loss", "compare")


@dataclass(frozen=True, kw_only=True)
class FinetuneResult:
    """One LoRA fine-tuning run.

    Attributes:
        train_loss: training loss of every step (nats per response token).
        validation_loss: validation loss at the end of every completed epoch.
        steps: optimizer steps taken; `total_steps` were planned.
        steps_per_epoch: batches in one pass over the training examples.
        stopped: True when the run ended early (`stop()`, a callback, or Ctrl-C).
        stop_reason: "completed", "stopped" or "interrupted".
        tokens_per_s: training throughput (non-padding tokens per second, compile excluded).
        hyperparameters: rank, epochs, learning_rate, batch_size, max_length, seed.
        data_sha256: hash of the training examples (`gemma_lab.finetune.data.data_hash`).
        num_examples / num_validation: training and validation example counts.
        adapter_kept: whether the trained LoRA weights are active in the session afterwards.
        comparison: held-out reference responses scored before and after, if any.
        timing: seconds for the first (compiling) step and for the whole fit.
        metadata: model, weights hash, backend, dtype, adapter.

    Example:
        >>> r = FinetuneResult(train_loss=(3.0, 2.0), steps=2, total_steps=2, steps_per_epoch=2)
        >>> r.final_loss, r.to_dict()["loss"]["train"]
        (2.0, [3.0, 2.0])
    """

    train_loss: tuple[float, ...]
    validation_loss: tuple[float, ...] = ()
    steps: int
    total_steps: int
    steps_per_epoch: int
    stopped: bool = False
    stop_reason: str = "completed"
    tokens_per_s: float = 0.0
    trained_tokens: int = 0
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    data_sha256: str = ""
    num_examples: int = 0
    num_validation: int = 0
    adapter_kept: bool = True
    comparison: Comparison | None = None
    timing: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def final_loss(self) -> float | None:
        """The last step's training loss (None if no step ran)."""
        return self.train_loss[-1] if self.train_loss else None

    @property
    def epoch_loss(self) -> list[float]:
        """Mean training loss of each (possibly partial) epoch."""
        per = max(self.steps_per_epoch, 1)
        chunks = [self.train_loss[i:i + per] for i in range(0, len(self.train_loss), per)]
        return [sum(chunk) / len(chunk) for chunk in chunks]

    def summary(self) -> dict[str, Any]:
        """Record-level numbers: steps, losses, throughput, stop reason, before/after."""
        values: dict[str, Any] = {
            "stop_reason": self.stop_reason,
            "steps": self.steps,
            "total_steps": self.total_steps,
            "final_loss": self.final_loss,
            "final_validation_loss": self.validation_loss[-1] if self.validation_loss else None,
            "tokens_per_s": self.tokens_per_s,
            "examples": self.num_examples,
            "adapter_kept": self.adapter_kept,
        }
        if self.comparison is not None:
            values["mean_logprob_before"] = self.comparison.mean_logprob_before
            values["mean_logprob_after"] = self.comparison.mean_logprob_after
        return values

    def __str__(self) -> str:
        loss = "n/a" if self.final_loss is None else f"{self.final_loss:.4f}"
        first = f"{self.train_loss[0]:.4f} → " if len(self.train_loss) > 1 else ""
        text = (f"LoRA rank {self.hyperparameters.get('rank')}: {self.steps}/{self.total_steps} "
                f"steps ({self.stop_reason}), loss {first}{loss}, "
                f"{self.tokens_per_s:.0f} tokens/s")
        if self.validation_loss:
            text += f", validation {self.validation_loss[-1]:.4f}"
        if self.comparison is not None:
            text += (f", held-out mean log-prob {self.comparison.mean_logprob_before:.3f} → "
                     f"{self.comparison.mean_logprob_after:.3f}")
        return text

    def figure(self, kind: str = "loss") -> go.Figure:
        """A plotly Figure: "loss" (train per step, validation per epoch) or "compare"
        (held-out reference probability before vs after)."""
        if kind not in FIGURE_KINDS:
            raise InputError(f"Unknown figure kind {kind!r}; choose one of "
                             f"{', '.join(FIGURE_KINDS)}.")
        if kind == "compare":
            if self.comparison is None:
                raise InputError("This run has no before/after comparison: pass held-out "
                                 "examples as validation= or compare= to finetune().")
            return self.comparison.figure()
        from gemma_lab.figures.loss import loss_figure

        return loss_figure(self.train_loss, self.validation_loss, self.steps_per_epoch)

    def to_dict(self) -> dict[str, Any]:
        """The v1 JSON payload (kind "finetune") with the loss curves and summary."""
        from gemma_lab import render

        return render.payload(
            "finetune", str(self), [], {**self.metadata, "timing": dict(self.timing)},
            summary=self.summary(),
            loss={"train": list(self.train_loss), "validation": list(self.validation_loss)},
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from gemma_lab import render

        return render.mimebundle(self, include, exclude)


__all__ = ["FIGURE_KINDS", "FinetuneResult"]
