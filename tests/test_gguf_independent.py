"""gemma_lab's GGUF export and conversion of Gemma 1 ("gemma") and Gemma 2 ("gemma2") checked
against readers that are not gemma_lab's, and gguf's dequantisation checked against a NumPy
port of llama.cpp's C dequantisers.

Independent readers used here:
- transformers' own GGUF loader (`from_pretrained(..., gguf_file=...)`, eager attention, in
  float64 so that the reference adds no rounding of its own) against keras-hub's own call
  of the original model, against gemma_lab's conversion (GGUF -> keras-hub) of the same F32
  and Q8_0 files, and its tokenizer built from the file against keras-hub's. Gemma 3 is not
  repeated against transformers: tests/test_default_model.py already compares the real
  Gemma 3 GGUF through gemma_lab with transformers.
  transformers (5.x, checked on 5.24) supports "gemma2" but not "gemma": its legacy GGUF
  loader's GGUF_SUPPORTED_ARCHITECTURES (transformers/modeling_gguf_pytorch_utils.py, from
  transformers/integrations/ggml.py's GGUF_CONFIG_MAPPING) lists gemma2, gemma3 and gemma4
  only, and the new transformers/integrations/gguf path covers qwen35 / lfm2. For Gemma 1
  the test registers "gemma" with that loader for the duration of the load: the "gemma2"
  key map without the sliding window, and transformers' own Gemma2TensorProcessor (norm
  weights minus one, llama.cpp's convention for Gemma 1 as well: its convert_hf_to_gguf.py
  adds one for both). Tensor names still come from gguf-py's MODEL_ARCH.GEMMA name map and
  the model is transformers' GemmaForCausalLM, so the file's layout is still judged by
  others' code.
  transformers' gemma2 key map also drops `gemma2.attn_logit_softcapping` and
  `gemma2.final_logit_softcapping` and has no query scale (Gemma2Config's default
  query_pre_attn_scalar is 256; llama.cpp scales by 1/sqrt(attention.key_length) for every
  size but 27B). Those three are read from the file by llama.cpp's key names (gguf.Keys)
  and passed to `from_pretrained`, so a missing or wrong key still fails the test. The tiny
  models are "sharpened" (larger query/key kernels and final norm) so that both soft caps
  and the sliding window change the logits; `test_gemma2_soft_caps_are_in_play` shows by how
  much.
- llama.cpp through llama-cpp-python (tests marked `llama_cpp`): logits of the F32 exports and
  its tokenizer, and the Gemma 3 export (whose missing `gemma3.rope.freq_base` these tests
  found: llama.cpp ran the global layers with base 10,000). llama-cpp-python builds from
  source (~40 min on a 2-core box), so it is in the `bench` extra, not `test`: without it
  conftest.py deselects these three tests and says so in the summary (never a silent skip).
  Run them with `pip install -e ".[bench]"` (CMAKE_ARGS as in README) and `pytest -m llama_cpp
  tests/test_gguf_independent.py`.

transformers' legacy loader dequantises with `gguf.quants.dequantize`, as gemma_lab does, so
the Q8_0 comparisons do not check dequantisation independently; the NumPy dequantisers below,
ported from llama.cpp's ggml/src/ggml-quants.c (dequantize_row_q8_0, dequantize_row_q5_0,
dequantize_row_q4_K with get_scale_min_k4, dequantize_row_q6_K; block layouts from
ggml-common.h) and written without gguf's quants.py, do: they are compared on every tensor of
the default Gemma 3 270M Q4_K_M GGUF (types F32, Q8_0, Q5_0, Q4_K, Q6_K) with
`gguf.quants.dequantize` and with gemma_lab's `GGUFModel.tensor`.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gemma_lab.backend import import_keras, to_numpy

ARCHITECTURES = ["gemma", "gemma2"]


# --- tiny models, exported, and read back by transformers --------------------------------------
def _sharpen(causal_lm: Any, query_key: float = 2.0, final: float = 10.0) -> None:
    """Scale every layer's query and key kernels by `query_key` (attention logits by its
    square) and the final norm's multiplier (1 + scale) by `final`: random tiny models
    otherwise give near-uniform attention and logits of ~1, where Gemma 2's soft caps
    (tanh(x / 50) * 50, tanh(x / 30) * 30) are nearly the identity."""
    backbone = causal_lm.backbone
    for i in range(backbone.num_layers):
        attention = backbone.get_layer(f"decoder_block_{i}").attention
        for kernel in (attention.query_dense.kernel, attention.key_dense.kernel):
            kernel.assign(to_numpy(kernel) * query_key)
    scale = backbone.get_layer("final_normalization").scale
    scale.assign((1.0 + to_numpy(scale)) * final - 1.0)


def _sequences(vocabulary_size: int, length: int = 32) -> np.ndarray:
    """Three sequences of `length` ids, one batch: one compilation per model."""
    rng = np.random.default_rng(7)
    ends = [vocabulary_size - 1, 1, 3, 0, vocabulary_size - 2, 5]  # rows at both ends
    return np.array([
        [2, *range(10, 10 + length - 1)],  # longer than the sliding window (4)
        [2, *rng.integers(0, vocabulary_size, size=length - 1)],
        [2, *ends, *rng.integers(0, vocabulary_size, size=length - 1 - len(ends))],
    ], dtype="int32")


def _keras_logits(causal_lm: Any, ids: np.ndarray) -> np.ndarray:
    """keras-hub's own call of the CausalLM: logits [batch, length, vocabulary]."""
    from gemma_lab.testing import keras_hub_inputs

    return to_numpy(causal_lm(keras_hub_inputs(causal_lm.backbone, ids))).astype(np.float64)


