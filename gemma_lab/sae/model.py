"""A sparse autoencoder over one hook point: JumpReLU encoder, linear decoder.

Gemma Scope's SAEs (and SAELens' `jumprelu` architecture) compute, for an activation x
[..., d_model]:

    pre = (x - b_dec · apply_b_dec_to_input) @ W_enc + b_enc
    f   = pre · (pre > threshold)                  (threshold 0: a ReLU SAE)
    x̂   = f @ W_dec + b_dec

`encode` / `decode` do this in NumPy (float32); `encode_ops` / `decode_ops` do the same
with `keras.ops` inside a compiled forward pass (the splice hook).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gemma_lab.errors import InputError

PARAM_NAMES = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")


@dataclass(frozen=True, eq=False)
class SAE:
    """A JumpReLU sparse autoencoder for hook point `hook` (`blocks.{l}.resid_post`, ...).

    Attributes:
        W_enc: [d_model, width]; W_dec: [width, d_model]; b_enc, threshold: [width];
            b_dec: [d_model] (float32 NumPy arrays).
        hook: the gemma_lab hook point it reads (`lab.hook_points()` names).
        source: where it came from (a path, `hf://...`, or "trained").
        apply_b_dec_to_input: subtract b_dec from x before encoding (SAELens' flag;
            Gemma Scope's SAEs do not).
        training: the report of `lab.train_sae` for a trained SAE, else None.

    Example:
        >>> import numpy as np
        >>> sae = SAE.identity_like(4, hook="blocks.0.resid_post")
        >>> x = np.array([[1.0, -2.0, 0.5, 0.0]], dtype="float32")
        >>> bool(np.allclose(sae.decode(sae.encode(x)), x))
        True
    """

    W_enc: np.ndarray = field(repr=False)
    W_dec: np.ndarray = field(repr=False)
    b_enc: np.ndarray = field(repr=False)
    b_dec: np.ndarray = field(repr=False)
    threshold: np.ndarray = field(repr=False)
    hook: str = "blocks.0.resid_post"
    source: str = ""
    apply_b_dec_to_input: bool = False
    training: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        d_model, width = _shape_of(self.W_enc, "W_enc", 2)
        expected = {"W_dec": (width, d_model), "b_enc": (width,), "b_dec": (d_model,),
                    "threshold": (width,)}
        for name, shape in expected.items():
            value = getattr(self, name)
            if tuple(np.shape(value)) != shape:
                raise InputError(
                    f"The SAE's {name} has shape {tuple(np.shape(value))}; with W_enc of "
                    f"shape {(d_model, width)} it must be {shape}. The file is not one SAE "
                    "(or its arrays are transposed).")
        for name in PARAM_NAMES:
            array = np.ascontiguousarray(getattr(self, name), dtype="float32")
            if not np.all(np.isfinite(array)):
                raise InputError(f"The SAE's {name} holds NaN or infinite values.")
            object.__setattr__(self, name, array)
        if not isinstance(self.hook, str) or not self.hook:
            raise InputError("An SAE needs the hook point it reads, e.g. "
                             "hook='blocks.6.resid_post'.")

    # --- shape ---------------------------------------------------------------------------
    @property
    def d_model(self) -> int:
        """Width of the activation it reads."""
        return int(self.W_enc.shape[0])

    @property
    def width(self) -> int:
        """Number of features."""
        return int(self.W_enc.shape[1])

    # --- the maths, NumPy ----------------------------------------------------------------
    def encode(self, x: Any, features: Any = None) -> np.ndarray:
        """Feature activations [..., width] of activations x [..., d_model]; with
        `features` (indices), only those columns [..., len(features)] are computed.

        Example:
            >>> sae = SAE.identity_like(2, hook="embed")
            >>> sae.encode(np.array([3.0, -1.0])).tolist()
            [3.0, 0.0, 0.0, 1.0]
            >>> sae.encode(np.array([3.0, -1.0]), features=[3]).tolist()
            [1.0]
        """
        x = self._input(x)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        if features is None:
            pre = x @ self.W_enc + self.b_enc
            threshold = self.threshold
        else:
            columns = np.asarray(features, dtype="int64")
            pre = x @ self.W_enc[:, columns] + self.b_enc[columns]
            threshold = self.threshold[columns]
        return np.where(pre > threshold, pre, np.float32(0.0)).astype("float32")

    def decode(self, f: Any) -> np.ndarray:
        """The reconstruction [..., d_model] of feature activations f [..., width].

        Example:
            >>> sae = SAE.identity_like(2, hook="embed")
            >>> sae.decode(np.array([3.0, 0.0, 0.0, 1.0])).tolist()
            [3.0, -1.0]
        """
        f = np.asarray(f, dtype="float32")
        if f.shape[-1:] != (self.width,):
            raise InputError(f"decode() takes feature activations [..., {self.width}], got "
                             f"shape {f.shape}.")
        return (f @ self.W_dec + self.b_dec).astype("float32")

    def _input(self, x: Any) -> np.ndarray:
        try:
            x = np.asarray(x, dtype="float32")
        except (TypeError, ValueError) as err:
            raise InputError("encode() takes an array of activations [..., d_model].") from err
        if x.shape[-1:] != (self.d_model,):
            raise InputError(f"This SAE reads activations of width {self.d_model}; got shape "
                             f"{x.shape}.")
        return x

    # --- the maths, keras.ops (inside a compiled pass) -----------------------------------
    def encode_ops(self, x: Any) -> Any:
        """`encode` with keras.ops on a float32 tensor [..., d_model]."""
        from gemma_lab.backend import import_keras

        ops = import_keras().ops
        if self.apply_b_dec_to_input:
            x = x - ops.convert_to_tensor(self.b_dec)
        pre = ops.matmul(x, ops.convert_to_tensor(self.W_enc)) + ops.convert_to_tensor(
            self.b_enc)
        return ops.where(pre > ops.convert_to_tensor(self.threshold), pre,
                         ops.zeros_like(pre))

    def decode_ops(self, f: Any) -> Any:
        """`decode` with keras.ops on a float32 tensor [..., width]."""
        from gemma_lab.backend import import_keras

        ops = import_keras().ops
        return ops.matmul(f, ops.convert_to_tensor(self.W_dec)) + ops.convert_to_tensor(
            self.b_dec)

    # --- files ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write Gemma Scope's format: `path/params.npz` (W_enc, W_dec, b_enc, b_dec,
        threshold) and `path/gemma_lab_sae.json` (hook, flags); `load_sae(path)` reads it.

        Example:
            >>> import tempfile
            >>> from gemma_lab.sae import load_sae
            >>> folder = SAE.identity_like(4, hook="embed").save(tempfile.mkdtemp())
            >>> load_sae(folder).hook
            'embed'
        """
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "params.npz", **{name: getattr(self, name) for name in PARAM_NAMES})
        meta = {"hook": self.hook, "apply_b_dec_to_input": self.apply_b_dec_to_input,
                "d_model": self.d_model, "width": self.width}
        (folder / "gemma_lab_sae.json").write_text(json.dumps(meta, indent=1),
                                                   encoding="utf-8")
        return folder

    @classmethod
    def identity_like(cls, d_model: int, hook: str, seed: int | None = None) -> SAE:
        """An exact autoencoder of width 2·d_model: features relu(x·Q) and relu(-x·Q) for an
        orthogonal Q (the identity when `seed` is None), decoder [Qᵀ; -Qᵀ], so
        decode(encode(x)) == x. A reference for splicing checks.

        Example:
            >>> sae = SAE.identity_like(8, hook="embed", seed=0)
            >>> x = np.random.default_rng(1).normal(size=(3, 8)).astype("float32")
            >>> float(np.abs(sae.decode(sae.encode(x)) - x).max()) < 1e-5
            True
        """
        if seed is None:
            q = np.eye(d_model, dtype="float32")
        else:
            q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d_model, d_model)))
            q = q.astype("float32")
        return cls(W_enc=np.concatenate([q, -q], axis=1),
                   W_dec=np.concatenate([q.T, -q.T], axis=0),
                   b_enc=np.zeros(2 * d_model, "float32"), b_dec=np.zeros(d_model, "float32"),
                   threshold=np.zeros(2 * d_model, "float32"), hook=hook,
                   source="identity_like")

    def __repr__(self) -> str:
        origin = f" from {self.source}" if self.source else ""
        return f"<SAE {self.width} features over {self.hook!r} (d_model {self.d_model}){origin}>"

    def _repr_html_(self) -> str:
        from gemma_lab._markup import join, tag

        rows = [("hook", self.hook), ("features", f"{self.width:,}"),
                ("d_model", str(self.d_model)), ("source", self.source or "—")]
        report = self.training
        if report is not None:
            rows += [("held-out variance explained", f"{report.variance_explained:.1%}"),
                     ("mean active features (L0)", f"{report.l0:.1f}"),
                     ("dead features", f"{report.dead_fraction:.1%}"),
                     ("steps", str(report.steps))]
        body = join(tag("tr", tag("th", k, style="text-align:left;padding-right:12px"),
                        tag("td", v)) for k, v in rows)
        return str(tag("table", body, class_="gemma-lab-sae"))


def _shape_of(value: Any, name: str, ndim: int) -> tuple[int, ...]:
    shape = tuple(np.shape(value))
    if len(shape) != ndim or not all(shape):
        raise InputError(f"The SAE's {name} must be a non-empty {ndim}-d array, got shape "
                         f"{shape}.")
    return shape


__all__ = ["PARAM_NAMES", "SAE"]
