"""Saved LoRA adapters: round trip into a new session, base-model checks, unload, atomicity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gemma_lab.errors import GemmaLabError, InputError
from gemma_lab.finetune import adapters_dir
from tests.test_finetune import PAIRS, fresh_lab, logits


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMMA_LAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def trained():
    """A tiny session after a short fine-tune (module-scoped: training is the slow part)."""
    lab = fresh_lab(seed=0)
    lab.finetune(PAIRS * 2, rank=2, epochs=2, learning_rate=1e-2, progress=False, seed=0)
    return lab


def test_save_then_load_in_a_new_session_reproduces_logits(trained):
    path = trained.adapters.save("facts")
    assert trained.adapter_name == "facts"
    assert sorted(p.name for p in path.iterdir()) == [
        "adapter.json", "gemma_lab_cache.json", "lora.npz"]
    metadata = json.loads((path / "adapter.json").read_text())
    assert metadata["rank"] == 2 and metadata["base"]["model"] == "tiny-gemma3"
    assert metadata["base"]["weights_sha256"].startswith("weights:")
    assert metadata["hyperparameters"]["epochs"] == 2 and metadata["final_loss"] > 0
    assert len(metadata["data_sha256"]) == 64 and metadata["created"]
    with np.load(path / "lora.npz") as archive:
        assert all("lora_kernel" in key for key in archive.files)
        assert len(archive.files) == 2 * 2 * 2  # layers × (query, value) × (A, B)

    fresh = fresh_lab(seed=0)
    base = logits(fresh)
    fresh.adapters.load("facts")
    np.testing.assert_allclose(logits(fresh), logits(trained), atol=1e-5)
    assert not np.allclose(logits(fresh), base, atol=1e-4)
    assert fresh.generate("hello", max_new_tokens=2).metadata["adapter"] == "facts"
    [row] = fresh.adapters.list()
    assert row["name"] == "facts" and row["compatible"] and row["active"] and row["rank"] == 2


def test_unload_restores_the_base_logits_exactly(trained):
    base = logits(fresh_lab(seed=0))
    trained.adapters.save("to-unload")
    trained.adapters.unload()
    assert trained.adapter_name is None
    np.testing.assert_array_equal(logits(trained), base)
    assert trained.generate("hello", max_new_tokens=2).metadata["adapter"] is None
    trained.adapters.load("to-unload")
    assert not np.allclose(logits(trained), base, atol=1e-4)


def test_an_adapter_for_another_base_model_is_refused(trained):
    trained.adapters.save("seed0")
    other = fresh_lab(seed=1)
    before = logits(other)
    with pytest.raises(GemmaLabError, match=r"was trained on tiny-gemma3 .*Load it into a session"):
        other.adapters.load("seed0")
    np.testing.assert_array_equal(logits(other), before)
    assert other.adapter_name is None
    assert other.adapters.list()[0]["compatible"] is False


def test_names_ranks_and_missing_adapters_are_checked(trained):
    with pytest.raises(InputError, match="not valid"):
        trained.adapters.save("../escape")
    with pytest.raises(InputError, match="No adapter named 'nope'"):
        trained.adapters.load("nope")
    with pytest.raises(GemmaLabError, match="no adapter to save"):
        fresh_lab().adapters.save("empty")
    with pytest.raises(InputError, match="already enabled with rank 2"):
        trained.finetune(PAIRS, rank=8, progress=False)


def test_an_interrupted_save_leaves_nothing_on_disk(trained, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trained.adapters.save("half")
    assert list(adapters_dir().iterdir()) == []
    assert trained.adapters.names() == []