def _torch_logits(model: Any, ids: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor(ids, dtype=torch.long)).logits.double().numpy()


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def _gguf_field(path: Path, key: str) -> Any:
    import gguf

    field = gguf.GGUFReader(str(path)).fields.get(key)
    assert field is not None, f"{path.name} has no {key}"
    return field.contents()


class _GemmaRegistered:
    """transformers' legacy GGUF loader with "gemma" (Gemma 1) registered, while in use."""

    def __enter__(self):
        from transformers import modeling_gguf_pytorch_utils as loader

        self._patch = pytest.MonkeyPatch()
        keys = {k: v for k, v in loader.GGUF_CONFIG_MAPPING["gemma2"].items()
                if k != "attention.sliding_window"}
        self._patch.setitem(loader.GGUF_CONFIG_MAPPING, "gemma", keys)
        self._patch.setattr(loader, "GGUF_SUPPORTED_ARCHITECTURES",
                            [*loader.GGUF_SUPPORTED_ARCHITECTURES, "gemma"])
        self._patch.setitem(loader.TENSOR_PROCESSORS, "gemma", loader.Gemma2TensorProcessor)
        return self

    def __exit__(self, *exc):
        self._patch.undo()


def _transformers_model(path: Path, architecture: str) -> Any:
    """transformers' model of the GGUF at `path`, in float64: its own float32 rounding is
    as large as keras-hub's here (up to ~2e-5 of max |logit| on these sharpened models), and
    a float64 reference leaves only keras-hub's in the comparison."""
    import contextlib

    import torch
    import transformers

    overrides: dict[str, Any] = {}
    if architecture == "gemma2":
        import gguf

        keys = gguf.Keys
        overrides = dict(
            query_pre_attn_scalar=_gguf_field(
                path, keys.Attention.KEY_LENGTH.format(arch="gemma2")),
            attn_logit_softcapping=_gguf_field(
                path, keys.LLM.ATTN_LOGIT_SOFTCAPPING.format(arch="gemma2")),
            final_logit_softcapping=_gguf_field(
                path, keys.LLM.FINAL_LOGIT_SOFTCAPPING.format(arch="gemma2")))
    registered = _GemmaRegistered() if architecture == "gemma" else contextlib.nullcontext()
    with registered:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float64,
            attn_implementation="eager", **overrides)
    expected = {"gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM"}[architecture]
    assert type(model).__name__ == expected
    return model.eval()


@dataclasses.dataclass
class Exported:
    architecture: str
    causal_lm: Any  # the original keras-hub model
    paths: dict[str, Path]  # quantisation -> GGUF
    hf: dict[str, Any]  # quantisation -> transformers model of that file
    sequences: np.ndarray  # [3, 32] ids
    keras_logits: np.ndarray  # keras-hub's call of the original on `sequences`


