"""`lab.train_sae`: a small sparse autoencoder trained inline on one hook point.

The activations of `hook` over the texts (`<bos>` left out) are split by text into a
training and a held-out part. Training runs in NumPy (float32, Adam) on activations scaled
so that E‖x‖² = d_model, with the loss

    ‖x - x̂‖² / d_model + l1 · Σ_j f_j · ‖W_dec[j]‖ / d_model,   f = relu((x - b_dec) W_enc + b_enc)

(decoder rows kept at unit norm, so the L1 term is l1 · Σ f / d_model). The scale is folded
back into the weights: the returned SAE reads raw activations (threshold 0: a ReLU SAE in
the JumpReLU format). Its `training` report has the loss curve and the held-out fraction of
variance explained, L0 and dead features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gemma_lab.errors import InputError
from gemma_lab.sae.activations import activation_batches
from gemma_lab.sae.features import reconstruction
from gemma_lab.sae.model import SAE
from gemma_lab.sae.splice import Splice

if TYPE_CHECKING:
    from gemma_lab.runtime import ModelRuntime

MAX_TOKENS = 262_144  # activations kept for training (positions); more texts are cut
MAX_WIDTH = 1 << 16
MAX_STEPS = 100_000


@dataclass(frozen=True)
class SAETrainingReport:
    """How a `lab.train_sae` run went.

    Attributes:
        losses, reconstruction_losses: per step (on the scaled activations).
        variance_explained: on the held-out texts, 1 - Σ‖x - x̂‖² / Σ‖x - x̄‖².
        l0: mean active features per held-out position; dead_fraction: features never
            active on any training or held-out position.
        train_tokens, held_out_tokens, steps, l1, learning_rate, seed: the run.
    """

    losses: tuple[float, ...] = field(repr=False)
    reconstruction_losses: tuple[float, ...] = field(repr=False)
    variance_explained: float
    l0: float
    dead_fraction: float
    train_tokens: int
    held_out_tokens: int
    steps: int
    l1: float
    learning_rate: float
    seed: int
    stopped: bool = False

    def figure(self) -> Any:
        """The loss curve (plotly)."""
        from gemma_lab.figures.sae import sae_loss_figure

        return sae_loss_figure(self.losses, self.reconstruction_losses)


def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not (
            low <= value <= high):
        raise InputError(f"{name} must be an integer in {low}..{high}, got {value!r}.")
    return int(value)


def _positive(value: Any, name: str, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not (
            np.isfinite(value) and 0 < value <= high):
        raise InputError(f"{name} must be a number in (0, {high:g}], got {value!r}.")
    return float(value)


def _texts(data: Any) -> list[str]:
    if isinstance(data, str):
        data = [data]
    try:
        texts = list(data)
    except TypeError as err:
        raise InputError("train_sae() takes a list of texts.") from err
    if len(texts) < 2 or not all(isinstance(t, str) and t for t in texts):
        raise InputError("train_sae() needs at least two non-empty texts (one is held out).")
    return texts


def collect(runtime: ModelRuntime, hook: str, texts: Sequence[str], progress: bool
            ) -> list[np.ndarray]:
    """The activations of each text at the hook (without `<bos>`), run in batches; texts
    after the first MAX_TOKENS tokens are left out (and the last one cut)."""
    from gemma_lab._progress import progress_counter

    id_lists, total = [], 0
    for text in texts:
        ids = runtime.tokenizer.encode(text, add_bos=True)[:runtime.context_length]
        id_lists.append(ids[:1 + MAX_TOKENS - total])
        total += len(id_lists[-1]) - 1
        if total >= MAX_TOKENS:
            break
    rows: list[np.ndarray | None] = [None] * len(id_lists)
    bar = progress_counter(len(id_lists), desc="activations", unit="text",
                           disable=not progress)
    try:
        for batch in activation_batches(runtime, hook, id_lists):
            for index, x in batch:
                rows[index] = x[1:]
            bar.update(len(batch))
    finally:
        bar.close()
    return [row for row in rows if row is not None]


class _Adam:
    def __init__(self, params: dict[str, np.ndarray], lr: float):
        self.lr, self.t = lr, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        b1, b2 = 0.9, 0.999
        for name, grad in grads.items():
            self.m[name] = b1 * self.m[name] + (1 - b1) * grad
            self.v[name] = b2 * self.v[name] + (1 - b2) * grad * grad
            m_hat = self.m[name] / (1 - b1 ** self.t)
            v_hat = self.v[name] / (1 - b2 ** self.t)
            params[name] -= (self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)).astype("float32")


def _step(p: dict[str, np.ndarray], x: np.ndarray, l1: float
          ) -> tuple[float, float, dict[str, np.ndarray]]:
    """Loss, reconstruction loss and gradients of one batch (x already scaled)."""
    n, d = x.shape
    centred = x - p["b_dec"]
    pre = centred @ p["W_enc"] + p["b_enc"]
    f = np.maximum(pre, 0.0)
    residual = f @ p["W_dec"] + p["b_dec"] - x
    recon = float((residual ** 2).sum() / (n * d))
    loss = recon + l1 * float(f.sum() / (n * d))
    d_out = 2.0 * residual / (n * d)
    d_f = d_out @ p["W_dec"].T + l1 / (n * d)
    d_pre = d_f * (pre > 0)
    grads = {
        "W_dec": f.T @ d_out,
        "W_enc": centred.T @ d_pre,
        "b_enc": d_pre.sum(axis=0),
        "b_dec": d_out.sum(axis=0) - (d_pre @ p["W_enc"].T).sum(axis=0),
    }
    return loss, recon, grads


def train_sae(runtime: ModelRuntime, data: Any, hook: str, width: int = 1024,
              steps: int = 500, l1: float = 3.0, learning_rate: float = 1e-3,
              batch_size: int = 512, held_out: float = 0.2, seed: int = 0,
              progress: bool = True) -> SAE:
    """`GemmaLab.train_sae` on a runtime: see there."""
    from gemma_lab._progress import progress_counter

    width = _int(width, "width", 2, MAX_WIDTH)
    steps = _int(steps, "steps", 1, MAX_STEPS)
    batch_size = _int(batch_size, "batch_size", 1, 1 << 16)
    seed = _int(seed, "seed", 0, 2 ** 32 - 1)
    l1 = _positive(l1, "l1", 1e4)
    learning_rate = _positive(learning_rate, "learning_rate", 1.0)
    if isinstance(held_out, bool) or not isinstance(held_out, (int, float)) or not (
            0 < held_out < 1):
        raise InputError(f"held_out must be a fraction in (0, 1), got {held_out!r}.")
    texts = _texts(data)
    if not isinstance(hook, str):
        raise InputError("hook= must be a hook point name such as 'blocks.6.resid_post'.")
    per_position = runtime.adapter.shape.per_position(hook) if hook in (
        runtime.hook_points()) else None
    if per_position is None:
        raise InputError(f"{hook!r} is not a hook point an SAE can read; lab.hook_points() "
                         "lists them (not attn.pattern).")
    d_model = int(np.prod(per_position))

    split = max(1, round(len(texts) * held_out))
    rows = collect(runtime, hook, texts, progress)
    train = np.concatenate(rows[:-split] or rows[:1], axis=0).astype("float32")
    test = np.concatenate(rows[-split:], axis=0).astype("float32")
    if len(train) < 2:
        raise InputError("The training texts hold fewer than two tokens; give more text.")

    scale = float(np.sqrt(d_model / np.mean((train.astype("float64") ** 2).sum(axis=1))))
    x_train = train * np.float32(scale)
    rng = np.random.default_rng(seed)
    w_dec = rng.normal(size=(width, d_model)).astype("float32")
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
    params = {"W_enc": (w_dec.T * 0.1).copy(), "W_dec": w_dec * 0.1,
              "b_enc": np.zeros(width, "float32"), "b_dec": x_train.mean(axis=0)}
    params["W_dec"] /= np.linalg.norm(params["W_dec"], axis=1, keepdims=True)
    optimizer = _Adam(params, learning_rate)
    losses: list[float] = []
    recons: list[float] = []
    bar = progress_counter(steps, desc=f"train SAE at {hook}", unit="step",
                           disable=not progress)
    stopped = False
    try:
        for _ in range(steps):
            batch = x_train[rng.integers(0, len(x_train), size=min(batch_size, len(x_train)))]
            loss, recon, grads = _step(params, batch, l1)
            if not np.isfinite(loss):
                raise InputError(f"SAE training diverged (loss {loss}); lower learning_rate "
                                 f"(now {learning_rate:g}) or l1.")
            optimizer.step(params, grads)
            params["W_dec"] /= np.maximum(np.linalg.norm(params["W_dec"], axis=1,
                                                         keepdims=True), 1e-8)
            losses.append(loss)
            recons.append(recon)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
    except KeyboardInterrupt:  # keep what was trained so far
        stopped = True
    finally:
        bar.close()
    if not losses:
        raise InputError("SAE training was stopped before its first step.")

    sae = SAE(W_enc=params["W_enc"] * np.float32(scale), W_dec=params["W_dec"] / np.float32(
        scale), b_enc=params["b_enc"], b_dec=params["b_dec"] / np.float32(scale),
        threshold=np.zeros(width, "float32"), hook=hook, source="trained",
        apply_b_dec_to_input=True)
    Splice(sae).check(runtime.adapter.shape)
    held = np.concatenate([test[:1], test], axis=0)  # reconstruction() skips position 0
    acts, _, explained = reconstruction(sae, held)
    active_anywhere = (sae.encode(train[:4096]) > 0).any(axis=0) | (acts > 0).any(axis=0)
    report = SAETrainingReport(
        losses=tuple(losses), reconstruction_losses=tuple(recons),
        variance_explained=explained, l0=float((acts[1:] > 0).sum(axis=1).mean()),
        dead_fraction=float(1.0 - active_anywhere.mean()), train_tokens=len(train),
        held_out_tokens=len(test), steps=len(losses), l1=l1, learning_rate=learning_rate,
        seed=seed, stopped=stopped)
    object.__setattr__(sae, "training", report)
    return sae


__all__ = ["SAETrainingReport", "train_sae"]
