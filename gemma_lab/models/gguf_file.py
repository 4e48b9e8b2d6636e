"""Reading a Gemma GGUF file: architecture hyper-parameters, vocabulary and tensors.

Everything here is numpy; nothing imports Keras. Malformed files raise `GGUFError`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gemma_lab.errors import GGUFError
from gemma_lab.models.gguf_validate import SUPPORTED_ARCHITECTURES, validate_gguf

__all__ = ["SUPPORTED_ARCHITECTURES", "GGUFModel", "GemmaHyperParams", "read_gguf"]

# Layer counts of the 27B models, whose query scale is hidden/heads instead of head_dim
# (GGUF does not store query_pre_attn_scalar; llama.cpp keys off the model size the same way).
_QUERY_SCALE_BY_HIDDEN = {"gemma2": {46}, "gemma3": {62}}


@dataclass(frozen=True, kw_only=True)
class GemmaHyperParams:
    """Architecture hyper-parameters of a Gemma model, independent of file format.

    Attributes:
        architecture: "gemma", "gemma2", "gemma3" or "gemma4" (for Gemma 4, the sliding
            layers' head size and KV heads; the rest lives in `GGUFModel.metadata`).
        vocabulary_size: number of tokens.
        num_layers: transformer blocks.
        num_query_heads / num_key_value_heads: attention heads (GQA when they differ).
        hidden_dim: residual width.
        intermediate_dim: feed-forward width (one branch of the gated MLP).
        head_dim: width of one attention head.
        layer_norm_epsilon: RMSNorm epsilon.
        context_length: longest sequence the model was trained for.
        sliding_window_size: local attention window (gemma2/gemma3), else None.
        attention_logit_soft_cap / final_logit_soft_cap: gemma2 soft caps, else None.
        query_head_dim_normalize: scale queries by head_dim (True) or hidden/heads (False).
        global_rope_scaling_factor: gemma3 global-layer RoPE scaling.
    """

    architecture: str
    vocabulary_size: int
    num_layers: int
    num_query_heads: int
    num_key_value_heads: int
    hidden_dim: int
    intermediate_dim: int
    head_dim: int
    layer_norm_epsilon: float
    context_length: int
    sliding_window_size: int | None = None
    attention_logit_soft_cap: float | None = None
    final_logit_soft_cap: float | None = None
    query_head_dim_normalize: bool = True
    global_rope_scaling_factor: float = 1.0


@dataclass(frozen=True)
class GGUFVocabulary:
    """The tokenizer stored in a GGUF file (llama.cpp's SentencePiece "llama" model)."""

    tokens: list[str]
    scores: np.ndarray
    token_types: np.ndarray
    bos_id: int
    eos_id: int
    unk_id: int
    pad_id: int
    add_space_prefix: bool


@dataclass(frozen=True)
class GGUFModel:
    """A parsed GGUF file: hyper-parameters, vocabulary and lazily dequantised tensors."""

    path: Path
    sha256: str
    name: str
    hparams: GemmaHyperParams
    vocabulary: GGUFVocabulary
    _tensors: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)  # the "{architecture}.*" keys

    @property
    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    def tensor_shape(self, name: str) -> tuple[int, ...]:
        """Shape of one tensor as `tensor(name)` returns it, without dequantising it."""
        t = self._tensors.get(name)
        if t is None:
            raise GGUFError(f"Tensor {name!r} is missing from {self.path}; the file is incomplete.")
        return tuple(int(d) for d in reversed(t.shape.tolist()))

    def tensor(self, name: str) -> np.ndarray:
        """Dequantise one tensor to float32, shaped like the HF weight (rows = outputs)."""
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        t = self._tensors.get(name)
        if t is None:
            raise GGUFError(f"Tensor {name!r} is missing from {self.path}; the file is incomplete.")
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        try:
            if t.tensor_type == GGMLQuantizationType.F32:
                array = np.asarray(t.data, dtype=np.float32)
            else:
                array = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        except (ValueError, NotImplementedError, TypeError) as err:
            raise GGUFError(
                f"Tensor {name!r} in {self.path} cannot be dequantised ({err}); the file is "
                "corrupt or uses an unsupported type."
            ) from err
        if array.size != int(np.prod(shape)):
            raise GGUFError(
                f"Tensor {name!r} in {self.path} holds {array.size} values but declares "
                f"shape {shape}; the file is corrupt. Re-download or re-convert it."
            )
        return array.reshape(shape)


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x"); _ = open(p, "wb").write(b"abc")
        >>> sha256_file(p)[:8]
        'ba7816bf'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _field(reader: Any, key: str, default: Any = ...) -> Any:
    field = reader.fields.get(key)
    if field is None:
        if default is ...:
            raise GGUFError(f"GGUF key {key!r} is missing; this is not a complete Gemma GGUF file.")
        return default
    try:
        return field.contents()
    except Exception as err:  # gguf raises assorted errors on malformed fields
        raise GGUFError(f"GGUF key {key!r} is malformed ({err}).") from err


def _positive_int(value: Any, key: str, upper: int) -> int:
    if isinstance(value, (list, tuple)):
        # Some converters store per-layer values; Gemma uses one value for all layers.
        if not value or len(set(value)) != 1:
            raise GGUFError(f"GGUF key {key!r} varies per layer ({value}); unsupported for Gemma.")
        value = value[0]
    try:
        number = int(value)
    except (TypeError, ValueError) as err:
        raise GGUFError(f"GGUF key {key!r} should be an integer, got {value!r}.") from err
    if not 0 < number <= upper:
        raise GGUFError(f"GGUF key {key!r} = {number} is outside the sane range 1..{upper}.")
    return number


def _float(value: Any, key: str, lower: float = -math.inf, upper: float = math.inf) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise GGUFError(f"GGUF key {key!r} should be a number, got {value!r}.") from err
    if not lower < number < upper:
        raise GGUFError(f"GGUF key {key!r} = {number} is outside the range ({lower}, {upper}).")
    return number


def _first_layer(value: Any, arch: str) -> Any:
    # Gemma 4 may store per-layer values (global layers differ); layer 0 is a sliding layer,
    # whose values these hyper-parameters hold. gguf_gemma4 reads the whole lists.
    if arch == "gemma4" and isinstance(value, (list, tuple)) and value:
        return value[0]
    return value


def _hyper_params(reader: Any, arch: str) -> GemmaHyperParams:
    tokens = _field(reader, "tokenizer.ggml.tokens")
    vocab_size = len(tokens)
    num_layers = _positive_int(_field(reader, f"{arch}.block_count"), "block_count", 512)
    num_heads = _positive_int(_field(reader, f"{arch}.attention.head_count"), "head_count", 1024)
    num_kv = _positive_int(
        _first_layer(_field(reader, f"{arch}.attention.head_count_kv", num_heads), arch),
        "head_count_kv", 1024,
    )
    if num_heads % num_kv:
        raise GGUFError(f"head_count {num_heads} is not a multiple of head_count_kv {num_kv}.")
    hidden = _positive_int(_field(reader, f"{arch}.embedding_length"), "embedding_length", 65536)
    head_dim = _field(reader, f"{arch}.attention.key_length", hidden // num_heads)
    if arch == "gemma4":  # key_length is the global layers' head size there
        head_dim = _field(reader, f"{arch}.attention.key_length_swa", head_dim)
    head_dim = _positive_int(head_dim, "key_length", 4096)
    window = _field(reader, f"{arch}.attention.sliding_window", None)
    soft_attn = _field(reader, f"{arch}.attn_logit_softcapping", None)
    soft_final = _field(reader, f"{arch}.final_logit_softcapping", None)
    return GemmaHyperParams(
        architecture=arch,
        vocabulary_size=vocab_size,
        num_layers=num_layers,
        num_query_heads=num_heads,
        num_key_value_heads=num_kv,
        hidden_dim=hidden,
        intermediate_dim=_positive_int(
            _first_layer(_field(reader, f"{arch}.feed_forward_length"), arch),
            "feed_forward_length", 1 << 20,
        ),
        head_dim=head_dim,
        layer_norm_epsilon=_float(
            _field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-6), "rms_epsilon", 0, 1
        ),
        context_length=_positive_int(
            _field(reader, f"{arch}.context_length", 8192), "context_length", 1 << 24
        ),
        sliding_window_size=None
        if window is None
        else _positive_int(window, "sliding_window", 1 << 24),
        attention_logit_soft_cap=None
        if soft_attn is None
        else _float(soft_attn, "attn_logit_softcapping", 0),
        final_logit_soft_cap=None
        if soft_final is None
        else _float(soft_final, "final_logit_softcapping", 0),
        query_head_dim_normalize=num_layers not in _QUERY_SCALE_BY_HIDDEN.get(arch, set()),
        global_rope_scaling_factor=_float(
            _field(reader, f"{arch}.rope.scaling.factor", 1.0), "rope.scaling.factor", 0, 1e6
        ),
    )


def _vocabulary(reader: Any, arch: str = "gemma") -> GGUFVocabulary:
    model = _field(reader, "tokenizer.ggml.model", "llama")
    # llama.cpp's "gemma4" tokenizer keeps SentencePiece's pieces, scores and types too.
    if model != "llama" and not (arch == "gemma4" and model == "gemma4"):
        raise GGUFError(
            f"Tokenizer type {model!r} is not SentencePiece ('llama'); "
            "gemma_lab reads Gemma GGUFs only."
        )
    tokens = [str(t) for t in _field(reader, "tokenizer.ggml.tokens")]
    n = len(tokens)
    scores = np.asarray(_field(reader, "tokenizer.ggml.scores", [0.0] * n), dtype=np.float32)
    types = np.asarray(_field(reader, "tokenizer.ggml.token_type", [1] * n), dtype=np.int32)
    if len(scores) != n or len(types) != n:
        raise GGUFError(
            f"Vocabulary arrays disagree: {n} tokens, {len(scores)} scores, {len(types)} types."
        )

    def token_id(key: str, default: int) -> int:
        raw = _field(reader, f"tokenizer.ggml.{key}", default)
        if isinstance(raw, bool) or not isinstance(raw, (int, np.integer)) or not 0 <= raw < n:
            raise GGUFError(f"tokenizer.ggml.{key} = {raw!r} is outside the vocabulary (size {n}).")
        return int(raw)

    return GGUFVocabulary(
        tokens=tokens,
        scores=scores,
        token_types=types,
        bos_id=token_id("bos_token_id", 2),
        eos_id=token_id("eos_token_id", 1),
        unk_id=token_id("unknown_token_id", 3),
        pad_id=token_id("padding_token_id", 0),
        add_space_prefix=bool(_field(reader, "tokenizer.ggml.add_space_prefix", False)),
    )


def read_gguf(path: str | Path, sha256: str | None = None) -> GGUFModel:
    """Open a Gemma GGUF file and check it before any tensor is dequantised.

    Example:
        >>> from gemma_lab.models.default_model import default_gguf_path
        >>> model = read_gguf(default_gguf_path())
        >>> model.hparams.architecture, model.hparams.num_layers
        ('gemma3', 18)
    """
    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"No GGUF file at {path}. Check the path.")
    # Bounded checks first: GGUFReader parses eagerly and trusts every count in the file.
    validate_gguf(path)
    try:
        from gguf import GGUFReader

        reader = GGUFReader(path, "r")
    except GGUFError:
        raise
    except Exception as err:  # the gguf package raises many kinds on corrupt input
        raise GGUFError(
            f"{path} is not a readable GGUF file ({type(err).__name__}: {err}). "
            "It may be truncated or corrupt: re-download it."
        ) from err
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise GGUFError(
            f"{path} holds a {arch!r} model; gemma_lab converts "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} (not gemma3n yet)."
        )
    hparams = _hyper_params(reader, arch)
    vocabulary = _vocabulary(reader, arch)
    metadata = {key: _field(reader, key) for key in reader.fields if key.startswith(arch + ".")}
    return GGUFModel(
        path=path,
        sha256=sha256 or sha256_file(path),
        name=str(_field(reader, "general.name", path.stem)),
        hparams=hparams,
        vocabulary=vocabulary,
        _tensors={t.name: t for t in reader.tensors},
        metadata=metadata,
    )