@pytest.fixture(scope="module", params=ARCHITECTURES)
def exported(request, tmp_path_factory) -> Exported:
    import_keras()  # before transformers / keras_hub
    from gemma_lab.models.gguf_export import export_gguf
    from gemma_lab.testing import tiny_causal_lm

    architecture = request.param
    causal_lm = tiny_causal_lm(architecture, num_layers=3, seed=5)
    _sharpen(causal_lm)
    folder = tmp_path_factory.mktemp(f"independent-{architecture}")
    paths = {q: export_gguf(causal_lm, folder / f"{architecture}-{q.lower()}.gguf", q)
             for q in ("F32", "Q8_0")}
    hf = {q: _transformers_model(path, architecture) for q, path in paths.items()}
    sequences = _sequences(causal_lm.backbone.vocabulary_size)
    return Exported(architecture, causal_lm, paths, hf, sequences,
                    _keras_logits(causal_lm, sequences))


def _worst(got: np.ndarray, want: np.ndarray) -> float:
    """max |Δ| / max |logit|, per sequence, worst sequence."""
    assert got.shape == want.shape
    return max(_relative_error(g, w) for g, w in zip(got, want, strict=True))


# Measured max |Δ| / max |logit| of keras-hub (float32) on the original against transformers
# (float64) on the F32 export (seed 5, 3 layers, sharpened; max |logit| ~15): gemma 1.4e-6,
# gemma2 1.5e-6 (seed 6: 2.5e-6, 1.7e-6). Bound 1e-5, 4x the largest; a layout, norm or scale
# error gives 1e-2 to 1 (without one soft cap: 0.02-0.09, test_gemma2_soft_caps_are_in_play).
F32_BOUND = 1e-5


def test_transformers_reads_the_f32_export_like_keras_hub(exported):
    want = exported.keras_logits
    # Logits large enough that a soft cap or a wrong scale would show.
    assert np.abs(want).max(axis=(1, 2)).min() > 5
    error = _worst(_torch_logits(exported.hf["F32"], exported.sequences), want)
    print(f"\n{exported.architecture} F32 export: transformers vs keras-hub "
          f"max|Δ|/max|logit| = {error:.2e} (bound {F32_BOUND:.0e})")
    assert error < F32_BOUND


# gemma_lab's conversion (GGUF -> keras-hub, float32) of a file against transformers (float64)
# on the same file: the same dequantised weights, so only keras-hub's float32 rounding shows.
# Measured max |Δ| / max |logit|: F32 gemma 1.4e-6, gemma2 1.5e-6; Q8_0 gemma 1.6e-6,
# gemma2 2.0e-6.
# Bound 1e-5. (transformers on the Q8_0 file against the unquantised original is not
# asserted: the sharpened attention turns Q8_0's rounding into a fifth of max |logit|, too
# loose to mean anything; tests/test_gguf_roundtrip.py bounds Q8_0 on unsharpened models.)
CONVERSION_BOUND = 1e-5


@pytest.mark.parametrize("quantization", ["F32", "Q8_0"])
def test_gemma_lab_conversion_matches_transformers(exported, quantization):
    from gemma_lab.models.gguf_convert import convert_gguf
    from gemma_lab.models.gguf_file import read_gguf

    converted = convert_gguf(read_gguf(exported.paths[quantization]), progress=False)
    error = _worst(_keras_logits(converted, exported.sequences),
                   _torch_logits(exported.hf[quantization], exported.sequences))
    print(f"\n{exported.architecture} {quantization}: gemma_lab conversion vs transformers "
          f"max|Δ|/max|logit| = {error:.2e} (bound {CONVERSION_BOUND:.0e})")
    assert error < CONVERSION_BOUND


