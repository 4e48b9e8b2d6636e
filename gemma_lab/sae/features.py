"""`lab.features(text, sae)`: an SAE's feature activations at every position of a text,
with how well it reconstructs the activation and what splicing it in costs the model.

    fa = lab.features("The Eiffel Tower is in Paris", sae)
    fa.acts                 # [position, feature], <bos> first (float32)
    fa.top(k=5)             # strongest features per token (a DataFrame)
    fa.variance_explained   # 1 - Σ‖x - x̂‖² / Σ‖x - mean x‖² over the text (no <bos>)
    fa.loss_added           # mean next-token NLL with the SAE spliced in minus without (nats)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gemma_lab.errors import InputError
from gemma_lab.forward import HookSet
from gemma_lab.sae.activations import activations_at
from gemma_lab.sae.model import SAE
from gemma_lab.sae.splice import Splice, splice

if TYPE_CHECKING:
    from gemma_lab.runtime import ModelRuntime

# Payload caps: the features listed per token and the strongest features drawn in full.
PAYLOAD_PER_TOKEN = 8
PAYLOAD_FEATURES = 24


@dataclass(frozen=True)
class FeatureActivations:
    """One text's SAE features.

    Attributes:
        text, tokens, token_ids: what ran (`<bos>` first).
        acts: float32 [position, feature]: the JumpReLU activations of `sae.hook`.
        sae: the SAE (hook, width, source).
        relative_error: per position ‖x - x̂‖² / ‖x‖².
        variance_explained: 1 - Σ‖x - x̂‖² / Σ‖x - x̄‖² over the positions after `<bos>`.
        logprobs, spliced_logprobs: log p of each next token without / with the SAE's
            reconstruction spliced in (empty when not measured); loss_added: the mean
            increase of the next-token NLL, in nats.
        metadata: model, weights hash, backend, dtype, adapter.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> from gemma_lab.sae import SAE
        >>> lab = tiny_session()
        >>> fa = lab.features("hello world", SAE.identity_like(32, hook="blocks.0.resid_post"))
        >>> fa.acts.shape == (len(fa.tokens), 64) and abs(fa.loss_added) < 1e-3
        True
    """

    text: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    acts: np.ndarray = field(repr=False)
    sae: SAE = field(repr=False)
    relative_error: np.ndarray = field(repr=False)
    variance_explained: float
    logprobs: tuple[float, ...] = ()
    spliced_logprobs: tuple[float, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def loss_added(self) -> float | None:
        """Mean next-token NLL increase from splicing the SAE in (nats), or None."""
        if not self.logprobs:
            return None
        return float(np.mean(np.asarray(self.logprobs) - np.asarray(self.spliced_logprobs)))

    @property
    def l0(self) -> float:
        """Mean number of active features per position after `<bos>`."""
        body = self.acts[1:] if len(self.acts) > 1 else self.acts
        return float((body > 0).sum(axis=1).mean())

    def top(self, k: int = 10) -> Any:
        """The `k` strongest active features of every position: a DataFrame with columns
        position, token, rank, feature, activation (inactive features left out).

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> from gemma_lab.sae import SAE
            >>> fa = tiny_session().features("hi", SAE.identity_like(32, "blocks.1.resid_post"))
            >>> list(fa.top(k=2).columns)
            ['position', 'token', 'rank', 'feature', 'activation']
        """
        import pandas as pd

        k = _count(k, "k")
        rows = []
        for position, row in enumerate(self.acts):
            for rank, feature in enumerate(_strongest(row, k), start=1):
                rows.append({"position": position, "token": self.tokens[position],
                             "rank": rank, "feature": int(feature),
                             "activation": float(row[feature])})
        return pd.DataFrame(rows, columns=["position", "token", "rank", "feature",
                                           "activation"])

    def strongest(self, k: int = 10) -> Any:
        """The `k` features with the largest activation anywhere after `<bos>`: a DataFrame
        with feature, max_activation, position, token (where it peaks) and fires (how many
        positions it is active at).

        Example:
            >>> from gemma_lab.testing import tiny_session
            >>> from gemma_lab.sae import SAE
            >>> fa = tiny_session().features("hi there", SAE.identity_like(32, "embed"))
            >>> len(fa.strongest(k=3))
            3
        """
        import pandas as pd

        k = _count(k, "k")
        body = self.acts[1:] if len(self.acts) > 1 else self.acts
        offset = 1 if len(self.acts) > 1 else 0
        peaks = body.max(axis=0)
        rows = []
        for feature in _strongest(peaks, k):
            position = int(body[:, feature].argmax()) + offset
            rows.append({"feature": int(feature), "max_activation": float(peaks[feature]),
                         "position": position, "token": self.tokens[position],
                         "fires": int((body[:, feature] > 0).sum())})
        return pd.DataFrame(rows, columns=["feature", "max_activation", "position", "token",
                                           "fires"])

    def figure(self, features: Sequence[int] | None = None, k: int = 16) -> Any:
        """A heatmap of features (rows: `features`, default the `k` strongest) over the
        positions, plus each position's reconstruction error."""
        from gemma_lab.figures.sae import features_figure

        chosen = list(self._chosen(features, k))
        return features_figure(self.tokens, chosen, self.acts[:, chosen],
                               self.relative_error, title=f"SAE features at {self.sae.hook}")

    def _chosen(self, features: Sequence[int] | None, k: int) -> list[int]:
        if features is None:
            return [int(f) for f in self.strongest(k)["feature"]]
        items = [features] if isinstance(features, (int, np.integer)) else list(features)
        bad = [f for f in items if not isinstance(f, (int, np.integer)) or isinstance(f, bool)
               or not 0 <= int(f) < self.sae.width]
        if bad or not items:
            raise InputError(f"features must be feature indices 0..{self.sae.width - 1}, got "
                             f"{features!r}.")
        return [int(f) for f in items]

    def to_dict(self) -> dict[str, Any]:
        """The JSON payload (kind "features"; see gemma_lab.schema)."""
        from gemma_lab.render import payload, token_entry

        tokens = [token_entry("prompt", piece, token_id, piece=piece)
                  for piece, token_id in zip(self.tokens, self.token_ids, strict=True)]
        per_token = [[[int(f), float(row[f])] for f in _strongest(row, PAYLOAD_PER_TOKEN)]
                     for row in self.acts]
        strongest = self.strongest(PAYLOAD_FEATURES)
        top = [{"feature": int(row.feature), "max": float(row.max_activation),
                "acts": self.acts[:, int(row.feature)].tolist()}
               for row in strongest.itertuples()]
        summary = {"positions": len(self.tokens), "features": self.sae.width,
                   "variance_explained": self.variance_explained, "l0": self.l0,
                   "loss_added": self.loss_added}
        return payload("features", self.text, tokens, dict(self.metadata), summary=summary,
                       features={"hook": self.sae.hook, "width": self.sae.width,
                                 "source": self.sae.source, "per_token": per_token,
                                 "top": top, "relative_error": self.relative_error.tolist(),
                                 "variance_explained": self.variance_explained,
                                 "loss_added": self.loss_added, "l0": self.l0})

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from gemma_lab.render import mimebundle

        return mimebundle(self.to_dict(), include, exclude)

    def __repr__(self) -> str:
        loss = "" if self.loss_added is None else f", loss added {self.loss_added:+.4f} nats"
        return (f"<FeatureActivations {self.sae.width} features at {self.sae.hook!r} over "
                f"{len(self.tokens)} positions: variance explained "
                f"{self.variance_explained:.1%}, L0 {self.l0:.1f}{loss}>")


