"""`lab.compare(text, adapter=...)`: the base model against a LoRA adapter, checked against
keras-hub's own CausalLM call (a fresh copy of the base model, and the tuned model itself),
and the session's adapter left exactly as it was (tiny model: fast)."""

from __future__ import annotations

import numpy as np
import pytest

TEXT = "hello world, the quick brown fox"
DATA = [
    "hello world, this is a tiny corpus.",
    "the quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b",
    "research notebooks show token probabilities.",
    "numbers 0 1 2 3 4 5 6 7 8 9",
    "hello there, the fox is quick.",
    "attention maps and token probabilities.",
    "the lazy dog sleeps all day.",
]


def _session():
    from gemma_lab.models.loading import LoadedModel
    from gemma_lab.session import GemmaLab
    from gemma_lab.testing import tiny_causal_lm

    # Its own model (not the shared tiny_session): fine-tuning changes it.
    return GemmaLab(LoadedModel(tiny_causal_lm(), "tiny-compare", "test", None, "float32"))


def _keras_hub_logprobs(causal_lm, token_ids) -> np.ndarray:
    """log p of token_ids[1:] from keras-hub's own CausalLM call."""
    from gemma_lab.backend import to_numpy

    ids = np.asarray([token_ids], dtype="int32")
    logits = to_numpy(causal_lm({"token_ids": ids, "padding_mask": np.ones_like(ids)}))[0]
    logits = logits.astype("float64")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    logprobs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return logprobs[np.arange(len(token_ids) - 1), token_ids[1:]]


def _lora(lab):
    from gemma_lab.finetune import lora

    return {key: np.array(value) for key, value in lora.lora_weights(lab.backbone).items()}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    from gemma_lab.testing import tiny_causal_lm

    lab = _session()
    ids = lab.tokenizer.encode(TEXT, add_bos=True)
    base_score = np.asarray(lab.score(TEXT).logprobs)
    fresh = _keras_hub_logprobs(tiny_causal_lm(), ids)  # same seed: the same base weights
    # A large learning rate so that one short epoch moves the scores measurably.
    result = lab.finetune(DATA, rank=2, epochs=1, learning_rate=1e-2, progress=False, seed=0)
    with pytest.MonkeyPatch.context() as patch:  # saved adapters go to a scratch cache
        patch.setenv("GEMMA_LAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield lab, ids, base_score, fresh, result


def test_compare_base_vs_the_adapter_in_use(tuned):
    lab, ids, base_score, fresh, result = tuned
    name = lab.adapter_name
    assert name is not None and name.startswith("unsaved-"), name
    tuned_score = np.asarray(lab.score(TEXT).logprobs)
    tuned_keras = _keras_hub_logprobs(lab.causal_lm, ids)  # the LoRA lives in the backbone
    weights = _lora(lab)

    c = lab.compare(TEXT, adapter=True)

    effect = float(np.abs(tuned_score - base_score).max())
    diffs = {
        "a vs score before tuning": float(np.abs(c.logprobs_a - base_score).max()),
        "a vs keras-hub fresh base": float(np.abs(c.logprobs_a - fresh).max()),
        "b vs adapter score": float(np.abs(c.logprobs_b - tuned_score).max()),
        "b vs keras-hub tuned": float(np.abs(c.logprobs_b - tuned_keras).max()),
    }
    print(f"\nadapter {name} ({result.steps} steps): effect {effect:.3f}; "
          + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    assert effect > 1e-2  # the adapter changes the scores, so the comparison can fail
    assert c.labels == ("base model", f"adapter {name}")
    assert c.token_ids_a == c.token_ids_b == tuple(ids[1:])
    assert c.metadata_a.get("adapter") is None and c.metadata_b.get("adapter") == name
    assert diffs["a vs score before tuning"] <= 1e-6
    assert diffs["b vs adapter score"] <= 1e-6
    assert diffs["a vs keras-hub fresh base"] <= 1e-5
    assert diffs["b vs keras-hub tuned"] <= 1e-5
    np.testing.assert_allclose(c.diff, c.logprobs_b - c.logprobs_a)

    # Afterwards: the same adapter, bit for bit, and the same scores.
    assert lab.adapter_name == name
    after = _lora(lab)
    assert after.keys() == weights.keys()
    assert all(np.array_equal(after[k], weights[k]) for k in weights)
    assert np.array_equal(np.asarray(lab.score(TEXT).logprobs), tuned_score)

    # Unloading afterwards gives the base scores compare reported.
    with lab.adapters.using(None):
        unloaded = np.asarray(lab.score(TEXT).logprobs)
    assert float(np.abs(unloaded - c.logprobs_a).max()) <= 1e-6
    assert lab.adapter_name == name


def test_compare_a_saved_adapter_from_the_base_model(tuned):
    lab, _, base_score, _, _ = tuned
    tuned_score = np.asarray(lab.score(TEXT).logprobs)
    lab.adapters.save("compare-test")
    lab.adapters.unload()
    assert lab.adapter_name is None
    unloaded = np.asarray(lab.score(TEXT).logprobs)
    assert float(np.abs(unloaded - base_score).max()) <= 1e-6

    c = lab.compare(TEXT, adapter="compare-test")
    print(f"\nsaved adapter: |a - base| {np.abs(c.logprobs_a - base_score).max():.2e}, "
          f"|b - tuned| {np.abs(c.logprobs_b - tuned_score).max():.2e}")
    assert c.labels == ("base model", "adapter compare-test")
    assert float(np.abs(c.logprobs_a - base_score).max()) <= 1e-6
    assert float(np.abs(c.logprobs_b - tuned_score).max()) <= 1e-6
    # The session stays on the base model it was on.
    assert lab.adapter_name is None
    assert float(np.abs(np.asarray(lab.score(TEXT).logprobs) - base_score).max()) <= 1e-6
