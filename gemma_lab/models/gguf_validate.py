"""Checking a GGUF file with bounded reads before any parser trusts it.

The `gguf` package memory-maps a file and parses every header field eagerly, so a tiny crafted
file (a huge array count, a string length past the end, a tensor extent past the file, a zero
alignment) makes it loop for hours, allocate gigabytes or read out of bounds. `validate_gguf`
walks the same header with `struct` reads that check every length against what is left of the
file and against explicit limits, then checks that the declared model is one the file can fill:
tensors inside the file, dims without overflow, sane Gemma hyper-parameters and a vocabulary
that agrees with the embedding. Anything wrong raises `GGUFError` naming the offending field.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemma_lab.errors import GGUFError

SUPPORTED_ARCHITECTURES = ("gemma", "gemma2", "gemma3", "gemma4")
GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)

# GGUFValueType numbering: scalar formats by type id, then STRING (8) and ARRAY (9).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_INTEGER_TYPES = {0, 1, 2, 3, 4, 5, 10, 11}
_FLOAT_TYPES = {6, 12}
_TYPE_NAMES = {0: "UINT8", 1: "INT8", 2: "UINT16", 3: "INT16", 4: "UINT32", 5: "INT32",
               6: "FLOAT32", 7: "BOOL", 8: "STRING", 9: "ARRAY", 10: "UINT64", 11: "INT64",
               12: "FLOAT64"}

# GGML tensor types gemma_lab can dequantise: id -> (name, block size, bytes per block).
TENSOR_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 30: ("BF16", 1, 2),
}

# Keys whose values feed the model's shape: their GGUF type must match before anyone reads them.
_INTEGER_KEYS = ("block_count", "context_length", "embedding_length", "feed_forward_length",
                 "attention.head_count", "attention.head_count_kv", "attention.key_length",
                 "attention.value_length", "attention.sliding_window")
_FLOAT_KEYS = ("attention.layer_norm_rms_epsilon", "attn_logit_softcapping",
               "final_logit_softcapping", "rope.scaling.factor", "rope.freq_base")
_TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id")


@dataclass(frozen=True)
class GGUFLimits:
    """Upper bounds a file must respect before it is parsed (defaults fit every Gemma).

    Example:
        >>> GGUFLimits().max_dims
        4
    """

    max_kv_count: int = 4096
    max_tensor_count: int = 65536
    max_key_bytes: int = 1024
    max_string_bytes: int = 16 << 20
    max_array_count: int = 1 << 20
    max_array_elements_total: int = 4 << 20
    max_tensor_name_bytes: int = 64
    max_dims: int = 4
    max_dim: int = 1 << 31
    max_tensor_elements: int = 1 << 36
    max_alignment: int = 1 << 16


@dataclass(frozen=True)
class KeyValue:
    """One metadata entry: its GGUF type, and its value (scalars and strings) or length."""

    type: int
    value: Any = None
    element_type: int | None = None
    count: int = 1


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: dims (GGUF order, fastest first), type, offset and size."""

    name: str
    dims: tuple[int, ...]
    type: int
    offset: int
    nbytes: int

    @property
    def elements(self) -> int:
        return math.prod(self.dims)


@dataclass(frozen=True)
class GGUFHeader:
    """The validated header of a GGUF file."""

    version: int
    file_size: int
    alignment: int
    data_offset: int
    metadata: dict[str, KeyValue]
    tensors: dict[str, TensorInfo]
    tokens: list[str] = field(default_factory=list)


class _Cursor:
    """Bounded little-endian reads over a buffer: every read checks what is left."""

    def __init__(self, buffer: Any, size: int):
        self.buffer = buffer
        self.size = size
        self.pos = 0

    def take(self, n: int, what: str) -> int:
        if n < 0 or n > self.size - self.pos:
            raise GGUFError(
                f"The GGUF file is truncated or corrupt: {what} at byte {self.pos} needs {n} "
                f"bytes but only {self.size - self.pos} remain. Re-download or re-convert it."
            )
        start = self.pos
        self.pos += n
        return start

    def scalar(self, fmt: str, what: str) -> Any:
        start = self.take(struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.buffer, start)[0]

    def string(self, limit: int, what: str, decode: bool = True) -> str | None:
        length = self.scalar("<Q", f"length of {what}")
        if length > limit:
            raise GGUFError(f"{what} declares {length} bytes, over the limit of {limit}.")
        start = self.take(length, what)
        if not decode:
            return None
        try:
            return bytes(self.buffer[start:start + length]).decode("utf-8")
        except UnicodeDecodeError as err:
            raise GGUFError(f"{what} at byte {start} is not valid UTF-8.") from err