@pytest.mark.parametrize("exported", ["gemma2"], indirect=True)  # Gemma 1 has no soft caps
def test_gemma2_soft_caps_are_in_play(exported):
    """The F32 comparison would catch a wrong or missing soft cap: without either cap,
    transformers' logits move far past F32_BOUND."""
    model, ids, want = exported.hf["F32"], exported.sequences, exported.keras_logits
    attention_cap = model.config.attn_logit_softcapping
    final_cap = model.config.final_logit_softcapping
    assert (attention_cap, final_cap) == (50.0, 30.0)  # what tiny_causal_lm gives gemma2
    try:
        for layer in model.model.layers:
            layer.self_attn.attn_logit_softcapping = None
        without_attention_cap = _worst(_torch_logits(model, ids), want)
    finally:
        for layer in model.model.layers:
            layer.self_attn.attn_logit_softcapping = attention_cap
    try:
        model.config.final_logit_softcapping = None
        without_final_cap = _worst(_torch_logits(model, ids), want)
    finally:
        model.config.final_logit_softcapping = final_cap
    print(f"\ngemma2 without the attention cap: {without_attention_cap:.3f}, without the final "
          f"cap: {without_final_cap:.3f} (max|Δ|/max|logit|)")
    assert min(without_attention_cap, without_final_cap) > 100 * F32_BOUND


TEXTS = [
    "hello world, this is a tiny corpus",
    "hello  world\n\nthe quick brown fox: {x} 123 ünïcode 😀",
    "def add(a, b):\n    return a + b",
]


def test_transformers_tokenizer_from_the_gguf_matches_keras_hub(exported):
    import contextlib

    from transformers import AutoTokenizer

    path = exported.paths["F32"]
    registered = (_GemmaRegistered() if exported.architecture == "gemma"
                  else contextlib.nullcontext())
    with registered:
        hf = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ours = exported.causal_lm.preprocessor.tokenizer
    vocabulary = exported.causal_lm.backbone.vocabulary_size
    assert len(hf) == vocabulary
    assert hf.convert_ids_to_tokens(list(range(vocabulary))) == [
        ours.id_to_token(i) for i in range(vocabulary)]
    for text in TEXTS:
        want = [int(i) for i in to_numpy(ours(text))]
        assert hf(text, add_special_tokens=False)["input_ids"] == want, text
        assert hf(text)["input_ids"] == [2, *want], text  # <bos> first


# --- llama.cpp (llama-cpp-python), when installed ------------------------------------------------
# Measured max |Δ| / max |logit| of llama.cpp (llama-cpp-python 0.3.36, CPU, F32 KV cache) on
# the F32 export against keras-hub on the original: gemma 7.4e-4, gemma2 1.5e-3, already
# ~1.5e-4 at position 0, where only matmuls, norms and GELU act: ggml's CPU GELU reads an FP16
# table. (With the default F16 KV cache: 2.5e-3, 1.9e-3.) Bound 5e-3, 3.4x; a missing soft
# cap gives 0.02-0.09.
LLAMA_CPP_BOUND = 5e-3


def test_gemma3_export_writes_the_global_rope_base(tmp_path):
    """llama.cpp's Gemma 3 takes the global layers' RoPE base from `gemma3.rope.freq_base`
    (default 10,000): the export writes keras-hub's (1e6), the value the released GGUF
    holds, read back with gguf's own reader."""
    import gguf

    import_keras()
    from gemma_lab.models.default_model import default_gguf_path
    from gemma_lab.models.gguf_export import export_gguf
    from gemma_lab.testing import tiny_causal_lm

    def base(path):
        field = gguf.GGUFReader(str(path)).fields["gemma3.rope.freq_base"]
        return float(field.parts[field.data[0]][0])

    causal_lm = tiny_causal_lm("gemma3", num_layers=7, seed=5)  # layer 5 is global
    global_bases = {layer.attention.rope_wavelength
                    for layer in causal_lm.backbone.transformer_layers
                    if not layer.use_sliding_window_attention}
    assert base(export_gguf(causal_lm, tmp_path / "gemma3.gguf")) == global_bases.pop()
    assert base(default_gguf_path()) == 1_000_000.0


def _llama_cpp(path: Path) -> Any:
    import llama_cpp

    return llama_cpp.Llama(model_path=str(path), n_ctx=64, n_batch=64, n_threads=1,
                           logits_all=True, verbose=False, type_k=llama_cpp.GGML_TYPE_F32,
                           type_v=llama_cpp.GGML_TYPE_F32)


def _llama_cpp_logits(model: Any, sequences: np.ndarray) -> np.ndarray:
    out = []
    for ids in sequences:
        model.reset()
        model.eval([int(i) for i in ids])
        out.append(np.array(model.scores[: len(ids)], dtype=np.float64))
    return np.stack(out)


