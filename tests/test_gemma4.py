"""Gemma 4 behind the same session, on a tiny random keras-hub Gemma4CausalLM with per-layer
embeddings, a mixture of experts, KV sharing and wider global heads on. Values are checked
against keras-hub's own functional call of the same model (with a weight changed for the
reference, and put back), NumPy on the model's own layers, and exact properties; scoring and
greedy decoding against keras-hub run in test_scoring / test_generation / test_forward
(`tiny_lab_any` includes Gemma 4). The Hugging Face route is in test_hf_folders.py."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

from gemma_lab import interventions as iv
from gemma_lab.backend import import_keras, to_numpy
from gemma_lab.errors import InputError, NotAvailableError
from gemma_lab.testing import keras_hub_inputs, numpy_log_softmax, tiny_session

ops = import_keras().ops
TEXT = "hello world, this is a tiny corpus"


@pytest.fixture(scope="module")
def lab():
    return tiny_session("gemma4")


def _keras_hub_logprobs(lab, ids):
    logits = to_numpy(lab.causal_lm(keras_hub_inputs(lab.backbone, [ids])))[0]
    return numpy_log_softmax(logits.astype("float64"))[np.arange(len(ids) - 1), ids[1:]]


@contextmanager
def _weight_set(variable, value):
    """Temporarily assign a weight (the reference model), restoring it exactly."""
    before = to_numpy(variable).copy()
    variable.assign(value)
    try:
        yield
    finally:
        variable.assign(before)


def test_the_model_has_every_gemma4_feature_on(lab):
    adapter = lab.runtime.adapter
    assert adapter.family == "Gemma 4" and lab.info().family == "Gemma 4"
    assert [adapter.kv_source(i) for i in range(4)] == [None, None, 0, 1]
    assert [adapter.sliding_window(i) for i in range(4)] == [4, None, 4, None]
    shape = adapter.shape
    assert shape.head_dims == (8, 16, 8, 16) and shape.kv_heads == (2, 1, 2, 1)
    assert shape.experts == 4 and shape.per_layer_dim == 8
    info = lab.info()
    assert "ablate experts" in info.features and "ablate neurons" in info.not_supported
    assert "Gemma 4" in str(info)


def test_every_point_has_its_documented_shape(lab):
    cache = lab.run_with_cache(TEXT)
    shape = lab.runtime.adapter.shape
    n = len(cache.tokens)
    assert set(cache.values) == set(lab.hook_points())
    for name in cache.values:
        want = shape.per_position(name)
        if want is not None:
            assert cache[name].shape == (n, *want), name
    # KV-shared layers project no keys / values; global ones reuse keys as values.
    assert "blocks.2.attn.k" not in cache.values and "blocks.1.attn.v" not in cache.values
    assert cache["blocks.1.attn.z"].shape == (n, 4, 16)
    for layer in range(3):
        np.testing.assert_array_equal(cache[f"blocks.{layer}.resid_post"],
                                      cache[f"blocks.{layer + 1}.resid_pre"])
    final = to_numpy(lab.backbone.layer_norm(cache["blocks.3.resid_post"][None]))[0]
    np.testing.assert_allclose(cache["final_norm"], final, atol=1e-5)
    router = cache["blocks.0.moe.router"]  # top-2 of 4 experts, renormalised
    assert ((router > 0).sum(-1) == 2).all()
    np.testing.assert_allclose(router.sum(-1), 1.0, atol=1e-5)


def test_ablating_an_expert_equals_keras_hub_with_its_output_scale_zeroed(lab):
    ids = lab.tokenizer.encode(TEXT, add_bos=True)
    router = lab.run_with_cache(TEXT, names=["blocks.1.moe.router"])["blocks.1.moe.router"]
    busiest = int((router > 0).sum(0).argmax())  # the expert most tokens use
    with lab.hooks(iv.ablate_experts(1, busiest)):
        ablated = lab.score(TEXT)
    bank = lab.runtime.adapter.blocks[1].moe_expert_bank
    scale = to_numpy(bank.per_expert_scale).copy()
    scale[busiest] = 0.0
    with _weight_set(bank.per_expert_scale, scale):
        expected = _keras_hub_logprobs(lab, ids)
    np.testing.assert_allclose(ablated.logprobs, expected, atol=1e-4)
    assert np.abs(np.asarray(lab.score(TEXT).logprobs) - expected).max() > 1e-4


def test_zeroing_a_per_layer_input_equals_keras_hub_with_its_projection_zeroed(lab):
    ids = lab.tokenizer.encode(TEXT, add_bos=True)
    with lab.hooks({"blocks.0.ple.in": lambda value, ctx: value * 0}):
        zeroed = lab.score(TEXT)
        cache = lab.run_with_cache(TEXT, names=["blocks.0.ple_out"])
    assert np.abs(cache["blocks.0.ple_out"]).max() == 0
    up = lab.runtime.adapter.blocks[0].per_layer_up_proj.kernel
    with _weight_set(up, np.zeros(tuple(up.shape), "float32")):
        expected = _keras_hub_logprobs(lab, ids)
    np.testing.assert_allclose(zeroed.logprobs, expected, atol=1e-4)
    assert np.abs(np.asarray(lab.score(TEXT).logprobs) - expected).max() > 1e-4


def test_a_zero_ablated_global_head_equals_numpy_on_its_output_projection(lab):
    """Layer 1 is global: 16-wide heads. The ablated attn_out is keras-hub's own output
    projection and post-attention norm applied to z with that head zeroed."""
    with lab.hooks(iv.ablate_heads([(1, 3)])):
        cache = lab.run_with_cache(TEXT, names=["blocks.1.attn.z", "blocks.1.attn_out"])
    z = cache["blocks.1.attn.z"]
    assert np.abs(z[:, 3]).max() == 0 and np.abs(z[:, 2]).max() > 0
    block = lab.runtime.adapter.blocks[1]
    expected = to_numpy(block.post_attention_norm(block.attention.output_dense(z[None])))[0]
    np.testing.assert_allclose(cache["blocks.1.attn_out"], expected, atol=1e-5)


def test_expert_ablation_holds_in_every_cached_decode_step(lab):
    from gemma_lab.inspect.activations import record_token_ids

    hooks = iv.ablate_experts(0, [0, 1]) | iv.ablate_heads([(1, 0), (3, 2)])
    with lab.hooks(hooks):
        g = lab.generate("hello", max_new_tokens=8)
        ids = list(g.prompt_token_ids) + list(g.token_ids)
        logits = record_token_ids(lab.runtime, ids, ["logits"])["logits"][:len(ids)]
    logprobs = numpy_log_softmax(logits.astype("float64"))
    rows = np.arange(len(g.prompt_token_ids) - 1, len(ids) - 1)
    np.testing.assert_array_equal(logprobs[rows].argmax(-1), g.token_ids)
    np.testing.assert_allclose(logprobs[rows, g.token_ids], g.logprobs, atol=1e-4)


def test_patching_heads_of_different_widths(lab):
    result = lab.patch("hello world", "hello wurld", target=" this", over="heads",
                       progress=False)
    assert result.scores.shape == (4, 4)
    with lab.hooks(iv.patch(lab.run_with_cache("hello world", names=["blocks.1.attn.z"]))):
        one = lab.score("hello wurld this")
    assert np.isfinite(one.logprobs).all()
    # Patching every head of the clean run at every layer would restore it; one column does
    # not, and the sweep's scores lie between corrupted and clean or beyond, finitely.
    assert np.isfinite(result.scores).all()


def test_unsupported_features_say_what_to_do(lab):
    with pytest.raises(InputError, match="ablate_experts"):
        with lab.hooks(iv.ablate_neurons(0, [1])):
            pass
    with pytest.raises(InputError, match=r"experts 0\.\.3"):
        with lab.hooks(iv.ablate_experts(0, [9])):
            pass
    with pytest.raises(NotAvailableError, match=r"lab\.attribute"):
        lab.logit_attribution(TEXT)
    with pytest.raises(InputError, match="not a hook point"):
        with lab.hooks({"blocks.2.attn.k": lambda v, c: v}):
            pass


def test_lora_fine_tuning_lowers_the_loss_and_leaves_the_base_model(lab):
    before = lab.score("the quick brown fox jumps over the lazy dog.").total_logprob
    result = lab.finetune(["the quick brown fox jumps over the lazy dog."] * 8, rank=2,
                          epochs=3, learning_rate=1e-2, progress=False)
    assert result.train_loss[-1] < result.train_loss[0]
    tuned = lab.score("the quick brown fox jumps over the lazy dog.").total_logprob
    assert tuned > before
    lab.adapters.unload()
    assert abs(lab.score("the quick brown fox jumps over the lazy dog.").total_logprob
               - before) < 1e-4