def validate_gguf(path: str | Path, limits: GGUFLimits = GGUFLimits()) -> GGUFHeader:
    """Check a GGUF file's header, metadata and tensor table with bounded reads.

    Raises `GGUFError` on anything malformed; reads no tensor data and allocates memory in
    proportion to the header, never to a declared count.

    Example:
        >>> from gemma_lab.testing import tiny_gguf
        >>> header = validate_gguf(tiny_gguf("gemma"))
        >>> header.metadata["general.architecture"].value, len(header.tokens) > 0
        ('gemma', True)
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            if size < 24:
                raise GGUFError(f"{path} is {size} bytes, too short to be a GGUF file.")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
                header = _scan(_Cursor(buffer, size), limits)
    except OSError as err:
        raise GGUFError(f"Cannot read {path} ({err.strerror or err}). Check the path.") from err
    check_gemma_header(header)
    return header


def _scan(cursor: _Cursor, limits: GGUFLimits) -> GGUFHeader:
    if bytes(cursor.buffer[0:4]) != GGUF_MAGIC:
        raise GGUFError("Not a GGUF file (the first 4 bytes are not 'GGUF').")
    cursor.take(4, "magic")
    version = cursor.scalar("<I", "version")
    if version not in SUPPORTED_VERSIONS:
        raise GGUFError(
            f"GGUF version {version} is not supported (expected 2 or 3, little-endian). "
            "Re-convert the model with a current llama.cpp."
        )
    tensor_count = cursor.scalar("<Q", "tensor count")
    kv_count = cursor.scalar("<Q", "metadata count")
    if tensor_count > limits.max_tensor_count or kv_count > limits.max_kv_count:
        raise GGUFError(
            f"The GGUF header declares {tensor_count} tensors and {kv_count} metadata entries, "
            f"over the limits ({limits.max_tensor_count}, {limits.max_kv_count}); it is corrupt."
        )
    metadata, tokens = _scan_metadata(cursor, kv_count, limits)
    alignment = _alignment(metadata, limits)
    tensors = _scan_tensor_infos(cursor, tensor_count, limits)
    data_offset = -(-cursor.pos // alignment) * alignment
    _check_tensor_extents(tensors, data_offset, alignment, cursor.size)
    return GGUFHeader(version, cursor.size, alignment, data_offset, metadata, tensors, tokens)


def _scan_metadata(cursor: _Cursor, count: int,
                   limits: GGUFLimits) -> tuple[dict[str, KeyValue], list[str]]:
    metadata: dict[str, KeyValue] = {}
    tokens: list[str] = []
    elements_left = limits.max_array_elements_total
    for index in range(count):
        key = cursor.string(limits.max_key_bytes, f"metadata key #{index}")
        assert key is not None
        if key in metadata:
            raise GGUFError(f"Metadata key {key!r} appears twice; the file is corrupt.")
        value_type = cursor.scalar("<I", f"type of {key!r}")
        if value_type == _ARRAY:
            element_type = cursor.scalar("<I", f"element type of {key!r}")
            length = cursor.scalar("<Q", f"length of {key!r}")
            if element_type not in _SCALARS and element_type != _STRING:
                raise GGUFError(
                    f"Array {key!r} has element type {element_type}; only scalars and strings "
                    "are allowed (no nested arrays)."
                )
            if length > limits.max_array_count or length > elements_left:
                raise GGUFError(
                    f"Array {key!r} declares {length} elements, over the limit of "
                    f"{min(limits.max_array_count, elements_left)}."
                )
            elements_left -= length
            keep = key == "tokenizer.ggml.tokens" and element_type == _STRING
            values = _skip_array(cursor, key, element_type, length, limits, keep)
            if keep:
                tokens = values
            metadata[key] = KeyValue(_ARRAY, None, element_type, length)
        elif value_type == _STRING:
            metadata[key] = KeyValue(_STRING, cursor.string(limits.max_string_bytes, repr(key)))
        elif value_type in _SCALARS:
            metadata[key] = KeyValue(value_type, cursor.scalar(_SCALARS[value_type], repr(key)))
        else:
            raise GGUFError(f"Metadata {key!r} has unknown value type {value_type}.")
    return metadata, tokens


def _skip_array(cursor: _Cursor, key: str, element_type: int, length: int, limits: GGUFLimits,
                keep: bool) -> list[str]:
    if element_type != _STRING:
        cursor.take(length * struct.calcsize(_SCALARS[element_type]), f"array {key!r}")
        return []
    # Every string costs at least its 8-byte length: a count the file cannot hold fails here.
    if length * 8 > cursor.size - cursor.pos:
        raise GGUFError(f"Array {key!r} declares {length} strings, more than the file holds.")
    values = []
    for index in range(length):
        text = cursor.string(limits.max_string_bytes, f"{key}[{index}]", decode=keep)
        if keep:
            values.append(text)
    return values


def _alignment(metadata: dict[str, KeyValue], limits: GGUFLimits) -> int:
    entry = metadata.get("general.alignment")
    if entry is None:
        return 32
    value = entry.value
    if entry.type != 4 or not 0 < value <= limits.max_alignment or value & (value - 1):
        raise GGUFError(
            f"general.alignment must be a UINT32 power of two up to {limits.max_alignment}, "
            f"got {value!r} ({_TYPE_NAMES.get(entry.type, entry.type)})."
        )
    return value


def _scan_tensor_infos(cursor: _Cursor, count: int, limits: GGUFLimits) -> dict[str, TensorInfo]:
    tensors: dict[str, TensorInfo] = {}
    for index in range(count):
        name = cursor.string(limits.max_tensor_name_bytes, f"name of tensor #{index}")
        assert name is not None
        if name in tensors:
            raise GGUFError(f"Tensor {name!r} appears twice; the file is corrupt.")
        n_dims = cursor.scalar("<I", f"rank of {name!r}")
        if not 1 <= n_dims <= limits.max_dims:
            raise GGUFError(f"Tensor {name!r} has {n_dims} dims; 1..{limits.max_dims} allowed.")
        dims = tuple(cursor.scalar("<Q", f"dims of {name!r}") for _ in range(n_dims))
        if any(not 1 <= d <= limits.max_dim for d in dims):
            raise GGUFError(f"Tensor {name!r} has dims {dims}; each must be 1..{limits.max_dim}.")
        elements = math.prod(dims)  # Python ints: no overflow, checked against the limit
        if elements > limits.max_tensor_elements:
            raise GGUFError(f"Tensor {name!r} declares {elements} elements, over the limit.")
        type_id = cursor.scalar("<I", f"type of {name!r}")
        if type_id not in TENSOR_TYPES:
            raise GGUFError(
                f"Tensor {name!r} has GGML type {type_id}, which gemma_lab cannot dequantise "
                f"(supported: {', '.join(t[0] for t in TENSOR_TYPES.values())})."
            )
        type_name, block, block_bytes = TENSOR_TYPES[type_id]
        if dims[0] % block:
            raise GGUFError(
                f"Tensor {name!r} ({type_name}) has a row of {dims[0]} values, not a multiple "
                f"of its block size {block}."
            )
        offset = cursor.scalar("<Q", f"offset of {name!r}")
        tensors[name] = TensorInfo(name, dims, type_id, offset, elements // block * block_bytes)
    return tensors


def _check_tensor_extents(tensors: dict[str, TensorInfo], data_offset: int, alignment: int,
                          file_size: int) -> None:
    end_of_previous = 0
    for info in sorted(tensors.values(), key=lambda t: t.offset):
        if info.offset % alignment:
            raise GGUFError(f"Tensor {info.name!r} at {info.offset} is not {alignment}-aligned.")
        if info.offset < end_of_previous:
            raise GGUFError(f"Tensor {info.name!r} overlaps the tensor before it.")
        end_of_previous = info.offset + info.nbytes
        if data_offset + end_of_previous > file_size:
            raise GGUFError(
                f"Tensor {info.name!r} ends at byte {data_offset + end_of_previous}, past the end "
                f"of the {file_size}-byte file: it is truncated. Re-download it."
            )


def check_gemma_header(header: GGUFHeader) -> None:
    """Check metadata types, the vocabulary and the model size the tensors can fill.

    Example:
        >>> from gemma_lab.testing import tiny_gguf
        >>> check_gemma_header(validate_gguf(tiny_gguf("gemma3")))  # no error
    """
    meta = header.metadata
    arch_entry = meta.get("general.architecture")
    if arch_entry is None or arch_entry.type != _STRING:
        raise GGUFError("general.architecture is missing or not a string; not a model GGUF.")
    arch = arch_entry.value
    if arch not in SUPPORTED_ARCHITECTURES:
        raise GGUFError(
            f"The file holds a {arch!r} model; gemma_lab converts "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} GGUFs (not gemma3n yet). Use a GGUF of one "
            "of those, or a Hugging Face folder / keras-hub preset."
        )
    for suffix in _INTEGER_KEYS:
        _expect(meta, f"{arch}.{suffix}", _INTEGER_TYPES, "an integer")
    for suffix in _FLOAT_KEYS:
        entry = _expect(meta, f"{arch}.{suffix}", _FLOAT_TYPES, "a float")
        if entry is not None and not math.isfinite(entry.value):
            raise GGUFError(f"{arch}.{suffix} = {entry.value} is not a finite number.")
    for suffix in _TOKEN_ID_KEYS:
        _expect(meta, f"tokenizer.ggml.{suffix}", _INTEGER_TYPES, "an integer")
    _expect(meta, "tokenizer.ggml.model", {_STRING}, "a string")
    _expect(meta, "general.name", {_STRING}, "a string")
    _check_vocabulary(header)
    _check_model_fits_tensors(header, arch)


def _expect(meta: dict[str, KeyValue], key: str, types: set[int], what: str) -> KeyValue | None:
    entry = meta.get(key)
    if entry is None:
        return None
    if entry.type == _ARRAY and entry.element_type in types and key.endswith(_INTEGER_KEYS):
        return None  # per-layer integer values; gguf_file decides whether they are usable
    if entry.type not in types:
        raise GGUFError(
            f"GGUF key {key!r} should be {what}, but is {_TYPE_NAMES.get(entry.type, entry.type)}."
        )
    return entry


def _check_vocabulary(header: GGUFHeader) -> None:
    meta = header.metadata
    tokens_entry = meta.get("tokenizer.ggml.tokens")
    if tokens_entry is None or tokens_entry.element_type != _STRING or not tokens_entry.count:
        raise GGUFError("tokenizer.ggml.tokens is missing or not a list of strings.")
    n = tokens_entry.count
    for key, element_type in (("tokenizer.ggml.scores", 6), ("tokenizer.ggml.token_type", 5)):
        entry = meta.get(key)
        if entry is not None and (entry.element_type != element_type or entry.count != n):
            raise GGUFError(
                f"{key} must be {n} {_TYPE_NAMES[element_type]} values (one per token); "
                f"the file has {entry.count} {_TYPE_NAMES.get(entry.element_type, '?')}."
            )
    if any(not token for token in header.tokens):
        raise GGUFError("The vocabulary has an empty token; the file is corrupt.")
    if len(set(header.tokens)) != n:
        raise GGUFError("The vocabulary lists a token twice; the file is corrupt.")
    for suffix in _TOKEN_ID_KEYS:
        entry = meta.get(f"tokenizer.ggml.{suffix}")
        if entry is not None and not 0 <= entry.value < n:
            raise GGUFError(f"tokenizer.ggml.{suffix} = {entry.value} is outside the vocabulary.")


def _check_model_fits_tensors(header: GGUFHeader, arch: str) -> None:
    """The backbone the hyper-parameters describe must be no bigger than the tensors that fill
    it, so building it allocates in proportion to the file, not to a forged number."""
    embedding = header.tensors.get("token_embd.weight")
    vocab = header.metadata["tokenizer.ggml.tokens"].count
    if embedding is None:
        raise GGUFError("token_embd.weight is missing; the file is not a complete Gemma model.")
    hidden = _int(header, f"{arch}.embedding_length")
    if embedding.dims != (hidden, vocab):
        raise GGUFError(
            f"token_embd.weight has dims {embedding.dims}, but the file declares "
            f"embedding_length {hidden} and a vocabulary of {vocab} tokens."
        )
    layers = _int(header, f"{arch}.block_count")
    heads = _int(header, f"{arch}.attention.head_count")
    kv_heads = _int(header, f"{arch}.attention.head_count_kv", heads)
    head_dim = _int(header, f"{arch}.attention.key_length", hidden // max(heads, 1))
    ffn = _int(header, f"{arch}.feed_forward_length", 1 if arch == "gemma4" else None)
    if arch == "gemma4":
        # Per-layer counts (arrays, not kept here) and the smaller sliding-layer head size
        # give a lower bound, which is all this check needs.
        if header.metadata.get(f"{arch}.attention.head_count_kv", KeyValue(0)).type == _ARRAY:
            kv_heads = 1
        head_dim = min(head_dim, _int(header, f"{arch}.attention.key_length_swa", head_dim))
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    declared = vocab * hidden + layers * (attention + 3 * hidden * ffn)
    held = sum(t.elements for t in header.tensors.values())
    if declared > held:
        raise GGUFError(
            f"The hyper-parameters describe a model of {declared} weights, but the file's "
            f"tensors hold only {held}; block_count / embedding_length / head_count / "
            "feed_forward_length are corrupt."
        )


def _int(header: GGUFHeader, key: str, default: int | None = None) -> int:
    entry = header.metadata.get(key)
    value = default if entry is None or entry.type == _ARRAY else entry.value
    if value is None:
        raise GGUFError(f"GGUF key {key!r} is missing; this is not a complete Gemma GGUF file.")
    return int(value)
