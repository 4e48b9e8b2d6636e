"""The one forward pass: every reader goes through its hook points, the points hold the values
keras-hub's own layers produce, hooks write where they say, and the model is left as it was."""

from __future__ import annotations

import numpy as np
import pytest

from gemma_lab.testing import keras_hub_inputs

TEXT = "hello world, this is"


def _keras_hub_residuals(lab, ids):
    """Residual stream after each block and the logits, from keras-hub's own functional
    graph of the backbone and CausalLM (a sub-model reading each block's output), outside
    anything gemma_lab patches."""
    import keras

    backbone = lab.backbone
    if type(backbone).__name__ == "Gemma3nBackbone":
        return _keras_hub_gemma3n_residuals(lab, ids)
    blocks = list(backbone.transformer_layers)
    outputs = [b.output[0] if isinstance(b.output, (list, tuple)) else b.output for b in blocks]
    feed = keras_hub_inputs(backbone, [ids])
    residuals = keras.Model(backbone.input, outputs)(feed)
    logits = lab.causal_lm(feed)
    return [np.asarray(r)[0] for r in residuals], np.asarray(logits)[0]


def _keras_hub_gemma3n_residuals(lab, ids):
    """Gemma 3n's blocks sit inside its text-model layer, out of the functional graph's reach:
    call keras-hub's own layers block by block instead (KV-shared blocks get their source
    block's keys and values, as Gemma3nTextModel passes them), and the active AltUp stream
    leaving each block."""
    from keras import ops

    model = lab.backbone.language_model
    feed = keras_hub_inputs(lab.backbone, [ids])
    embeds, per_layer = lab.backbone.embedding_processor({"token_ids": feed["token_ids"]})
    # Gemma3nTextModel.call: stream 0 is the embedding, each other stream its AltUp
    # projection rescaled to the embedding's RMS.
    target = ops.sqrt(ops.mean(embeds**2, axis=-1, keepdims=True))
    streams = [embeds]
    for projection in model.altup_projections:
        projected = projection(embeds)
        streams.append(projected * target / ops.sqrt(ops.maximum(
            ops.mean(projected**2, axis=-1, keepdims=True), 1e-5)))
    streams = ops.stack(streams, axis=0)
    mask = ops.cast(feed["padding_mask"], "bool")
    adapter, caches, residuals = lab.runtime.adapter, {}, []
    for layer, block in enumerate(model.transformer_layers):
        source = adapter.kv_source(layer)
        streams, caches[layer] = block((streams, per_layer[:, :, layer], mask),
                                       cache=None if source is None else caches[source])
        residuals.append(np.asarray(streams[block.altup_active_idx])[0])
    return residuals, np.asarray(lab.causal_lm(feed))[0]


def _counting():
    rows = []

    def hook(value, ctx):
        rows.append(int(ctx.rows))
        return value
    return rows, hook


def test_decode_step_score_and_trace_all_go_through_the_hook_points(tiny_lab_any):
    lab = tiny_lab_any
    seen = {}
    for what, run in {
        "greedy": lambda: lab.generate("hello", max_new_tokens=3),
        "sampled": lambda: lab.generate("hello", max_new_tokens=2, temperature=0.9, seed=0),
        "score": lambda: lab.score(TEXT),
        "trace": lambda: lab.trace(TEXT),
        "attribute": lambda: lab.attribute("hello", target=" world"),
        "run_with_cache": lambda: lab.run_with_cache(TEXT, names=["logits"]),
    }.items():
        rows, hook = _counting()
        with lab.hooks({"blocks.1.attn_out": hook, "logits": hook}):
            run()
        seen[what] = rows
    # Prefill runs the whole padded prompt; each cached decode step one row.
    assert any(r > 1 for r in seen["greedy"]) and 1 in seen["greedy"], seen["greedy"]
    assert any(r > 1 for r in seen["sampled"]) and 1 in seen["sampled"], seen["sampled"]
    for what in ("score", "trace", "attribute", "run_with_cache"):
        assert seen[what], what


