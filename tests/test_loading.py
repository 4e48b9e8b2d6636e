"""Resolving model specs: GGUF files through the cache, local keras-hub presets, errors."""

import json

import numpy as np
import pytest

import gemma_lab
from gemma_lab.errors import CacheError, InputError, ModelLoadError
from gemma_lab.models import cache
from gemma_lab.testing import tiny_causal_lm, tiny_gguf


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMMA_LAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _next_token_logprobs(lab, text="hello world"):
    return np.asarray(lab.score(text).logprobs)


def test_gguf_file_converts_once_then_loads_from_the_cache(isolated_cache, tmp_path):
    path = tiny_gguf("gemma2", directory=tmp_path)
    first = gemma_lab.load(path, progress=False)
    entries = list((isolated_cache / "presets").iterdir())
    assert len(entries) == 1 and cache.read_marker(entries[0]) is not None
    marker = json.loads((entries[0] / cache.MARKER).read_text())
    assert marker["sha256"] == first.info().weights_sha256
    mtime = (entries[0] / "model.weights.h5").stat().st_mtime
    second = gemma_lab.load(path, progress=False)
    assert (entries[0] / "model.weights.h5").stat().st_mtime == mtime  # not rebuilt
    np.testing.assert_allclose(_next_token_logprobs(first), _next_token_logprobs(second), atol=1e-6)


def test_local_preset_directory_loads_through_keras_hub(tmp_path):
    causal_lm = tiny_causal_lm("gemma3", seed=4)
    causal_lm.save_to_preset(str(tmp_path / "preset"))
    lab = gemma_lab.load(tmp_path / "preset", progress=False)
    assert type(lab.causal_lm).__name__ == "Gemma3CausalLM"
    reference = gemma_lab.session.GemmaLab(
        gemma_lab.models.loading.LoadedModel(causal_lm, "ref", "ref", None, "float32"))
    np.testing.assert_allclose(_next_token_logprobs(lab), _next_token_logprobs(reference),
                               atol=1e-5)


def test_bfloat16_preset_generates_close_to_float32(tmp_path):
    tiny_causal_lm("gemma3", seed=5).save_to_preset(str(tmp_path / "preset"))
    f32 = gemma_lab.load(tmp_path / "preset", progress=False)
    bf16 = gemma_lab.load(tmp_path / "preset", dtype="bfloat16", progress=False)
    assert bf16.info().dtype == "bfloat16"
    assert str(bf16.backbone.token_embedding.embeddings.dtype) == "bfloat16"
    diff = np.abs(_next_token_logprobs(f32) - _next_token_logprobs(bf16)).max()
    assert diff < 0.1
    assert len(bf16.generate("hello", max_new_tokens=4).token_ids) >= 1


def test_interrupted_cache_write_leaves_nothing_that_loads(tmp_path):
    target = tmp_path / "presets" / "entry"

    def fail(directory):
        (directory / "model.weights.h5").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.write_entry(target, fail, {"sha256": "x"})
    assert not target.exists()
    assert list((tmp_path / "presets").iterdir()) == []


def test_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("GEMMA_LAB_CACHE", str(blocker))
    with pytest.raises(CacheError, match="GEMMA_LAB_CACHE"):
        cache.write_entry(cache.entry_path("presets", "x"), lambda d: None, {})


@pytest.mark.parametrize(
    "spec, message",
    [
        ("missing/model.gguf", "No GGUF file"),
        ("no_such_preset_name", "Cannot resolve"),
    ],
)
def test_bad_specs_say_what_to_do(spec, message):
    with pytest.raises(ModelLoadError, match=message):
        gemma_lab.load(spec, progress=False)


def test_directory_that_is_not_a_preset(tmp_path):
    with pytest.raises(ModelLoadError, match="neither a keras-hub preset"):
        gemma_lab.load(tmp_path, progress=False)


def test_unknown_dtype_is_refused():
    with pytest.raises(InputError, match="bfloat16"):
        gemma_lab.load(dtype="float8", progress=False)


def test_concurrent_first_loads_of_one_gguf_all_succeed(isolated_cache, tmp_path):
    """Three kernels loading the same GGUF into an empty cache at once: one converts, the
    others wait for its entry (`cache.entry_lock`); none fails on the other's rename."""
    import os
    import subprocess
    import sys

    path = tiny_gguf("gemma", directory=tmp_path)
    script = ("import sys, gemma_lab; lab = gemma_lab.load(sys.argv[1], progress=False); "
              "print(repr(lab.score('hello world').logprobs))")
    env = {**os.environ, "GEMMA_LAB_CACHE": str(isolated_cache)}
    children = [subprocess.Popen([sys.executable, "-c", script, str(path)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
    outputs = [child.communicate(timeout=600) for child in children]
    for child, (_, stderr) in zip(children, outputs, strict=True):
        assert child.returncode == 0, stderr[-3000:]
    assert len({stdout.strip().splitlines()[-1] for stdout, _ in outputs}) == 1
    names = sorted(p.name for p in (isolated_cache / "presets").iterdir())
    assert len([n for n in names if not n.startswith(".")]) == 1, names
    assert not [n for n in names if ".tmp-" in n], names  # no half-written entry left