@pytest.mark.llama_cpp
def test_llama_cpp_reads_the_f32_export_like_keras_hub(exported):
    model = _llama_cpp(exported.paths["F32"])
    try:
        error = _worst(_llama_cpp_logits(model, exported.sequences), exported.keras_logits)
        ours = exported.causal_lm.preprocessor.tokenizer
        for text in TEXTS:
            want = [int(i) for i in to_numpy(ours(text))]
            assert model.tokenize(text.encode(), add_bos=False, special=False) == want, text
    finally:
        model.close()
    print(f"\n{exported.architecture} F32 export: llama.cpp vs keras-hub "
          f"max|Δ|/max|logit| = {error:.2e} (bound {LLAMA_CPP_BOUND:.0e})")
    assert error < LLAMA_CPP_BOUND


@pytest.mark.llama_cpp
def test_llama_cpp_reads_the_gemma3_f32_export_like_keras_hub(tmp_path):
    """Gemma 3's export is not compared with transformers here (its Gemma3TextConfig defaults
    to the right bases), but llama.cpp reads the file's own keys: without
    `gemma3.rope.freq_base` it ran the global layers with base 10,000 (measured 0.095 of max
    |logit|; 8.3e-4 with the key)."""
    import_keras()
    from gemma_lab.models.gguf_export import export_gguf
    from gemma_lab.testing import tiny_causal_lm

    causal_lm = tiny_causal_lm("gemma3", num_layers=7, seed=5)  # layer 5 is global
    _sharpen(causal_lm)
    model = _llama_cpp(export_gguf(causal_lm, tmp_path / "gemma3.gguf"))
    sequences = _sequences(causal_lm.backbone.vocabulary_size)
    try:
        error = _worst(_llama_cpp_logits(model, sequences), _keras_logits(causal_lm, sequences))
    finally:
        model.close()
    print(f"\ngemma3 F32 export: llama.cpp vs keras-hub max|Δ|/max|logit| = {error:.2e}")
    assert error < LLAMA_CPP_BOUND


