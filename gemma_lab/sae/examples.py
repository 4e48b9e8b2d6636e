"""`lab.feature_examples(data, sae, features)`: where chosen SAE features fire hardest over
a dataset, with the text around each peak (Neuronpedia's "top activations", offline)."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gemma_lab.errors import InputError
from gemma_lab.sae.activations import activation_batches
from gemma_lab.sae.features import check_sae
from gemma_lab.sae.model import SAE

if TYPE_CHECKING:
    from gemma_lab.runtime import ModelRuntime

CONTEXT = 8  # tokens shown on each side of a peak


@dataclass(frozen=True)
class FeatureExamples:
    """The strongest activations of each feature over a dataset.

    Attributes:
        sae: the SAE; features: the features asked for.
        rows: one dict per (feature, rank): activation, text (index), position, token,
            before / after (the tokens around it), and acts: the feature's activation at
            each shown token (before, token, after).

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> from gemma_lab.sae import SAE
        >>> ex = tiny_session().feature_examples(["hi there", "the world"],
        ...                                      SAE.identity_like(32, "embed"), [0, 1], k=2)
        >>> sorted(set(ex.table()["feature"]))
        [0, 1]
    """

    sae: SAE = field(repr=False)
    features: tuple[int, ...]
    rows: tuple[dict[str, Any], ...] = field(repr=False)
    texts: int = 0

    def table(self) -> Any:
        """A DataFrame: feature, rank, activation, text, position, token, context."""
        import pandas as pd

        return pd.DataFrame([
            {"feature": r["feature"], "rank": r["rank"], "activation": r["activation"],
             "text": r["text"], "position": r["position"], "token": r["token"],
             "context": "".join(r["before"]) + "[" + r["token"] + "]" + "".join(r["after"])}
            for r in self.rows],
            columns=["feature", "rank", "activation", "text", "position", "token", "context"])

    def _repr_html_(self) -> str:
        from gemma_lab._markup import join, tag

        blocks = []
        for feature in self.features:
            rows = [r for r in self.rows if r["feature"] == feature]
            peak = max((r["activation"] for r in rows), default=0.0) or 1.0
            lines = []
            for r in rows:
                pieces = [*r["before"], r["token"], *r["after"]]
                spans = []
                for i, (piece, act) in enumerate(zip(pieces, r["acts"], strict=True)):
                    alpha = min(max(act / peak, 0.0), 1.0)
                    style = f"background:rgba(106,81,163,{alpha:.3f})"
                    if i == len(r["before"]):
                        style += ";outline:1px solid #333"
                    spans.append(tag("span", piece, style=style, title=f"{act:.4g}"))
                lines.append(tag("div", tag("code", f"{r['activation']:8.3f} "),
                                 tag("span", join(spans), style="white-space:pre-wrap")))
            if not lines:
                lines = [tag("div", "never active on these texts", style="color:#777")]
            blocks.append(tag("div", tag("b", f"feature {feature}"), join(lines),
                              style="margin:6px 0"))
        head = tag("div", f"top activations of {len(self.features)} feature(s) of "
                          f"{self.sae.hook} over {self.texts} texts (outlined: the peak token)",
                   style="color:#555;font-size:11px")
        return str(tag("div", head, join(blocks), class_="gemma-lab-feature-examples",
                       style="font-family:var(--jp-code-font-family,monospace);font-size:12px"))

    def __repr__(self) -> str:
        return (f"<FeatureExamples {len(self.features)} features, {len(self.rows)} examples "
                f"over {self.texts} texts>")


def _offer(heaps: dict[int, list[tuple[float, int, int]]], chosen: tuple[int, ...],
           acts: np.ndarray, index: int, k: int) -> bool:
    """Push text `index`'s activations ([position, chosen feature]) into each feature's
    top-`k` heap (ties: the earlier text, then the earlier position); whether any stayed."""
    used = False
    for j, feature in enumerate(chosen):
        heap = heaps[feature]
        for position in np.flatnonzero(acts[1:, j] > 0) + 1:  # <bos> left out
            entry = (float(acts[position, j]), -index, -int(position))
            if len(heap) < k:
                heapq.heappush(heap, entry)
                used = True
            elif entry > heap[0]:
                heapq.heapreplace(heap, entry)
                used = True
    return used


def feature_examples(runtime: ModelRuntime, data: Any, sae: Any,
                     features: Sequence[int] | int, k: int = 5, progress: bool = True
                     ) -> FeatureExamples:
    """`GemmaLab.feature_examples` on a runtime: see there."""
    from gemma_lab._progress import progress_counter

    sae = check_sae(runtime, sae)
    items = [features] if isinstance(features, (int, np.integer)) else list(features)
    if not items or any(not isinstance(f, (int, np.integer)) or isinstance(f, bool)
                        or not 0 <= int(f) < sae.width for f in items):
        raise InputError(f"features must be feature indices 0..{sae.width - 1}, got "
                         f"{features!r}.")
    chosen = tuple(dict.fromkeys(int(f) for f in items))
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= 1000:
        raise InputError(f"k must be an integer in 1..1000, got {k!r}.")
    texts = [data] if isinstance(data, str) else list(data)
    if not texts or not all(isinstance(t, str) and t for t in texts):
        raise InputError("feature_examples() takes a list of non-empty texts.")
    heaps: dict[int, list[tuple[float, int, int]]] = {f: [] for f in chosen}
    kept: dict[int, tuple[list[str], np.ndarray]] = {}
    columns = np.asarray(chosen)
    id_lists = [runtime.tokenizer.encode(text, add_bos=True)[:runtime.context_length]
                for text in texts]
    bar = progress_counter(len(texts), desc="feature examples", unit="text",
                           disable=not progress)
    try:
        for batch in activation_batches(runtime, sae.hook, id_lists):
            for index, x in batch:
                acts = sae.encode(x, features=columns)
                if _offer(heaps, chosen, acts, index, k):
                    kept[index] = (runtime.tokenizer.pieces(id_lists[index]), acts)
            bar.update(len(batch))
    finally:
        bar.close()
    rows = []
    for j, feature in enumerate(chosen):
        for rank, (value, neg_index, neg_position) in enumerate(
                sorted(heaps[feature], reverse=True), start=1):
            index, position = -neg_index, -neg_position
            pieces, acts = kept[index]
            low, high = max(1, position - CONTEXT), min(len(pieces), position + CONTEXT + 1)
            rows.append({"feature": feature, "rank": rank, "activation": value,
                         "text": index, "position": position, "token": pieces[position],
                         "before": list(pieces[low:position]),
                         "after": list(pieces[position + 1:high]),
                         "acts": [float(a) for a in acts[low:high, j]]})
    return FeatureExamples(sae=sae, features=chosen, rows=tuple(rows), texts=len(texts))


__all__ = ["FeatureExamples", "feature_examples"]
