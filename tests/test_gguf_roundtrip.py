"""Tiny random keras-hub Gemmas survive keras-hub -> GGUF -> keras-hub, for every architecture."""

import numpy as np
import pytest

from gemma_lab.backend import to_numpy
from gemma_lab.errors import GGUFError
from gemma_lab.models.gguf_convert import convert_gguf
from gemma_lab.models.gguf_export import export_gguf
from gemma_lab.models.gguf_file import read_gguf
from gemma_lab.testing import tiny_causal_lm

ARCHITECTURES = ["gemma", "gemma2", "gemma3"]


def _logits(causal_lm, token_ids):
    ids = np.asarray([token_ids], dtype="int32")
    backbone = causal_lm.backbone
    hidden = backbone({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    return to_numpy(backbone.token_embedding(hidden, reverse=True))[0]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_float32_round_trip_keeps_logits(architecture, tmp_path):
    # 7 layers: gemma3 mixes sliding-window and global layers (every 6th is global).
    original = tiny_causal_lm(architecture, num_layers=7, seed=1)
    path = export_gguf(original, tmp_path / "m.gguf")
    parsed = read_gguf(path)
    assert parsed.hparams.architecture == architecture
    restored = convert_gguf(parsed, progress=False)
    ids = [2, *range(10, 40)]
    np.testing.assert_allclose(_logits(restored, ids), _logits(original, ids), atol=1e-5, rtol=0)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_q8_0_round_trip_stays_close(architecture, tmp_path):
    original = tiny_causal_lm(architecture, num_layers=2, seed=2)
    path = export_gguf(original, tmp_path / "m.gguf", quantization="Q8_0")
    types = {t.tensor_type.name for t in read_gguf(path)._tensors.values()}
    assert "Q8_0" in types
    restored = convert_gguf(read_gguf(path), progress=False)
    ids = [2, *range(10, 30)]
    want, got = _logits(original, ids), _logits(restored, ids)
    # Q8_0 keeps ~2-3 significant digits per weight; a layout bug would give ~100% error.
    # Measured max |Δ| / max |logit| (seed 2): gemma 0.0175, gemma2 0.063, gemma3 0.023;
    # bounds 1.5x those.
    bound = {"gemma": 0.026, "gemma2": 0.095, "gemma3": 0.035}[architecture]
    assert np.abs(want - got).max() < bound * np.abs(want).max()
    # Random weights give near-ties, so a few positions may flip; most must agree.
    assert np.mean(want.argmax(-1) == got.argmax(-1)) >= 0.9


def test_round_trip_preserves_the_vocabulary(tmp_path):
    import sentencepiece as spm

    from gemma_lab.models.gguf_tokenizer import sentencepiece_proto

    original = tiny_causal_lm("gemma3")
    parsed = read_gguf(export_gguf(original, tmp_path / "m.gguf"))
    # llama.cpp's quirks are present in the file and undone by the converter.
    assert parsed.vocabulary.token_types[parsed.vocabulary.unk_id] == 3
    rebuilt = spm.SentencePieceProcessor(model_proto=sentencepiece_proto(parsed.vocabulary))
    reference = spm.SentencePieceProcessor(model_proto=original.preprocessor.tokenizer.proto)
    text = "hello  world\n\nthe quick brown fox: {x} 123 ünïcode 😀"
    assert rebuilt.encode(text) == reference.encode(text)
    assert rebuilt.unk_id() == reference.unk_id()


def test_non_gemma_architecture_is_refused(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "llama.gguf"), "llama")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(GGUFError, match="llama"):
        read_gguf(tmp_path / "llama.gguf")


def test_truncated_file_is_a_gguf_error(tmp_path):
    path = export_gguf(tiny_causal_lm("gemma"), tmp_path / "m.gguf")
    data = path.read_bytes()
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(GGUFError):
        model = read_gguf(truncated)
        convert_gguf(model, progress=False)
