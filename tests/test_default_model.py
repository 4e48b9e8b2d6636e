"""The real default model (Gemma 3 270M from the PyPI GGUF) against independent peers:
transformers' own GGUF loader for logits and tokenization, keras-hub's generate for greedy
decoding, on all three backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

WORKER = Path(__file__).with_name("real_model_worker.py")
MIXED_TEXT = (
    "Hello  world!\n\tThe year 2024: 3.14159 — naïve café 日本語 😀👍🏽 ÆØÅ\n"
    "def f(x):\n    return {'a': [1, 2]}  # comment\n\n\n   trailing   spaces   "
)


@pytest.fixture(scope="module")
def gguf_path():
    from gemma_lab.models.default_model import default_gguf_path

    return default_gguf_path()


@pytest.fixture(scope="module")
def hf_tokenizer(gguf_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)


@pytest.fixture(scope="module", params=["jax", "tensorflow", "torch"])
def backend_run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param) / "run.npz"
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["GEMMA_LAB_BACKEND"] = request.param
    result = subprocess.run([sys.executable, str(WORKER), str(out)], capture_output=True,
                            text=True, env=env, timeout=1500)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["backend"] == request.param
    print(f"\n[{request.param}] load {summary['load_s']:.1f}s, "
          f"{summary['tokens_per_s']:.1f} tok/s: {summary['text']!r}")
    return request.param, dict(np.load(out)), summary


def test_logits_agree_with_transformers(backend_run, hf_gguf_model):
    import torch

    backend, arrays, _ = backend_run
    for i in range(3):
        ids = arrays[f"ids_{i}"]
        with torch.no_grad():
            want = hf_gguf_model(torch.tensor(ids[None].astype("int64"))).logits[0].numpy()
        got = arrays[f"logits_{i}"]
        assert np.abs(got - want).max() <= 1e-3, (backend, i, np.abs(got - want).max())
        assert np.array_equal(got.argmax(-1), want.argmax(-1)), (backend, i)


def test_greedy_32_tokens_equal_keras_hub_generate(backend_run):
    backend, arrays, summary = backend_run
    assert len(arrays["greedy_ids"]) == 32, summary
    assert arrays["greedy_ids"].tolist() == arrays["keras_hub_ids"].tolist(), backend


def test_scores_of_the_greedy_text_are_high(backend_run):
    # Teacher-forcing the greedy continuation: the generated tokens were each the argmax.
    _, arrays, _ = backend_run
    assert np.all(np.isfinite(arrays["score_logprobs"]))


def test_token_ids_equal_transformers_tokenizer(default_lab, hf_tokenizer):
    ours = default_lab.tokenizer.encode(MIXED_TEXT, add_bos=True)
    theirs = hf_tokenizer(MIXED_TEXT)["input_ids"]
    assert ours == theirs
    assert default_lab.tokenizer.decode(ours[1:]) == MIXED_TEXT


def test_keras_hub_preprocessor_agrees_with_our_tokenizer(default_lab):
    from gemma_lab.backend import to_numpy

    keras_ids = to_numpy(default_lab.causal_lm.preprocessor.tokenizer(MIXED_TEXT)).tolist()
    assert keras_ids == default_lab.tokenizer.encode(MIXED_TEXT)


def test_info_describes_the_default_model(default_lab):
    info = default_lab.info()
    assert info.architecture == "Gemma3" and info.num_layers == 18
    assert 250_000_000 < info.parameters < 300_000_000
    from gemma_lab.models.default_model import default_gguf_sha256

    assert info.weights_sha256 == default_gguf_sha256()


def test_second_load_uses_the_cache(default_lab):
    import time

    import gemma_lab
    from gemma_lab.models.cache import cache_root

    assert any((cache_root() / "presets").iterdir())
    started = time.perf_counter()
    again = gemma_lab.load(progress=False)
    elapsed = time.perf_counter() - started
    print(f"\nwarm load: {elapsed:.1f}s")
    g1 = again.generate("Hello", max_new_tokens=4)
    g2 = default_lab.generate("Hello", max_new_tokens=4)
    assert g1.token_ids == g2.token_ids