def test_recorded_points_equal_keras_hubs_own_layers(tiny_lab_any):
    lab = tiny_lab_any
    names = [f"blocks.{i}.resid_post" for i in range(lab.info().num_layers)] + ["logits"]
    cache = lab.run_with_cache(TEXT, names=names)
    residuals, logits = _keras_hub_residuals(lab, list(cache.token_ids))
    for i, expected in enumerate(residuals):
        np.testing.assert_allclose(cache[f"blocks.{i}.resid_post"], expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(cache["logits"], logits, atol=1e-4)
    assert cache["blocks.0.resid_post"].shape[0] == len(cache.tokens)


def test_z_and_neurons_are_what_the_projections_read(tiny_lab):
    """attn.z feeds the output projection and mlp.post the down projection: recompute both
    outputs from the recorded inputs with NumPy and the layers' own kernels."""
    from keras import ops

    lab = tiny_lab
    block = lab.backbone.transformer_layers[1]
    cache = lab.run_with_cache(TEXT, names=["blocks.1.attn.z", "blocks.1.mlp.post",
                                             "blocks.1.attn_out", "blocks.1.mlp_out"])
    w_o = ops.convert_to_numpy(block.attention.output_dense.kernel)
    w_down = ops.convert_to_numpy(block.ffw_linear.kernel)
    projected = np.einsum("tnh,nhd->td", cache["blocks.1.attn.z"], w_o)
    down = cache["blocks.1.mlp.post"] @ w_down
    # Gemma 3 adds post norms: apply the block's own norms to the NumPy projections.
    projected = ops.convert_to_numpy(block.post_attention_norm(projected[None]))[0]
    down = ops.convert_to_numpy(block.post_ffw_norm(down[None]))[0]
    np.testing.assert_allclose(projected, cache["blocks.1.attn_out"], atol=1e-5)
    np.testing.assert_allclose(down, cache["blocks.1.mlp_out"], atol=1e-5)


@pytest.mark.parametrize("architecture", ["gemma", "gemma2"])
def test_writing_resid_post_equals_keras_hubs_layer_intercept(architecture):
    """Steering through a hook equals keras-hub's own seam, GemmaCausalLM.score's
    layer_intercept_fn, adding the same vector after the same block."""
    from keras import ops

    from gemma_lab.testing import tiny_session

    lab = tiny_session(architecture)
    vector = np.random.default_rng(0).normal(size=lab.backbone.hidden_dim).astype("float32")
    ids = lab.tokenizer.encode(TEXT, add_bos=True)
    with lab.hooks({"blocks.0.resid_post": lambda x, ctx: x + ops.convert_to_tensor(vector)}):
        steered = lab.score(TEXT)
    logits = ops.convert_to_numpy(lab.causal_lm.score(
        ops.convert_to_tensor(np.asarray([ids], "int32")),
        layer_intercept_fn=lambda x, i: x + vector if i == 0 else x))[0]
    log_softmax = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
        -1, keepdims=True)) - logits.max(-1, keepdims=True)
    expected = log_softmax[np.arange(len(ids) - 1), ids[1:]]
    np.testing.assert_allclose(steered.logprobs, expected, atol=1e-4)
    assert np.abs(np.asarray(lab.score(TEXT).logprobs) - expected).max() > 1e-3


def test_a_hook_holds_inside_the_compiled_greedy_loop(tiny_lab):
    """Zeroing the logits of the greedy choice changes what is generated, at every step."""
    from keras import ops

    lab = tiny_lab
    base = lab.generate("hello", max_new_tokens=6)
    banned = base.token_ids[0]

    def ban(logits, ctx):
        mask = ops.arange(ops.shape(logits)[-1]) == banned
        return ops.where(mask, ops.full_like(logits, -1e9), logits)

    with lab.hooks({"logits": ban}):
        steered = lab.generate("hello", max_new_tokens=6)
    assert banned not in steered.token_ids and len(steered.token_ids) >= 1
    assert lab.generate("hello", max_new_tokens=6).token_ids == base.token_ids


def test_nothing_stays_on_the_model(tiny_lab):
    """No permanent edits (nnsight's rule): every layer's attributes are as they were, and
    keras-hub's own generate gives the same tokens before and after."""
    from keras import ops

    lab = tiny_lab
    layers = [lab.causal_lm, *lab.causal_lm._flatten_layers(include_self=False, recursive=True)]
    reference = lab.causal_lm.generate("hello world", max_length=12)
    before = [dict(vars(layer)) for layer in layers]
    with lab.hooks({"blocks.0.attn.pattern": lambda p, ctx: p,
                    "embed": lambda x, ctx: ops.multiply(x, 1.0)}):
        lab.generate("hello", max_new_tokens=2)
        lab.trace(TEXT)
    lab.generate("hello", max_new_tokens=2, temperature=0.8, seed=1)
    lab.score(TEXT)
    lab.attribute("hello", target=" world")
    lab.run_with_cache(TEXT)
    after = [dict(vars(layer)) for layer in layers]
    for layer, old, new in zip(layers, before, after, strict=True):
        assert set(old) == set(new), (layer.name, set(old) ^ set(new))
        for key in ("call", "quantized_call", "_mask_sliding_window",
                    "_use_fused_attention_op"):
            assert key not in new, (layer.name, key)
    assert lab.causal_lm.generate("hello world", max_length=12) == reference


def test_changing_top_k_takes_effect(tiny_lab):
    lab = tiny_lab
    assert len(lab.generate("hello", max_new_tokens=2).top_k[0]) == 5
    lab.top_k = 3
    try:
        assert len(lab.generate("hello", max_new_tokens=2).top_k[0]) == 3
        assert len(lab.score(TEXT).steps[0].top_k) == 3
    finally:
        lab.top_k = 5
    assert len(lab.score(TEXT).steps[0].top_k) == 5


def test_hook_points_are_validated_with_a_hint(tiny_lab):
    from gemma_lab.errors import HookError, InputError

    points = tiny_lab.hook_points()
    assert points[0] == "embed" and points[-1] == "logits"
    assert "blocks.1.attn.z" in points and "blocks.2.attn.z" not in points
    with pytest.raises(InputError, match=r"blocks\.1\.attn\.z"):
        with tiny_lab.hooks({"blocks.1.attn_z": lambda v, ctx: v}):
            pass
    with pytest.raises(HookError, match="keep the shape") as raised:
        with tiny_lab.hooks({"blocks.0.resid_post": lambda v, ctx: v[:, :1]}):
            tiny_lab.score(TEXT)
    assert "Arguments received" not in str(raised.value)  # one line, not Keras' call dump
    assert tiny_lab.score(TEXT).steps  # the session still works
