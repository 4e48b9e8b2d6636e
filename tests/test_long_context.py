"""Long contexts: a sequence past `CompiledModel.long_tokens` prefills and scores a chunk
at a time through a KV cache, and Gemma 3's sliding-window layers attend to their window
of that cache only (`forward.sliding_mask`). Every statistic equals the one-call path
(keras-hub's own backbone call, no cache) for each family's cache layout, generation after
a chunked prefill equals generation after a one-call prefill, and on the real model a
1,500-token chunked score equals transformers' forward pass of the same GGUF."""

from __future__ import annotations

import numpy as np
import pytest

from gemma_lab.backend import import_keras
from gemma_lab.decoding import CompiledModel
from gemma_lab.forward import ForwardPass, HookSet
from gemma_lab.testing import tiny_causal_lm, tiny_runtime

FAMILIES = ["gemma", "gemma2", "gemma3", "gemma3n", "gemma4"]
STATS = ("logprob", "rank", "top_ids", "top_logprobs", "entropy")


def _ids(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([[2], rng.integers(3, 200, n - 1)]).astype("int32")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("chunk", [8, 12])  # 12 does not divide the 64-position cache
def test_a_chunked_score_equals_one_call(family, chunk):
    runtime = tiny_runtime(family)
    run = runtime.forward_pass()
    ids = _ids(62)
    whole = CompiledModel(run, 5).score(ids, runtime.context_length)
    model = CompiledModel(run, 5, chunk_tokens=chunk, long_tokens=16)
    starts = list(model._chunk_starts(len(ids) - 1, 64))
    # chunk 12: the last chunk is pulled back inside the cache, repeating positions
    assert any(start < first for start, first in starts) == (chunk == 12), starts
    chunked = model.score(ids, runtime.context_length)
    for key in STATS:
        assert chunked[key].shape[0] == whole[key].shape[0] == 61, key
    np.testing.assert_allclose(chunked["logprob"], whole["logprob"], atol=1e-4)
    np.testing.assert_allclose(chunked["top_logprobs"], whole["top_logprobs"], atol=1e-4)
    np.testing.assert_allclose(chunked["entropy"], whole["entropy"], atol=1e-4)
    assert np.abs(chunked["rank"] - whole["rank"]).max() <= 1  # ties within float error
    assert (chunked["top_ids"][:, 0] == whole["top_ids"][:, 0]).mean() > 0.95


@pytest.mark.parametrize("family", ["gemma", "gemma3", "gemma3n", "gemma4"])
def test_generation_after_a_chunked_prefill_equals_one_call(family):
    runtime = tiny_runtime(family)
    run = runtime.forward_pass()
    ids = _ids(45, seed=1).tolist()

    def decode(model: CompiledModel) -> list[dict]:
        cache = model.prefill(ids, 64, 0)
        token, index, steps = ids[-1], len(ids) - 1, []
        while len(steps) < 12:
            stats, cache = model.step(token, cache, index, 12 - len(steps))
            steps.append(stats)
            token, index = stats["token"], index + 1
        return steps

    whole = decode(CompiledModel(run, 5))
    chunked = decode(CompiledModel(run, 5, chunk_tokens=8, long_tokens=16))
    assert [s["token"] for s in chunked] == [s["token"] for s in whole]
    np.testing.assert_allclose([s["logprob"] for s in chunked], [s["logprob"] for s in whole],
                               atol=1e-4)


@pytest.mark.parametrize("family", ["gemma3", "gemma3n"])
def test_a_batch_after_a_chunked_prefill_equals_one_call(family):
    """Prompts of 30 and 45 tokens in one 64-position batch cache: the chunked prefill
    (which fills the shorter row's padding too, as the one-call prefill does) decodes the
    same tokens with the same log-probabilities."""
    from gemma_lab.sampling import SamplerConfig

    runtime = tiny_runtime(family)
    run = runtime.forward_pass()
    prompts = [_ids(30, seed=3).tolist(), _ids(45, seed=4).tolist()]

    def decode(model: CompiledModel) -> list[list[dict]]:
        return model.generate_batch(prompts, 10, [SamplerConfig()] * 2, (), 0, 64)

    whole = decode(CompiledModel(run, 5))
    chunked = decode(CompiledModel(run, 5, chunk_tokens=8, long_tokens=16))
    for got, want in zip(chunked, whole, strict=True):
        assert len(got) == len(want) == 10
        assert [s["token"] for s in got] == [s["token"] for s in want]
        np.testing.assert_allclose([s["logprob"] for s in got], [s["logprob"] for s in want],
                                   atol=1e-4)


def test_decode_steps_past_the_window_equal_the_full_sequence(monkeypatch):
    """Gemma 3 (window 4) decoding into a 64-position cache: each step's logits equal
    keras-hub's uncached call of the whole sequence at that position, though its
    sliding-window layers are handed only their window of the cache."""
    from keras_hub.src.models.gemma3.gemma3_attention import CachedGemma3Attention

    keys_seen = []
    original = CachedGemma3Attention._compute_attention

    def spy(self, q, k, *args, **kwargs):
        keys_seen.append(int(k.shape[1]))
        return original(self, q, k, *args, **kwargs)

    monkeypatch.setattr(CachedGemma3Attention, "_compute_attention", spy)
    runtime = tiny_runtime("gemma3")
    run = runtime.forward_pass()
    ops = import_keras().ops
    ids = _ids(30, seed=2).tolist()
    model = CompiledModel(run, 5)
    cache = model.prefill(ids[:10], 64, 0)
    full = np.asarray(ops.convert_to_numpy(run.unembed(run.sequence(
        np.array([ids]), np.ones((1, len(ids)), "int32")))))[0]
    keys_seen.clear()
    for index in range(9, len(ids) - 1):
        stats, cache = model.step(ids[index], cache, index)
        np.testing.assert_allclose(stats["logits"], full[index], atol=1e-4)
    assert keys_seen and set(keys_seen) == {4}, keys_seen  # the window, not 64 positions


def test_a_pattern_hook_sees_the_whole_cache():
    """With a hook on the attention pattern, the sliding-window layers are not windowed:
    the hook sees a query's weights over every cache position, as documented."""
    causal_lm = tiny_causal_lm("gemma3")
    from gemma_lab.forward import adapter_for

    shapes = []

    def spy(value, ctx):
        shapes.append(tuple(value.shape))

    run = ForwardPass(causal_lm, adapter_for(causal_lm),
                      HookSet.of(fns={"blocks.0.attn.pattern": spy}))
    model = CompiledModel(run, 5)
    cache = model.prefill(_ids(20).tolist(), 64, 0)
    model.step(5, cache, 19)
    assert shapes[-1][-2:] == (1, 64)


@pytest.mark.real_model
def test_a_long_real_score_equals_transformers(default_lab, hf_gguf_model):
    """~1,500 tokens of the default model (Gemma 3 270M, window 512), scored through
    `lab.score`: 512-token chunks through a 2,048-position cache, the sliding layers
    windowed. Every log-probability and
    the top-1 token equal transformers' eager forward pass of the same GGUF."""
    import torch

    text = " ".join(f"Item {i} of the list is the number {i * 7 % 101}." for i in range(110))
    ids = default_lab.tokenizer.encode(text, add_bos=True)
    assert 1024 < len(ids) <= 2048, len(ids)  # one 2,048-position cache, chunked
    score = default_lab.score(text)
    got = {"logprob": np.array(score.logprobs),
           "top_ids": np.array([step.top_k_ids for step in score.steps])}
    with torch.no_grad():
        logits = hf_gguf_model(torch.tensor([ids])).logits[0, :-1].double()
    want = torch.log_softmax(logits, -1)
    target = want[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].numpy()
    print(f"\nmax |Δ logprob| over {len(ids) - 1} positions: "
          f"{np.abs(got['logprob'] - target).max():.2e}")
    np.testing.assert_allclose(got["logprob"], target, atol=2e-3)
    assert (got["top_ids"][:, 0] == want.argmax(-1).numpy()).mean() > 0.99


WORKER = """
import json, numpy as np
from gemma_lab.decoding import CompiledModel
from gemma_lab.testing import tiny_runtime
out = {}
for family in ("gemma3", "gemma3n", "gemma4"):
    runtime = tiny_runtime(family)
    run = runtime.forward_pass()
    ids = np.concatenate([[2], np.random.default_rng(0).integers(3, 200, 61)]).astype("int32")
    whole = CompiledModel(run, 5).score(ids, runtime.context_length)
    chunked = CompiledModel(run, 5, chunk_tokens=12, long_tokens=16).score(
        ids, runtime.context_length)
    out[family] = [len(chunked["logprob"]), float(np.abs(chunked["logprob"]
                                                         - whole["logprob"]).max())]
print(json.dumps(out))
"""


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_a_chunked_score_equals_one_call_on_other_backends(backend):
    """The chunked path on eager torch and TensorFlow (abstract trace of the cache, Gemma
    3n's chunk mask, Gemma 3's windowed keys), in a worker per backend."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND",)}
    env["GEMMA_LAB_BACKEND"] = backend
    done = subprocess.run([sys.executable, "-c", WORKER], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for family, (count, error) in json.loads(done.stdout.strip().splitlines()[-1]).items():
        assert count == 61 and error < 1e-4, (backend, family, count, error)
