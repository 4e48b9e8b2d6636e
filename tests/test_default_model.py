"""The real default model (Gemma 3 270M from the PyPI GGUF) against independent peers:
transformers' own GGUF loader for logits and tokenization, keras-hub's generate for greedy
decoding, on all three backends."""

from __future__ import annotations

import numpy as np
import pytest

from gemma_lab.testing import numpy_log_softmax

BACKENDS = ("jax", "tensorflow", "torch")

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

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


@pytest.fixture(scope="module", params=BACKENDS)
def backend_run(request, backend_runs):
    """(backend, arrays of tests/real_model_worker.py's run on it)."""
    return request.param, backend_runs[request.param]


def test_logits_agree_with_transformers(backend_run, hf_gguf_model):
    import torch

    backend, arrays = backend_run
    for i in range(3):
        ids = arrays[f"ids_{i}"]
        with torch.no_grad():
            want = hf_gguf_model(torch.tensor(ids[None].astype("int64"))).logits[0].numpy()
        got = arrays[f"logits_{i}"]
        assert np.abs(got - want).max() <= 1e-3, (backend, i, np.abs(got - want).max())
        assert np.array_equal(got.argmax(-1), want.argmax(-1)), (backend, i)


def test_greedy_32_tokens_equal_keras_hub_generate(backend_run):
    backend, arrays = backend_run
    assert len(arrays["gen_ids"]) == 32, backend
    assert arrays["gen_ids"].tolist() == arrays["keras_hub_ids"].tolist(), backend


def test_generation_statistics_equal_its_score_and_numpy(backend_run):
    """Every greedy token was the argmax (rank 1 in the generation and in the teacher-forced
    score of the same ids); the generation's log-probabilities equal the score's; log p,
    rank, entropy and the top-k ids and probabilities of both equal NumPy's softmax of
    keras-hub's own logits at those positions."""
    backend, arrays = backend_run
    ids = arrays["gen_ids"]
    logp = numpy_log_softmax(arrays["greedy_logits"])
    rows = np.arange(len(ids))
    assert arrays["score_ids"][-len(ids):].tolist() == ids.tolist()
    k = arrays["gen_top_ids"].shape[1]
    want = {"logprobs": logp[rows, ids], "entropy": -(np.exp(logp) * logp).sum(-1),
            "top_ids": np.argsort(-logp, axis=-1, kind="stable")[:, :k]}
    want["top_probs"] = np.exp(np.take_along_axis(logp, want["top_ids"], -1))
    for record in ("gen", "score"):
        got = {name: arrays[f"{record}_{name}"][-len(ids):] for name in
               ("logprobs", "ranks", "entropy", "top_ids", "top_probs")}
        assert got["ranks"].tolist() == [1] * len(ids), (backend, record, got["ranks"])
        worst = {name: float(np.abs(got[name] - want[name]).max())
                 for name in ("logprobs", "entropy", "top_probs")}
        print(f"\n[{backend}] {record} vs NumPy on keras-hub logits: "
              + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
        assert worst["logprobs"] <= 1e-3 and worst["entropy"] <= 1e-3, (backend, record, worst)
        assert worst["top_probs"] <= 1e-4, (backend, record, worst)
        assert got["top_ids"].tolist() == want["top_ids"].tolist(), (backend, record)
    gap = np.abs(arrays["gen_logprobs"] - arrays["score_logprobs"][-len(ids):]).max()
    assert gap <= 1e-3, (backend, gap)


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
    """A second load reads the converted entry: no file of the cache is written again (a
    conversion writes a new entry and renames it over the old one: new inodes, new times)."""
    import time

    import gemma_lab
    from gemma_lab.models.cache import cache_root

    def files():
        return {p: (p.stat().st_ino, p.stat().st_mtime_ns)
                for p in sorted((cache_root() / "presets").rglob("*")) if p.is_file()}

    before = files()
    assert before, "the first load wrote no cache entry"
    started = time.perf_counter()
    again = gemma_lab.load(progress=False)
    elapsed = time.perf_counter() - started
    print(f"\nwarm load: {elapsed:.1f}s")
    assert files() == before
    g1 = again.generate("Hello", max_new_tokens=4)
    g2 = default_lab.generate("Hello", max_new_tokens=4)
    assert g1.token_ids == g2.token_ids
