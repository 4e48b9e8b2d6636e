"""Activation patching: which activations of a clean run restore its answer in a corrupted run.

`patch_sweep` runs the corrupted prompt once per (layer, position) — or (layer, head) — with
that one activation taken from the clean prompt, and scores log p(target) after the prompt
(teacher-forced, summed over the target's tokens). All the runs share one compiled program:
the clean activations and which row patches what are inputs of the forward pass
(`HookContext.inputs`), not constants, so the sweep compiles once per model and length bucket.

Points patched, per `over`:

| over        | point                    | scores axes       |
|-------------|--------------------------|-------------------|
| "resid_pre" | `blocks.{l}.resid_pre`   | [layer, position] |
| "attn_out"  | `blocks.{l}.attn_out`    | [layer, position] |
| "mlp_out"   | `blocks.{l}.mlp_out`     | [layer, position] |
| "heads"     | `blocks.{l}.attn.z`, one head at every prompt position | [layer, head] |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gemma_lab import validate
from gemma_lab._progress import progress_counter
from gemma_lab.backend import import_keras, to_numpy
from gemma_lab.decoding import bucket_length
from gemma_lab.errors import InputError
from gemma_lab.forward import ForwardPass, HookContext, HookSet, compiled_pass
from gemma_lab.inspect.activations import record_token_ids

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from gemma_lab.runtime import ModelRuntime

OVER = {"resid_pre": "resid_pre", "attn_out": "attn_out", "mlp_out": "mlp_out",
        "heads": "attn.z"}
BATCH = 8  # corrupted runs per compiled call


@dataclass(frozen=True)
class PatchingResult:
    """Log p(target) of the corrupted prompt with one activation at a time from the clean one.

    Attributes:
        clean_prompt, corrupted_prompt, target: the texts.
        over: "resid_pre", "attn_out", "mlp_out" or "heads".
        tokens, token_ids: the corrupted prompt's pieces and ids (`<bos>` first);
            clean_tokens: the clean prompt's pieces.
        target_tokens: the target's pieces.
        scores: float64 [layer, position] ([layer, head] for "heads").
        clean, corrupted: log p(target) of the unpatched clean and corrupted runs.
        metadata: model, weights hash, backend, dtype, adapter.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> r = tiny_session().patch("hello world", "hello wurld", target=" ok", over="heads")
        >>> r.scores.shape
        (2, 4)
    """

    clean_prompt: str
    corrupted_prompt: str
    target: str
    over: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    clean_tokens: tuple[str, ...]
    target_tokens: tuple[str, ...]
    scores: np.ndarray
    clean: float
    corrupted: float
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def recovered(self) -> np.ndarray:
        """(score − corrupted) / (clean − corrupted): 1 where patching restores the clean
        answer fully, 0 where it changes nothing (NaN if clean equals corrupted)."""
        gap = self.clean - self.corrupted
        if abs(gap) < 1e-12:
            return np.full_like(self.scores, np.nan)
        return (self.scores - self.corrupted) / gap

    @property
    def columns(self) -> list[str]:
        """The labels of the scores' second axis: tokens, or "H0", "H1", ... for heads."""
        if self.over == "heads":
            return [f"H{h}" for h in range(self.scores.shape[1])]
        return list(self.tokens)

    def to_dict(self) -> dict[str, Any]:
        """The JSON payload (kind "patching"; see gemma_lab.schema)."""
        from gemma_lab.render import payload, token_entry

        tokens = [token_entry("prompt", piece, token_id, piece=piece)
                  for piece, token_id in zip(self.tokens, self.token_ids, strict=True)]
        return payload(
            "patching", self.corrupted_prompt, tokens, dict(self.metadata),
            prompt=self.clean_prompt,
            summary={"clean_logprob": self.clean, "corrupted_logprob": self.corrupted,
                     "over": self.over, "target": self.target},
            patching={
                "over": self.over,
                "target": self.target,
                "clean_prompt": self.clean_prompt,
                "corrupted_prompt": self.corrupted_prompt,
                "rows": [f"L{layer}" for layer in range(self.scores.shape[0])],
                "columns": self.columns,
                "scores": np.round(self.scores, 5).tolist(),
                "clean": self.clean,
                "corrupted": self.corrupted,
            },
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from gemma_lab.render import mimebundle

        return mimebundle(self.to_dict(), include, exclude)

    def figure(self, kind: str = "logprob") -> go.Figure:
        """A heatmap over [layer, position|head]: "logprob" (patched log p(target)) or
        "recovered" (fraction of the clean − corrupted gap restored)."""
        if kind not in ("logprob", "recovered"):
            raise InputError(f"kind={kind!r}: choose 'logprob' or 'recovered'.")
        from gemma_lab.figures.patching import patching_heatmap

        values = self.scores if kind == "logprob" else self.recovered
        return patching_heatmap(values, self.columns, self.over, self.target, self.clean,
                                self.corrupted, kind)

    def __str__(self) -> str:
        return self.corrupted_prompt

    def __repr__(self) -> str:
        layer, column = np.unravel_index(int(np.nanargmax(self.scores)), self.scores.shape)
        return (f"<PatchingResult over {self.over} {self.scores.shape}: log p({self.target!r}) "
                f"clean {self.clean:.3f}, corrupted {self.corrupted:.3f}, best "
                f"L{layer} {self.columns[column]!r} {self.scores[layer, column]:.3f}>")


@dataclass(frozen=True)
class _SweepPatch:
    """Row b of the batch takes point `layer`'s clean value where row_layer[b] == layer:
    at position row_index[b], or (heads) head row_index[b] at every prompt position."""

    layer: int
    heads: bool

    def __call__(self, value: Any, ctx: HookContext) -> Any:
        ops = import_keras().ops
        inputs = ctx.inputs
        source = ops.cast(inputs["sources"][self.layer], value.dtype)[None]  # [1, L, ...]
        hit = ops.equal(inputs["row_layer"], self.layer)  # [batch]
        if self.heads:
            source = source[..., :value.shape[-1]]  # sources are padded to the widest head
            heads = ops.arange(ops.shape(value)[2], dtype="int32")
            per_head = ops.equal(heads[None, :], inputs["row_index"][:, None])  # [batch, head]
            in_prompt = ops.less(ctx.positions, inputs["prompt_length"])  # [rows]
            where = ops.logical_and(ops.logical_and(hit[:, None, None], per_head[:, None, :]),
                                    in_prompt[None, :, None])
            return ops.where(where[..., None], source, value)
        at = ops.equal(ctx.positions[None, :], inputs["row_index"][:, None])  # [batch, rows]
        return ops.where(ops.logical_and(hit[:, None], at)[..., None], source, value)


def _sweep_hooks(num_layers: int, over: str) -> HookSet:
    point = OVER[over]
    return HookSet.of({f"blocks.{layer}.{point}": _SweepPatch(layer, over == "heads")
                       for layer in range(num_layers)})


def _target_logprob(run: ForwardPass, token_ids: Any, padding_mask: Any, sources: Any,
                    row_layer: Any, row_index: Any, prompt_length: Any,
                    target_positions: Any, target_ids: Any) -> Any:
    """Σ log p(target) per row of a batch, each row patched as row_layer / row_index say."""
    ops = import_keras().ops
    hidden = run.sequence(token_ids, padding_mask, inputs={
        "sources": sources, "row_layer": row_layer, "row_index": row_index,
        "prompt_length": prompt_length})
    picked = ops.take(hidden, target_positions, axis=1)  # [batch, target, hidden]
    logprobs = ops.log_softmax(ops.cast(run.unembed(picked), "float32"), axis=-1)
    chosen = ops.take_along_axis(logprobs, ops.broadcast_to(
        target_ids[None, :, None], (ops.shape(logprobs)[0], ops.shape(target_ids)[0], 1)),
        axis=-1)
    return ops.sum(chosen[..., 0], axis=-1)


def _prompt_ids(runtime: ModelRuntime, clean: str, corrupted: str) -> tuple[list[int], list[int]]:
    for name, text in (("clean", clean), ("corrupted", corrupted)):
        if not isinstance(text, str) or not text:
            raise InputError(f"patch() needs a non-empty {name} prompt string.")
        validate.text(text, f"The {name} prompt")
    tokenizer = runtime.tokenizer
    clean_ids = tokenizer.encode(clean, add_bos=True)
    corrupted_ids = tokenizer.encode(corrupted, add_bos=True)
    if len(clean_ids) != len(corrupted_ids):
        raise InputError(
            f"The clean prompt has {len(clean_ids) - 1} tokens and the corrupted one "
            f"{len(corrupted_ids) - 1}; activation patching needs them position for position. "
            f"Clean: {tokenizer.pieces(clean_ids[1:])}; corrupted: "
            f"{tokenizer.pieces(corrupted_ids[1:])}. Swap words for ones of the same token "
            "count (lab.tokenizer.pieces(lab.tokenizer.encode(text)) shows the split).")
    return clean_ids, corrupted_ids


def patch_sweep(runtime: ModelRuntime, clean: str, corrupted: str, target: str,
                over: str = "resid_pre", progress: bool = True) -> PatchingResult:
    """Patch every (layer, position) — or (layer, head) — activation of `over` from `clean`
    into `corrupted` and score log p(`target`) after it; see `PatchingResult`.

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> r = patch_sweep(tiny_runtime(), "hello world", "hello wurld", " ok", progress=False)
        >>> r.scores.shape[0], r.scores.shape[1] == len(r.tokens)
        (2, True)
    """
    validate.choice(over, OVER, "over")
    if not isinstance(target, str) or not target:
        raise InputError("patch() needs a non-empty target string, e.g. target=' Paris'.")
    validate.text(target, "The target")
    clean_ids, corrupted_ids = _prompt_ids(runtime, clean, corrupted)
    target_ids = runtime.tokenizer.encode(target, add_bos=False)
    if not target_ids:
        raise InputError(f"The target {target!r} encodes to no tokens; give some text.")
    n, t = len(clean_ids), len(target_ids)
    length = bucket_length(n + t - 1, runtime.context_length)
    if n + t - 1 > runtime.context_length:
        raise InputError(f"Prompt and target have {n + t - 1} tokens, more than the model's "
                         f"context of {runtime.context_length}.")

    shape = runtime.adapter.shape
    layers = shape.num_layers
    point = OVER[over]
    names = [f"blocks.{layer}.{point}" for layer in range(layers)]
    recorded = record_token_ids(runtime, clean_ids, names, length)
    # [layer, length, ...]; per-head values padded to the widest head (Gemma 4's global
    # layers have wider heads than its local ones)
    widest = max(recorded[name].shape[-1] for name in names)
    sources = np.stack([np.pad(recorded[name], [(0, 0)] * (recorded[name].ndim - 1)
                               + [(0, widest - recorded[name].shape[-1])]) for name in names])

    columns = shape.num_heads if over == "heads" else n
    runs = 2 + layers * columns
    if runs * length > validate.MAX_PATCH_TOKENS:
        raise InputError(
            f"Patching {over} over {n} tokens runs {runs} forward passes of {length} tokens "
            f"({runs * length:,} in all), more than the limit of "
            f"{validate.MAX_PATCH_TOKENS:,} (gemma_lab.validate.MAX_PATCH_TOKENS): it would "
            "run for many minutes. Patch shorter prompts, or over='heads'.")
    validate.fits_memory(
        validate.forward_bytes(shape, BATCH, length, logits_rows=t)
        + 4 * layers * length * shape.num_heads * max(shape.head_dims or (shape.head_dim,))
        + 4 * layers * length * max(shape.hidden_dim, shape.mlp_dim),
        f"Patching {n} tokens", "Patch shorter prompts.")
    # Row 0: the clean prompt, row 1: the corrupted one, unpatched (row layer -1).
    rows = [(-1, 0, clean_ids), (-1, 0, corrupted_ids)]
    rows += [(layer, column, corrupted_ids) for layer in range(layers)
             for column in range(columns)]
    hooks = runtime.active_hooks | _sweep_hooks(layers, over)
    compiled = runtime.compiled("patch_sweep",
                                lambda run: compiled_pass(run, _target_logprob), hooks)
    fixed = (np.asarray(n, "int32"), np.arange(n - 1, n + t - 1, dtype="int32"),
             np.asarray(target_ids, "int32"))
    results: list[float] = []
    bar = progress_counter(len(rows), desc=f"patching {over}", disable=not progress,
                           leave=False)
    try:
        for start in range(0, len(rows), BATCH):
            batch = rows[start:start + BATCH]
            batch += [(-1, 0, corrupted_ids)] * (BATCH - len(batch))
            token_ids = np.zeros((BATCH, length), "int32")
            mask = np.zeros((BATCH, length), "int32")
            for i, (_, _, ids) in enumerate(batch):
                sequence = ids + target_ids[:-1]
                token_ids[i, :len(sequence)] = sequence
                mask[i, :len(sequence)] = 1
            row_layer = np.asarray([r[0] for r in batch], "int32")
            row_index = np.asarray([r[1] for r in batch], "int32")
            out = to_numpy(compiled(token_ids, mask, sources, row_layer, row_index, *fixed))
            results += [float(v) for v in out[:min(BATCH, len(rows) - start)]]
            bar.update(min(BATCH, len(rows) - start))
    finally:
        bar.close()
    tokenizer = runtime.tokenizer
    return PatchingResult(
        clean_prompt=clean,
        corrupted_prompt=corrupted,
        target=target,
        over=over,
        tokens=tuple(tokenizer.pieces(corrupted_ids)),
        token_ids=tuple(int(i) for i in corrupted_ids),
        clean_tokens=tuple(tokenizer.pieces(clean_ids)),
        target_tokens=tuple(tokenizer.pieces(target_ids)),
        scores=np.asarray(results[2:], dtype="float64").reshape(layers, columns),
        clean=results[0],
        corrupted=results[1],
        metadata=runtime.metadata(),
    )


__all__ = ["OVER", "PatchingResult", "patch_sweep"]