# --- dequantisation: a NumPy port of llama.cpp's dequantize_row_* ---------------------------------
QK_K = 256
# GGML type name -> (values per block, bytes per block), from ggml-common.h.
BLOCKS = {"Q8_0": (32, 2 + 32), "Q5_0": (32, 2 + 4 + 16), "Q4_K": (QK_K, 2 + 2 + 12 + QK_K // 2),
          "Q6_K": (QK_K, QK_K // 2 + QK_K // 4 + QK_K // 16 + 2)}


def _fp16(blocks: np.ndarray, offset: int) -> np.ndarray:
    """GGML_FP16_TO_FP32 of the little-endian half at `offset` of each block: [blocks, 1]."""
    return np.ascontiguousarray(blocks[:, offset:offset + 2]).view("<f2").astype(np.float32)


def dequantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    # block_q8_0 { ggml_half d; int8_t qs[32]; };  y[j] = qs[j] * d
    d = _fp16(blocks, 0)
    qs = np.ascontiguousarray(blocks[:, 2:34]).view(np.int8).astype(np.float32)
    return qs * d


def dequantize_q5_0(blocks: np.ndarray) -> np.ndarray:
    # block_q5_0 { ggml_half d; uint8_t qh[4]; uint8_t qs[16]; }
    # for j < 16: xh_0 = ((qh >> j) << 4) & 0x10; xh_1 = (qh >> (j + 12)) & 0x10;
    #   y[j] = ((qs[j] & 0x0F | xh_0) - 16) * d; y[j + 16] = ((qs[j] >> 4 | xh_1) - 16) * d
    d = _fp16(blocks, 0)
    qh = np.ascontiguousarray(blocks[:, 2:6]).view("<u4")  # memcpy into a uint32_t
    qs = blocks[:, 6:22].astype(np.uint32)
    j = np.arange(16, dtype=np.uint32)
    xh_0 = ((qh >> j) << 4) & 0x10
    xh_1 = (qh >> (j + 12)) & 0x10
    x0 = ((qs & 0x0F) | xh_0).astype(np.int32) - 16
    x1 = ((qs >> 4) | xh_1).astype(np.int32) - 16
    return np.concatenate([x0, x1], axis=1).astype(np.float32) * d


def _scale_min_k4(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """get_scale_min_k4(j, scales) for j = 0..7, per block: (sc, m) as float32 [blocks, 8]."""
    sc = np.empty((q.shape[0], 8), np.uint8)
    m = np.empty_like(sc)
    for j in range(8):
        if j < 4:
            sc[:, j] = q[:, j] & 63
            m[:, j] = q[:, j + 4] & 63
        else:
            sc[:, j] = (q[:, j + 4] & 0xF) | ((q[:, j - 4] >> 6) << 4)
            m[:, j] = (q[:, j + 4] >> 4) | ((q[:, j] >> 6) << 4)
    return sc.astype(np.float32), m.astype(np.float32)


def dequantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    # block_q4_K { ggml_half d, dmin; uint8_t scales[12]; uint8_t qs[128]; }
    # four 64-value chunks; chunk c uses sub-blocks is = 2c, 2c + 1 and qs[32c : 32c + 32]:
    #   d1 = d * sc(is); m1 = dmin * m(is); y = d1 * (q & 0xF) - m1   (low nibbles, 32)
    #   d2 = d * sc(is + 1); m2 = dmin * m(is + 1); y = d2 * (q >> 4) - m2   (high, 32)
    d, dmin = _fp16(blocks, 0), _fp16(blocks, 2)
    sc, m = _scale_min_k4(blocks[:, 4:16])
    qs = blocks[:, 16:144]
    y = np.empty((blocks.shape[0], QK_K), np.float32)
    for c in range(4):
        q = qs[:, 32 * c:32 * c + 32]
        for half, nibbles in enumerate((q & 0xF, q >> 4)):
            s = 2 * c + half
            scale, low = d * sc[:, s:s + 1], dmin * m[:, s:s + 1]
            start = 64 * c + 32 * half
            y[:, start:start + 32] = scale * nibbles.astype(np.float32) - low
    return y


def dequantize_q6_k(blocks: np.ndarray) -> np.ndarray:
    # block_q6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; ggml_half d; }
    # two 128-value halves (ql += 64, qh += 32, sc += 8 each); for l < 32, is = l / 16:
    #   q1 = (ql[l] & 0xF | ((qh[l] >> 0) & 3) << 4) - 32      -> y[l]      = d * sc[is] * q1
    #   q2 = (ql[l + 32] & 0xF | ((qh[l] >> 2) & 3) << 4) - 32 -> y[l + 32] = d * sc[is+2] * q2
    #   q3 = (ql[l] >> 4 | ((qh[l] >> 4) & 3) << 4) - 32       -> y[l + 64] = d * sc[is+4] * q3
    #   q4 = (ql[l + 32] >> 4 | ((qh[l] >> 6) & 3) << 4) - 32  -> y[l + 96] = d * sc[is+6] * q4
    ql, qh = blocks[:, 0:128], blocks[:, 128:192]
    scales = np.ascontiguousarray(blocks[:, 192:208]).view(np.int8).astype(np.float32)
    d = _fp16(blocks, 208)
    y = np.empty((blocks.shape[0], QK_K), np.float32)
    sub = np.arange(32) // 16
    for h in range(2):
        low, high = ql[:, 64 * h:64 * h + 32], ql[:, 64 * h + 32:64 * h + 64]
        bits, sc = qh[:, 32 * h:32 * h + 32], scales[:, 8 * h:8 * h + 8]
        quants = [(low & 0xF) | (((bits >> 0) & 3) << 4), (high & 0xF) | (((bits >> 2) & 3) << 4),
                  (low >> 4) | (((bits >> 4) & 3) << 4), (high >> 4) | (((bits >> 6) & 3) << 4)]
        for k, q in enumerate(quants):
            start = 128 * h + 32 * k
            y[:, start:start + 32] = ((d * sc[:, sub + 2 * k])
                                      * (q.astype(np.int32) - 32).astype(np.float32))
    return y


DEQUANTIZERS = {"Q8_0": dequantize_q8_0, "Q5_0": dequantize_q5_0, "Q4_K": dequantize_q4_k,
                "Q6_K": dequantize_q6_k}


def reference_dequantize(raw: np.ndarray, type_name: str) -> np.ndarray:
    """Rows of raw GGUF bytes ([rows, bytes per row], as GGUFReader gives a quantised tensor)
    dequantised to float32 [rows, values per row]."""
    values, size = BLOCKS[type_name]
    raw = np.asarray(raw, dtype=np.uint8)
    assert raw.shape[-1] % size == 0
    out = DEQUANTIZERS[type_name](raw.reshape(-1, size))
    return out.reshape(raw.shape[0], raw.shape[-1] // size * values)


def _max_ulp(a: np.ndarray, b: np.ndarray) -> int:
    """Largest distance in float32 units in the last place (0 = equal, +0 == -0)."""
    if np.array_equal(a, b):
        return 0
    def ordered(x):
        bits = np.ascontiguousarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)
    return int(np.abs(ordered(a) - ordered(b)).max(initial=0))


@pytest.fixture(scope="module")
def default_gguf():
    """gemma_lab's GGUFModel of the default file, and its tensors (gguf's GGUFReader
    records) by type name; one reader: parsing the 262k-token vocabulary takes seconds."""
    from gemma_lab.models.default_model import default_gguf_path
    from gemma_lab.models.gguf_file import read_gguf

    lab_model = read_gguf(default_gguf_path())
    by_type: dict[str, list[Any]] = collections.defaultdict(list)
    for tensor in lab_model._tensors.values():
        by_type[tensor.tensor_type.name].append(tensor)
    return by_type, lab_model


@pytest.mark.real_model
def test_default_gguf_holds_only_ported_types(default_gguf):
    by_type, _ = default_gguf
    assert set(by_type) <= {"F32", *DEQUANTIZERS}, "port the new type from ggml-quants.c"
    assert set(DEQUANTIZERS) <= set(by_type)  # so that every port below is exercised


ROWS_PER_CHUNK = 16384


@pytest.mark.real_model
@pytest.mark.parametrize("type_name", ["F32", *DEQUANTIZERS])
def test_reference_dequantiser_matches_gguf_and_gemma_lab(default_gguf, type_name):
    """Every tensor of this type in the default GGUF, every row: the port of llama.cpp's
    dequantize_row_* against gemma_lab's GGUFModel.tensor (gguf.quants.dequantize, then the
    HF layout, rows = outputs), and against gguf.quants.dequantize itself on each tensor's
    first rows. Measured: bitwise equal (0 ulp) on all 136 tensors, all five types; bound
    1 ulp, in case one side evaluates d * (sc * q) where the other does (d * sc) * q."""
    from gguf.quants import dequantize

    by_type, lab_model = default_gguf
    tensors = by_type[type_name]
    assert tensors, f"the default GGUF has no {type_name} tensor"
    worst_gguf = worst_lab = elements = 0
    for tensor in tensors:
        lab = lab_model.tensor(tensor.name)  # [ne1, ne0], HF layout
        assert lab.shape == tuple(int(n) for n in reversed(tensor.shape.tolist()))
        lab_rows = lab.reshape(-1, lab.shape[-1])
        raw = np.asarray(tensor.data)
        if type_name == "F32":  # the file's bytes, read by NumPy
            raw = raw.reshape(-1, lab.shape[-1])
        for start in range(0, raw.shape[0], ROWS_PER_CHUNK):
            chunk = raw[start:start + ROWS_PER_CHUNK]
            if type_name == "F32":
                ours = np.frombuffer(chunk.tobytes(), dtype="<f4").reshape(chunk.shape)
            else:
                ours = reference_dequantize(chunk, type_name)
            assert ours.shape == lab_rows[start:start + len(chunk)].shape
            assert np.isfinite(ours).all()
            worst_lab = max(worst_lab, _max_ulp(ours, lab_rows[start:start + len(chunk)]))
            if start == 0:
                theirs = np.asarray(dequantize(chunk, tensor.tensor_type), dtype=np.float32)
                worst_gguf = max(worst_gguf, _max_ulp(ours, theirs.reshape(ours.shape)))
        elements += lab.size
        assert np.abs(lab).max() > 0, f"{tensor.name} dequantised to zeros"
    print(f"\n{type_name}: {len(tensors)} tensors, {elements} values: max ulp vs "
          f"gemma_lab {worst_lab}, vs gguf.quants.dequantize {worst_gguf}")
    assert worst_lab <= 1
    assert worst_gguf <= 1
