"""Warm loads of a converted cache entry read its flat weights file (`flat_weights`): same
weights and outputs as keras-hub's from_preset; int8 quantizes the model loaded that way."""

from __future__ import annotations

import numpy as np

import gemma_lab
import gemma_lab.models.loading as loading
from gemma_lab.models.cache import entry_path
from gemma_lab.models.flat_weights import has_flat_weights


def test_second_load_reads_flat_weights_and_matches_the_first(tmp_path, monkeypatch):
    from gemma_lab.testing import tiny_gguf

    monkeypatch.setenv("GEMMA_LAB_CACHE", str(tmp_path / "cache"))
    path = tiny_gguf("gemma3", directory=tmp_path)
    first = gemma_lab.load(path, progress=False)  # converts, loads from_preset, writes the file
    (entry,) = list(entry_path("presets", "x").parent.iterdir())
    assert has_flat_weights(entry)

    def no_from_preset(*args, **kwargs):
        raise AssertionError("the warm load went through from_preset")

    monkeypatch.setattr(loading, "_from_preset", no_from_preset)
    second = gemma_lab.load(path, progress=False)
    for a, b in zip(first.backbone.weights, second.backbone.weights, strict=True):
        assert a.path == b.path
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))
    assert second.generate("hello", max_new_tokens=5).token_ids == \
        first.generate("hello", max_new_tokens=5).token_ids
    # The task and its keras-hub tokenizer (loaded untracked) are the preset's own.
    assert type(second.causal_lm) is type(first.causal_lm)
    text = "hello world, zebra 42"
    assert np.asarray(second.causal_lm.preprocessor.tokenizer(text)).tolist() == \
        np.asarray(first.causal_lm.preprocessor.tokenizer(text)).tolist()
    bf16 = gemma_lab.load(path, dtype="bfloat16", progress=False)
    for a, b in zip(first.backbone.weights, bf16.backbone.weights, strict=True):
        assert str(b.dtype) == "bfloat16"
        np.testing.assert_array_equal(np.asarray(a.numpy()).astype("bfloat16"),
                                      np.asarray(b.numpy()))
    int8 = gemma_lab.load(path, dtype="int8", progress=False)  # quantizes the flat-loaded model
    assert int8.info().dtype == "int8"
    assert len(int8.generate("hello", max_new_tokens=3).steps) >= 1