def _count(k: Any, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"{name} must be a positive integer, got {k!r}.")
    return int(k)


def _strongest(row: np.ndarray, k: int) -> list[int]:
    """Indices of the (at most) k largest positive entries of `row`, largest first."""
    k = min(k, row.shape[0])
    candidates = np.argpartition(-row, k - 1)[:k]
    ordered = candidates[np.argsort(-row[candidates], kind="stable")]
    return [int(i) for i in ordered if row[i] > 0]


def check_sae(runtime: ModelRuntime, sae: Any) -> SAE:
    """`sae` if it is an SAE that fits a hook point of this model (else InputError)."""
    if not isinstance(sae, SAE):
        raise InputError("features() takes an SAE: sae = gemma_lab.load_sae(path, "
                         "hook='blocks.6.resid_post').")
    Splice(sae).check(runtime.adapter.shape)
    return sae


def reconstruction(sae: SAE, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(acts, per-position relative error, variance explained without position 0)."""
    acts = sae.encode(x)
    error = x.astype("float64") - sae.decode(acts)
    relative = (error ** 2).sum(axis=1) / np.maximum((x.astype("float64") ** 2).sum(axis=1),
                                                    1e-30)
    body, body_error = (x[1:], error[1:]) if len(x) > 1 else (x, error)
    spread = ((body - body.mean(axis=0)) ** 2).sum()
    explained = 1.0 - float((body_error ** 2).sum() / spread) if spread > 0 else float("nan")
    return acts, relative.astype("float32"), explained


def feature_activations(runtime: ModelRuntime, text: str, sae: Any,
                        ids: Sequence[int] | None = None, splice_loss: bool = True
                        ) -> FeatureActivations:
    """`GemmaLab.features` on a runtime: see there."""
    from gemma_lab.scoring import score_text

    sae = check_sae(runtime, sae)
    if not isinstance(text, str) or not text:
        raise InputError("features() needs a non-empty text.")
    ids = list(ids) if ids is not None else runtime.tokenizer.encode(text, add_bos=True)
    if len(ids) > runtime.context_length:
        raise InputError(f"The text has {len(ids)} tokens, more than the model's context of "
                         f"{runtime.context_length}. Use a shorter text.")
    acts, relative, explained = reconstruction(sae, activations_at(runtime, sae.hook, ids))
    logprobs: tuple[float, ...] = ()
    spliced: tuple[float, ...] = ()
    if splice_loss and len(ids) > 1:
        logprobs = tuple(score_text(runtime, text, ids).logprobs)
        with runtime.hooked(HookSet.of(splice(sae))):
            spliced = tuple(score_text(runtime, text, ids).logprobs)
    return FeatureActivations(
        text=text, tokens=tuple(runtime.tokenizer.pieces(ids)),
        token_ids=tuple(int(i) for i in ids), acts=acts, sae=sae, relative_error=relative,
        variance_explained=explained, logprobs=logprobs, spliced_logprobs=spliced,
        metadata=runtime.metadata())


__all__ = ["FeatureActivations", "activations_at", "check_sae", "feature_activations",
           "reconstruction"]
